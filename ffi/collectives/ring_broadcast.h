// Ring broadcast: the root's `count` elements on every peer, pipelined down
// the ring (RingPattern::kBroadcast): each peer forwards every chunk to its
// right as soon as it has landed, so a large message costs about one
// transfer plus N-2 chunk delays, not N-1 transfers.
#pragma once
#include <cstddef>
#include <cstdint>

#include "collectives/ring_allreduce.h"

namespace pccl {

// out = the root's in (count elements). Only the root's `in` is read; in
// and out are the same buffer or do not overlap.
RingTraffic ring_broadcast(const RingPeers& ring, const RingOptions& options, const void* in,
                           void* out, size_t count, DType dtype, int root);

// The inline path (see inline_allreduce.h): out = the root's input.
void broadcast_inline(const uint8_t* root_input, void* out, size_t count, DType dtype);

}  // namespace pccl
