// Ring all-reduce with a quantized wire format (see quantization.h).
//
// Same schedule as the exact ring (ring_schedule.h), but data moves as
// self-contained encoded chunks: a reduce-scatter hop decodes the incoming
// partial sum, adds its own input and re-encodes for the next hop. The owner
// of a segment replaces its final value by decode(encode(final)), exactly what
// everyone else decodes from the all-gather, so all peers end bit-identical.
// Re-encoding a decoded chunk reproduces its bytes (a codec guarantee), so the
// all-gather can simply re-encode what it holds.
#pragma once
#include <cstddef>

#include "collectives/quantization.h"
#include "collectives/ring_allreduce.h"

namespace pccl {

RingTraffic ring_all_reduce_quantized(const RingPeers& ring, const RingOptions& options,
                                      const void* in, void* out, size_t count, DType dtype,
                                      ReduceOp op, Quantization quantization);

}  // namespace pccl
