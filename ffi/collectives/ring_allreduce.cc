#include "collectives/ring_allreduce.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "collectives/reduce_kernels.h"
#include "collectives/ring_io.h"
#include "collectives/ring_lanes.h"
#include "collectives/ring_schedule.h"
#include "collectives/ring_stripes.h"

namespace pccl {
namespace {

// Per-lane landing space for the in-place case, kept by the thread that runs
// collectives so that a steady stream of calls allocates (and faults in) it
// once, not per call.
uint8_t* lane_scratch(size_t bytes) {
  thread_local std::unique_ptr<uint8_t[]> buffer;
  thread_local size_t capacity = 0;
  if (capacity < bytes) {
    buffer.reset(new uint8_t[bytes]);
    capacity = bytes;
  }
  return buffer.get();
}

// Exact wire format: a chunk's bytes are its elements. Received bytes land
// in `out` where they belong; a reduce-scatter step then folds `in` into
// them in place, and an all-gather step has nothing left to do.
//
// In place (in == out) a reduce-scatter chunk would overwrite the input it
// must be folded with, so it lands in a per-lane scratch chunk first and is
// reduced from there into out. All-gather bytes still land in out directly:
// by then this peer's input for that segment has been used (the final value
// could not exist without it).
class ExactCodec : public LaneCodec {
 public:
  ExactCodec(int size, const uint8_t* in, uint8_t* out, DType dtype, ReduceOp op,
             size_t chunk_bytes, size_t lanes)
      : size_(size), in_(in), out_(out), dtype_(dtype), op_(op), esize_(dtype_size(dtype)),
        chunk_bytes_(chunk_bytes),
        scratch_(in == out ? lane_scratch(chunk_bytes * lanes) : nullptr) {}

  size_t wire_bytes(const Segment& c) const override { return (c.end - c.begin) * esize_; }

  const uint8_t* send_source(size_t, int step, const Segment& c) override {
    return (step == 0 ? in_ : out_) + c.begin * esize_;  // step 0 sends our own input
  }

  uint8_t* recv_target(size_t lane, int step, const Segment& c) override {
    if (scratch_ != nullptr && ring_schedule::is_reduce_step(size_, step)) {
      return scratch_ + lane * chunk_bytes_;
    }
    return out_ + c.begin * esize_;
  }

  size_t absorb(size_t lane, int step, const Segment& c, size_t done, size_t landed) override {
    if (!ring_schedule::is_reduce_step(size_, step)) return landed;  // final bytes, verbatim
    size_t wire = wire_bytes(c);
    size_t upto = foldable_prefix(done, landed, wire, esize_);
    if (upto == done) return done;
    size_t off = c.begin * esize_ + done;
    size_t elems = (upto - done) / esize_;
    const uint8_t* arrived = scratch_ != nullptr ? scratch_ + lane * chunk_bytes_ + done : out_ + off;
    reduce(dtype_, op_, out_ + off, in_ + off, arrived, elems);
    // Only the owner of a segment computes its final value (avg divides
    // once, there), so every peer ends with the owner's exact bytes.
    if (ring_schedule::is_owner_step(size_, step) && op_ == ReduceOp::kAvg) {
      divide_in_place(dtype_, out_ + off, elems, static_cast<uint32_t>(size_));
    }
    return upto;
  }

 private:
  int size_;
  const uint8_t* in_;
  uint8_t* out_;
  DType dtype_;
  ReduceOp op_;
  size_t esize_;
  size_t chunk_bytes_;  // the largest chunk: one scratch slot per lane
  uint8_t* scratch_;    // only in place
};

}  // namespace

Segment ring_segment(size_t count, int n, int index) {
  size_t base = count / static_cast<size_t>(n);
  size_t extra = count % static_cast<size_t>(n);
  size_t i = static_cast<size_t>(index);
  Segment s;
  s.begin = i * base + std::min(i, extra);
  s.end = s.begin + base + (i < extra ? 1 : 0);
  return s;
}

RingTraffic ring_all_reduce(const RingPeers& ring, const RingOptions& options, const void* in,
                            void* out, size_t count, DType dtype, ReduceOp op) {
  if (ring.size <= 1 || count == 0) {
    if (count > 0 && in != out) std::memcpy(out, in, count * dtype_size(dtype));
    return {};
  }
  ring_io::advise_huge_pages(out, count * dtype_size(dtype));
  size_t chunk = stripe_chunk_elems(count, ring.size, dtype_size(dtype), options.chunk_bytes);
  StripeLayout layout(count, ring.rank, ring.size, chunk);
  ExactCodec codec(ring.size, static_cast<const uint8_t*>(in), static_cast<uint8_t*>(out), dtype,
                   op, chunk * dtype_size(dtype), ring.left.size());
  return LaneLoop(ring, options, layout, codec).run();
}

}  // namespace pccl
