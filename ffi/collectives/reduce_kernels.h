// Element-wise reduction kernels, one per (dtype, op), used by the ring.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/dtype.h"

namespace pccl {

// dst[i] = a[i] OP b[i] for i < count. dst may alias a or b.
// kAvg reduces like kSum; the division happens once, in divide_in_place().
// Integers wrap on overflow (two's complement, no UB). float16/bfloat16 are
// computed in float32 and rounded once to nearest-even per element.
void reduce(DType dtype, ReduceOp op, void* dst, const void* a, const void* b, size_t count);

// data[i] = data[i] / divisor: floats in their own precision (16-bit via float32,
// rounded once), integers truncate toward zero.
void divide_in_place(DType dtype, void* data, size_t count, uint32_t divisor);

}  // namespace pccl
