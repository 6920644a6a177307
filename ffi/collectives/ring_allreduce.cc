#include "collectives/ring_allreduce.h"


#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "collectives/reduce_kernels.h"
#include "collectives/ring_io.h"
#include "collectives/ring_schedule.h"
#include "common/deadline.h"
#include "common/errors.h"

namespace pccl {
namespace {

using ring_schedule::recv_segment;
using ring_schedule::send_segment;

class RingPipeline {
 public:
  RingPipeline(const RingPeers& ring, const RingOptions& opt, const void* in, void* out,
               size_t count, DType dtype, ReduceOp op)
      : ring_(ring), opt_(opt), in_(static_cast<const uint8_t*>(in)),
        out_(static_cast<uint8_t*>(out)), count_(count), dtype_(dtype), op_(op),
        esize_(dtype_size(dtype)), steps_(2 * (ring.size - 1)) {
    size_t chunk_elems = std::max<size_t>(1, opt.chunk_bytes / esize_);
    staging_.resize(chunk_elems * esize_);
  }

  RingTraffic run() {
    Deadline stall = Deadline::after(opt_.stall_timeout_s);
    skip_empty_items();
    while (send_item_ < steps_ || recv_item_ < steps_) {
      bool want_send = false, want_recv = false;
      bool moved = pump_send(&want_send);
      moved |= pump_recv(&want_recv);
      skip_empty_items();
      if (moved) {
        stall = Deadline::after(opt_.stall_timeout_s);
        continue;
      }
      if (send_item_ >= steps_ && recv_item_ >= steps_) break;
      wait_for_io(want_send, want_recv, stall);
    }
    return traffic_;
  }

 private:
  size_t item_bytes(int segment) const {
    Segment s = ring_segment(count_, ring_.size, segment);
    return (s.end - s.begin) * esize_;
  }
  size_t item_offset(int segment) const {
    return ring_segment(count_, ring_.size, segment).begin * esize_;
  }

  // Bytes of send item k that may leave now.
  size_t send_available() const {
    int seg = send_segment(ring_.rank, ring_.size, send_item_);
    if (send_item_ == 0) return item_bytes(seg);
    if (send_item_ - 1 < recv_item_) return item_bytes(seg);
    return recv_processed_;  // send item k is recv item k-1, still in progress
  }

  bool pump_send(bool* want) {
    if (send_item_ >= steps_) return false;
    size_t avail = send_available();
    if (send_off_ >= avail) return false;
    int seg = send_segment(ring_.rank, ring_.size, send_item_);
    const uint8_t* base = (send_item_ == 0 ? in_ : out_) + item_offset(seg);
    size_t k = ring_io::try_send(ring_.right->fd(), base + send_off_, avail - send_off_, want);
    send_off_ += k;
    traffic_.bytes_sent += k;
    if (send_off_ == item_bytes(seg)) { ++send_item_; send_off_ = 0; }
    return k > 0;
  }

  bool pump_recv(bool* want) {
    if (recv_item_ >= steps_) return false;
    int seg = recv_segment(ring_.rank, ring_.size, recv_item_);
    size_t total = item_bytes(seg);
    bool reducing = recv_item_ < ring_.size - 1;
    uint8_t* dst;
    size_t room;
    if (reducing) {
      // Reduce-scatter: land in staging, then fold into out chunk by chunk.
      size_t chunk = std::min(staging_.size(), total - recv_processed_);
      dst = staging_.data() + staged_;
      room = chunk - staged_;
    } else {
      // All-gather: final bytes go straight to their place in out.
      dst = out_ + item_offset(seg) + recv_processed_;
      room = total - recv_processed_;
    }
    size_t k = ring_io::try_recv(ring_.left->fd(), dst, room, want);
    if (k == 0) return false;
    traffic_.bytes_received += k;
    if (!reducing) {
      recv_processed_ += k;
    } else {
      staged_ += k;
      size_t chunk = std::min(staging_.size(), total - recv_processed_);
      if (staged_ == chunk) fold_staged_chunk(seg, chunk);
    }
    if (recv_processed_ == total) { ++recv_item_; recv_processed_ = 0; }
    return true;
  }

  void fold_staged_chunk(int seg, size_t chunk) {
    size_t off = item_offset(seg) + recv_processed_;
    size_t elems = chunk / esize_;
    reduce(dtype_, op_, out_ + off, in_ + off, staging_.data(), elems);
    bool owner_final = recv_item_ == ring_.size - 2;
    if (owner_final && op_ == ReduceOp::kAvg) {
      divide_in_place(dtype_, out_ + off, elems, static_cast<uint32_t>(ring_.size));
    }
    recv_processed_ += chunk;
    staged_ = 0;
  }

  // Items of zero bytes (more peers than elements) complete immediately.
  void skip_empty_items() {
    while (send_item_ < steps_ && send_off_ == 0 &&
           item_bytes(send_segment(ring_.rank, ring_.size, send_item_)) == 0) {
      ++send_item_;
    }
    while (recv_item_ < steps_ && recv_processed_ == 0 && staged_ == 0 &&
           item_bytes(recv_segment(ring_.rank, ring_.size, recv_item_)) == 0) {
      ++recv_item_;
    }
  }

  void wait_for_io(bool want_send, bool want_recv, const Deadline& stall) {
    ring_io::wait(ring_.right->fd(), want_send, ring_.left->fd(), want_recv, opt_.cancel, stall,
                  opt_.stall_timeout_s);
  }

  RingPeers ring_;
  RingOptions opt_;
  const uint8_t* in_;
  uint8_t* out_;
  size_t count_;
  DType dtype_;
  ReduceOp op_;
  size_t esize_;
  int steps_;
  std::vector<uint8_t> staging_;
  int send_item_ = 0;
  size_t send_off_ = 0;
  int recv_item_ = 0;
  size_t recv_processed_ = 0;  // bytes of the current recv item done (reduced or landed)
  size_t staged_ = 0;          // bytes of the current chunk waiting in staging
  RingTraffic traffic_;
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
  RingPipeline pipeline(ring, options, in, out, count, dtype, op);
  return pipeline.run();
}

}  // namespace pccl
