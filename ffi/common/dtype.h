// Element types and reduction operators understood by the engine.
// The numeric values travel on the wire (collective headers): never renumber.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pccl {

enum class DType : uint8_t {
  kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3,
  kInt8 = 4, kInt16 = 5, kInt32 = 6, kInt64 = 7,
  kUInt8 = 8, kUInt16 = 9, kUInt32 = 10, kUInt64 = 11,
};
constexpr int kNumDTypes = 12;

enum class ReduceOp : uint8_t { kSum = 0, kAvg = 1, kMin = 2, kMax = 3, kProd = 4 };
constexpr int kNumReduceOps = 5;

bool dtype_valid(uint8_t raw);
bool reduce_op_valid(uint8_t raw);
size_t dtype_size(DType t);
bool dtype_is_float(DType t);
const char* dtype_name(DType t);       // numpy spelling: "float32", "bfloat16", ...
const char* reduce_op_name(ReduceOp op);  // "sum", "avg", ...

}  // namespace pccl
