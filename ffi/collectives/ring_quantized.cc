#include "collectives/ring_quantized.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "collectives/reduce_kernels.h"
#include "collectives/ring_io.h"
#include "collectives/ring_schedule.h"
#include "common/deadline.h"

namespace pccl {
namespace {

using ring_schedule::is_owner_step;
using ring_schedule::is_reduce_step;
using ring_schedule::recv_segment;
using ring_schedule::send_segment;

constexpr size_t kChunkElements = 64 * 1024;

class QuantizedPipeline {
 public:
  QuantizedPipeline(const RingPeers& ring, const RingOptions& opt, const void* in, void* out,
                    size_t count, DType dtype, ReduceOp op, Quantization q)
      : ring_(ring), opt_(opt), in_(static_cast<const uint8_t*>(in)),
        out_(static_cast<uint8_t*>(out)), count_(count), dtype_(dtype), op_(op), q_(q),
        esize_(dtype_size(dtype)), steps_(2 * (ring.size - 1)) {
    size_t wire = encoded_bytes(q, dtype, kChunkElements);
    send_buf_.resize(wire);
    recv_buf_.resize(wire);
    scratch_.resize(wire);
    decoded_.resize(kChunkElements * esize_);
  }

  RingTraffic run() {
    Deadline stall = Deadline::after(opt_.stall_timeout_s);
    while (send_item_ < steps_ || recv_item_ < steps_) {
      bool want_send = false, want_recv = false;
      bool moved = pump_send(&want_send);
      moved |= pump_recv(&want_recv);
      if (moved) {
        stall = Deadline::after(opt_.stall_timeout_s);
        continue;
      }
      if (send_item_ >= steps_ && recv_item_ >= steps_) break;
      ring_io::wait(ring_.right->fd(), want_send, ring_.left->fd(), want_recv, opt_.cancel,
                    stall, opt_.stall_timeout_s);
    }
    return traffic_;
  }

 private:
  struct Range {
    size_t begin = 0;  // element offset in the buffer
    size_t count = 0;
  };

  size_t chunks_of(int segment) const {
    Segment s = ring_segment(count_, ring_.size, segment);
    return (s.end - s.begin + kChunkElements - 1) / kChunkElements;
  }
  Range chunk(int segment, size_t index) const {
    Segment s = ring_segment(count_, ring_.size, segment);
    size_t begin = s.begin + index * kChunkElements;
    return {begin, std::min(s.end, begin + kChunkElements) - begin};
  }

  // Send chunk c of step k once its source exists: step 0 sends our input;
  // step k+1 sends what step k received and processed.
  bool chunk_ready(int step, size_t c) const {
    if (step == 0) return true;
    return recv_item_ > step - 1 || (recv_item_ == step - 1 && recv_chunk_ > c);
  }

  bool pump_send(bool* want) {
    while (send_item_ < steps_ && chunks_of(send_segment(ring_.rank, ring_.size, send_item_)) == 0) {
      ++send_item_;
    }
    if (send_item_ >= steps_) return false;
    int seg = send_segment(ring_.rank, ring_.size, send_item_);
    if (send_len_ == 0) {
      if (!chunk_ready(send_item_, send_chunk_)) return false;
      Range r = chunk(seg, send_chunk_);
      const uint8_t* src = (send_item_ == 0 ? in_ : out_) + r.begin * esize_;
      encode_chunk(q_, dtype_, src, r.count, send_buf_.data());
      send_len_ = encoded_bytes(q_, dtype_, r.count);
    }
    size_t k = ring_io::try_send(ring_.right->fd(), send_buf_.data() + send_off_,
                                 send_len_ - send_off_, want);
    send_off_ += k;
    traffic_.bytes_sent += k;
    if (send_off_ == send_len_) {
      send_off_ = send_len_ = 0;
      if (++send_chunk_ == chunks_of(seg)) { ++send_item_; send_chunk_ = 0; }
    }
    return k > 0;
  }

  bool pump_recv(bool* want) {
    while (recv_item_ < steps_ && chunks_of(recv_segment(ring_.rank, ring_.size, recv_item_)) == 0) {
      ++recv_item_;
    }
    if (recv_item_ >= steps_) return false;
    int seg = recv_segment(ring_.rank, ring_.size, recv_item_);
    Range r = chunk(seg, recv_chunk_);
    size_t expected = encoded_bytes(q_, dtype_, r.count);
    size_t k = ring_io::try_recv(ring_.left->fd(), recv_buf_.data() + recv_off_,
                                 expected - recv_off_, want);
    if (k == 0) return false;
    traffic_.bytes_received += k;
    recv_off_ += k;
    if (recv_off_ == expected) {
      process(r);
      recv_off_ = 0;
      if (++recv_chunk_ == chunks_of(seg)) { ++recv_item_; recv_chunk_ = 0; }
    }
    return true;
  }

  void process(const Range& r) {
    uint8_t* dst = out_ + r.begin * esize_;
    if (!is_reduce_step(ring_.size, recv_item_)) {
      decode_chunk(q_, dtype_, recv_buf_.data(), r.count, dst);  // final bytes, as sent
      return;
    }
    decode_chunk(q_, dtype_, recv_buf_.data(), r.count, decoded_.data());
    reduce(dtype_, op_, dst, in_ + r.begin * esize_, decoded_.data(), r.count);
    if (!is_owner_step(ring_.size, recv_item_)) return;
    if (op_ == ReduceOp::kAvg) {
      divide_in_place(dtype_, dst, r.count, static_cast<uint32_t>(ring_.size));
    }
    // Keep exactly what the others will decode from our all-gather.
    encode_chunk(q_, dtype_, dst, r.count, scratch_.data());
    decode_chunk(q_, dtype_, scratch_.data(), r.count, dst);
  }

  RingPeers ring_;
  RingOptions opt_;
  const uint8_t* in_;
  uint8_t* out_;
  size_t count_;
  DType dtype_;
  ReduceOp op_;
  Quantization q_;
  size_t esize_;
  int steps_;
  std::vector<uint8_t> send_buf_, recv_buf_, scratch_, decoded_;
  int send_item_ = 0;
  size_t send_chunk_ = 0, send_off_ = 0, send_len_ = 0;
  int recv_item_ = 0;
  size_t recv_chunk_ = 0, recv_off_ = 0;
  RingTraffic traffic_;
};

}  // namespace

RingTraffic ring_all_reduce_quantized(const RingPeers& ring, const RingOptions& options,
                                      const void* in, void* out, size_t count, DType dtype,
                                      ReduceOp op, Quantization quantization) {
  if (ring.size <= 1 || count == 0) {
    // Alone, nothing crosses a wire: the exact input is the result.
    if (count > 0) std::memcpy(out, in, count * dtype_size(dtype));
    return {};
  }
  ring_io::advise_huge_pages(out, count * dtype_size(dtype));
  QuantizedPipeline pipeline(ring, options, in, out, count, dtype, op, quantization);
  return pipeline.run();
}

}  // namespace pccl
