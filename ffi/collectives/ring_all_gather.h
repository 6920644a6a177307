// Ring all-gather: every peer's `count` elements, in rank order, on every peer.
//
// Rank r's input is segment r of the output. Over N-1 steps a peer forwards
// to its right the segment it received from its left at the step before
// (its own input first), striped over the hop's lanes like the all-reduce
// (ring_schedule.h, RingPattern::kAllGather). Bytes travel verbatim, so
// every peer ends with identical bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "collectives/ring_allreduce.h"

namespace pccl {

// out (count * ring.size elements) = the inputs of ranks 0..N-1. `in` may be
// out's own segment (rank * count), else must not overlap `out`.
RingTraffic ring_all_gather(const RingPeers& ring, const RingOptions& options, const void* in,
                            void* out, size_t count, DType dtype);

// The inline path (small inputs arrived with the headers, see
// inline_allreduce.h): out = inputs[0], ..., inputs[N-1]. An input may be
// out's own segment already.
void all_gather_inline(const std::vector<const uint8_t*>& inputs, void* out, size_t count,
                       DType dtype);

}  // namespace pccl
