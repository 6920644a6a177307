#include "collectives/ring_quantized.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "collectives/reduce_kernels.h"
#include "collectives/ring_io.h"
#include "collectives/ring_lanes.h"
#include "collectives/ring_schedule.h"
#include "collectives/ring_stripes.h"

namespace pccl {
namespace {

using ring_schedule::is_owner_step;
using ring_schedule::is_reduce_step;

// Encoded chunks are self-contained, so this is also the striping unit.
constexpr size_t kChunkElements = 64 * 1024;

// Quantized wire format: a chunk travels encoded. Each lane has its own
// encode and receive buffers (allocated once per collective); a chunk is
// processed when it has landed whole.
class QuantizedCodec : public LaneCodec {
 public:
  QuantizedCodec(const RingPeers& ring, const uint8_t* in, uint8_t* out, DType dtype,
                 ReduceOp op, Quantization q)
      : size_(ring.size), in_(in), out_(out), dtype_(dtype), op_(op), q_(q),
        esize_(dtype_size(dtype)), wire_max_(encoded_bytes(q, dtype, kChunkElements)),
        send_bufs_(ring.right.size() * wire_max_), recv_bufs_(ring.left.size() * wire_max_),
        scratch_(wire_max_), decoded_(kChunkElements * esize_) {}

  size_t wire_bytes(const Segment& c) const override {
    return encoded_bytes(q_, dtype_, c.end - c.begin);
  }

  const uint8_t* send_source(size_t lane, int step, const Segment& c) override {
    // Step 0 sends our input, later steps what the previous step left in out.
    const uint8_t* src = (step == 0 ? in_ : out_) + c.begin * esize_;
    uint8_t* wire = send_bufs_.data() + lane * wire_max_;
    encode_chunk(q_, dtype_, src, c.end - c.begin, wire);
    return wire;
  }

  uint8_t* recv_target(size_t lane, int, const Segment&) override {
    return recv_bufs_.data() + lane * wire_max_;
  }

  size_t absorb(size_t lane, int step, const Segment& c, size_t, size_t landed) override {
    if (landed < wire_bytes(c)) return 0;
    process(recv_bufs_.data() + lane * wire_max_, step, c);
    return landed;
  }

 private:
  void process(const uint8_t* wire, int step, const Segment& c) {
    size_t n = c.end - c.begin;
    uint8_t* dst = out_ + c.begin * esize_;
    if (!is_reduce_step(size_, step)) {
      decode_chunk(q_, dtype_, wire, n, dst);  // final bytes, as the owner sent them
      return;
    }
    decode_chunk(q_, dtype_, wire, n, decoded_.data());
    reduce(dtype_, op_, dst, in_ + c.begin * esize_, decoded_.data(), n);
    if (!is_owner_step(size_, step)) return;
    if (op_ == ReduceOp::kAvg) divide_in_place(dtype_, dst, n, static_cast<uint32_t>(size_));
    // Keep exactly what the others will decode from our all-gather.
    encode_chunk(q_, dtype_, dst, n, scratch_.data());
    decode_chunk(q_, dtype_, scratch_.data(), n, dst);
  }

  int size_;
  const uint8_t* in_;
  uint8_t* out_;
  DType dtype_;
  ReduceOp op_;
  Quantization q_;
  size_t esize_;
  size_t wire_max_;
  std::vector<uint8_t> send_bufs_, recv_bufs_, scratch_, decoded_;
};

}  // namespace

RingTraffic ring_all_reduce_quantized(const RingPeers& ring, const RingOptions& options,
                                      const void* in, void* out, size_t count, DType dtype,
                                      ReduceOp op, Quantization quantization) {
  if (ring.size <= 1 || count == 0) {
    // Alone, nothing crosses a wire: the exact input is the result.
    if (count > 0 && in != out) std::memcpy(out, in, count * dtype_size(dtype));
    return {};
  }
  ring_io::advise_huge_pages(out, count * dtype_size(dtype));
  StripeLayout layout(count, ring.rank, ring.size, kChunkElements);
  QuantizedCodec codec(ring, static_cast<const uint8_t*>(in), static_cast<uint8_t*>(out), dtype,
                       op, quantization);
  return LaneLoop(ring, options, layout, codec).run();
}

}  // namespace pccl
