#include "collectives/ring_all_gather.h"

#include <cstring>

#include "collectives/ring_io.h"
#include "collectives/ring_lanes.h"
#include "collectives/ring_schedule.h"
#include "collectives/ring_stripes.h"
#include "collectives/verbatim_codec.h"

namespace pccl {

RingTraffic ring_all_gather(const RingPeers& ring, const RingOptions& options, const void* in,
                            void* out, size_t count, DType dtype) {
  const size_t esize = dtype_size(dtype);
  auto* own = static_cast<uint8_t*>(out) + static_cast<size_t>(ring.rank) * count * esize;
  if (count > 0 && in != own) std::memcpy(own, in, count * esize);
  if (ring.size <= 1 || count == 0) return {};
  size_t total = count * static_cast<size_t>(ring.size);
  ring_io::advise_huge_pages(out, total * esize);
  RingPlan plan{RingPattern::kAllGather, ring.rank, ring.size, 0};
  size_t chunk = stripe_chunk_elems(total, plan.segments(), esize, options.chunk_bytes);
  StripeLayout layout(total, plan, chunk);
  // Step 0 sends our segment from our own copy in `out` (just made): the
  // caller's input may be gone the moment this returns, ours not before.
  VerbatimCodec codec(own, static_cast<size_t>(ring.rank) * count, static_cast<uint8_t*>(out),
                      esize);
  return LaneLoop(ring, options, layout, codec).run();
}

void all_gather_inline(const std::vector<const uint8_t*>& inputs, void* out, size_t count,
                       DType dtype) {
  const size_t bytes = count * dtype_size(dtype);
  auto* dst = static_cast<uint8_t*>(out);
  for (size_t r = 0; r < inputs.size(); ++r) {
    if (bytes > 0 && inputs[r] != dst + r * bytes) std::memcpy(dst + r * bytes, inputs[r], bytes);
  }
}

}  // namespace pccl
