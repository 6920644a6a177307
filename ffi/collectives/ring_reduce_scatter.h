// Ring reduce-scatter: rank r gets slice r (count / N elements) of the
// reduction of every peer's `count` elements.
//
// The all-reduce's first half (RingPattern::kReduceScatter, shifted so that
// rank r ends owning segment r): each step folds the segment that arrived
// into ours and forwards the partial result; the last step's fold is the
// final value and lands in `out` (avg divides there). Partial results live
// in a working buffer of `count` elements, so the input is only read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "collectives/ring_allreduce.h"

namespace pccl {

// out (count / ring.size elements) = slice `rank` of reduce(in over peers).
// count must be a multiple of ring.size; in and out must not overlap.
RingTraffic ring_reduce_scatter(const RingPeers& ring, const RingOptions& options,
                                const void* in, void* out, size_t count, DType dtype,
                                ReduceOp op);

// The inline path (see inline_allreduce.h): slice `rank` of the inputs,
// folded in rank order.
void reduce_scatter_inline(const std::vector<const uint8_t*>& inputs, int rank, void* out,
                           size_t count, DType dtype, ReduceOp op);

}  // namespace pccl
