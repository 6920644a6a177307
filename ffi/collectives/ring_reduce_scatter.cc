#include "collectives/ring_reduce_scatter.h"

#include <cstring>
#include <memory>

#include "collectives/inline_allreduce.h"
#include "collectives/reduce_kernels.h"
#include "collectives/ring_io.h"
#include "collectives/ring_lanes.h"
#include "collectives/ring_schedule.h"
#include "collectives/ring_stripes.h"
#include "common/errors.h"

namespace pccl {
namespace {

// Received partial results land in the working buffer where their segment
// lives and are folded with our input there; step k+1 forwards them from
// there. The last step's fold (our own segment) goes to `out` instead.
class ReduceScatterCodec : public LaneCodec {
 public:
  ReduceScatterCodec(const RingPlan& plan, const uint8_t* in, uint8_t* work, uint8_t* out,
                     size_t own_begin, DType dtype, ReduceOp op)
      : plan_(plan), in_(in), work_(work), out_(out), own_begin_(own_begin), dtype_(dtype),
        op_(op), esize_(dtype_size(dtype)) {}

  size_t wire_bytes(const Segment& c) const override { return (c.end - c.begin) * esize_; }

  const uint8_t* send_source(size_t, int step, const Segment& c) override {
    return (step == 0 ? in_ : work_) + c.begin * esize_;
  }

  uint8_t* recv_target(size_t, int, const Segment& c) override {
    return work_ + c.begin * esize_;
  }

  size_t absorb(size_t, int step, const Segment& c, size_t done, size_t landed) override {
    size_t wire = wire_bytes(c);
    size_t upto = foldable_prefix(done, landed, wire, esize_);
    if (upto == done) return done;
    size_t off = c.begin * esize_ + done;
    size_t elems = (upto - done) / esize_;
    uint8_t* arrived = work_ + off;
    if (!plan_.owns_after(step)) {
      reduce(dtype_, op_, arrived, in_ + off, arrived, elems);
      return upto;
    }
    uint8_t* dst = out_ + (off - own_begin_ * esize_);
    reduce(dtype_, op_, dst, in_ + off, arrived, elems);
    if (op_ == ReduceOp::kAvg) divide_in_place(dtype_, dst, elems, static_cast<uint32_t>(plan_.size));
    return upto;
  }

 private:
  RingPlan plan_;
  const uint8_t* in_;
  uint8_t* work_;
  uint8_t* out_;
  size_t own_begin_;  // first element of our segment in the whole buffer
  DType dtype_;
  ReduceOp op_;
  size_t esize_;
};

}  // namespace

RingTraffic ring_reduce_scatter(const RingPeers& ring, const RingOptions& options,
                                const void* in, void* out, size_t count, DType dtype,
                                ReduceOp op) {
  const size_t n = static_cast<size_t>(ring.size);
  if (n == 0 || count % n != 0) {
    throw PcclError("reduce_scatter: " + std::to_string(count) +
                    " elements do not split evenly over " + std::to_string(n) + " peers");
  }
  const size_t esize = dtype_size(dtype);
  const size_t slice = count / n;
  const auto* src = static_cast<const uint8_t*>(in);
  auto* dst = static_cast<uint8_t*>(out);
  if (dst < src + count * esize && src < dst + slice * esize && slice > 0) {
    throw PcclError("reduce_scatter: the output overlaps the input");
  }
  if (n == 1 || count == 0) {  // alone: our input is the whole reduction
    if (count > 0) std::memcpy(dst, src, count * esize);
    if (count > 0 && op == ReduceOp::kAvg) divide_in_place(dtype, dst, count, 1);
    return {};
  }
  RingPlan plan{RingPattern::kReduceScatter, ring.rank, ring.size, 0};
  size_t chunk = stripe_chunk_elems(count, plan.segments(), esize, options.chunk_bytes);
  StripeLayout layout(count, plan, chunk);
  // Partial results of the segments passing through. Per call, not kept per
  // thread as the all-reduce's chunk scratch is: it is as large as the input.
  std::unique_ptr<uint8_t[]> work(new uint8_t[count * esize]);
  ring_io::advise_huge_pages(work.get(), count * esize);  // fewer first-touch faults
  ReduceScatterCodec codec(plan, src, work.get(), dst, static_cast<size_t>(ring.rank) * slice, dtype,
                           op);
  return LaneLoop(ring, options, layout, codec).run();
}

void reduce_scatter_inline(const std::vector<const uint8_t*>& inputs, int rank, void* out,
                           size_t count, DType dtype, ReduceOp op) {
  const size_t slice = count / inputs.size();
  const size_t offset = static_cast<size_t>(rank) * slice * dtype_size(dtype);
  std::vector<const uint8_t*> slices(inputs.size());
  for (size_t r = 0; r < inputs.size(); ++r) slices[r] = inputs[r] + offset;
  reduce_in_rank_order(slices, out, slice, dtype, op);
}

}  // namespace pccl
