#include "collectives/ring_broadcast.h"

#include <cstring>

#include "collectives/ring_io.h"
#include "collectives/ring_lanes.h"
#include "collectives/ring_schedule.h"
#include "collectives/ring_stripes.h"
#include "collectives/verbatim_codec.h"

namespace pccl {

RingTraffic ring_broadcast(const RingPeers& ring, const RingOptions& options, const void* in,
                           void* out, size_t count, DType dtype, int root) {
  const size_t esize = dtype_size(dtype);
  const bool is_root = ring.rank == root;
  if (is_root && count > 0 && in != out) std::memcpy(out, in, count * esize);
  if (ring.size <= 1 || count == 0) return {};
  if (!is_root) ring_io::advise_huge_pages(out, count * esize);
  RingPlan plan{RingPattern::kBroadcast, ring.rank, ring.size, root};
  size_t chunk = stripe_chunk_elems(count, plan.segments(), esize, options.chunk_bytes);
  StripeLayout layout(count, plan, chunk);
  // Only the root sends at step 0, from its copy in `out`.
  VerbatimCodec codec(static_cast<uint8_t*>(out), 0, static_cast<uint8_t*>(out), esize);
  return LaneLoop(ring, options, layout, codec).run();
}

void broadcast_inline(const uint8_t* root_input, void* out, size_t count, DType dtype) {
  if (count > 0 && root_input != out) std::memcpy(out, root_input, count * dtype_size(dtype));
}

}  // namespace pccl
