// Small all-reduces travel inside the header exchange.
//
// Before any collective, peers all-gather their headers around the ring to
// agree on what they are about to do (N-1 hops). A ring all-reduce then
// needs 2(N-1) more hops, each a wake-up of another process: for a few KiB
// that is nearly all of the cost. When the input is small, every peer
// attaches it to its header instead, so the agreement round already
// delivers every input everywhere, and each peer reduces them itself.
//
// Bit-identical results: every peer folds the same inputs in the same
// order (rank 0, 1, ..., N-1) with the same kernels, and avg divides once,
// at the end, by N.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "collectives/quantization.h"
#include "common/dtype.h"

namespace pccl {

// Whether a collective of `bytes` per peer over `peers` takes the inline
// path. Every peer decides alike from the agreed header fields; the exact
// ring is kept for quantized wire formats and for large rings, where each
// peer receiving N-1 whole inputs would cost more than it saves.
bool use_inline_all_reduce(size_t bytes, int peers, Quantization quantization);

// out = inputs[0] op inputs[1] op ... (in rank order); count elements each.
void reduce_in_rank_order(const std::vector<const uint8_t*>& inputs, void* out, size_t count,
                          DType dtype, ReduceOp op);

}  // namespace pccl
