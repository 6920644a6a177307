// The event loop that moves a ring all-reduce's chunks over the K TCP
// connections ("lanes") of each hop, for the exact and the quantized
// pipelines alike (ring_stripes.h says which chunk takes which lane).
//
// One thread serves every lane: it reads whatever has arrived on the left
// lanes straight into the chunk's destination, lets the codec fold it in,
// and writes on the right lanes whatever the schedule allows to leave. Lanes
// that would block are polled, so a dead neighbour (EOF or reset on any of
// its connections) ends the collective at once. A drop notice ends it as soon
// as no lane can move, close() at once, and a neighbour that stops moving
// bytes ends it after the stall timeout.
#pragma once
#include <poll.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "collectives/ring_allreduce.h"
#include "collectives/ring_stripes.h"
#include "common/deadline.h"

namespace pccl {

// What the pipeline does with the bytes of a chunk (a chunk's "wire form").
class LaneCodec {
 public:
  virtual ~LaneCodec() = default;
  virtual size_t wire_bytes(const Segment& chunk) const = 0;
  // The wire form of chunk (step, c), once it may leave. Valid until the
  // lane's next call; only the prefix the schedule allows is read from it.
  virtual const uint8_t* send_source(size_t lane, int step, const Segment& chunk) = 0;
  // Where the wire form of chunk (step, c) lands (valid for the whole chunk).
  virtual uint8_t* recv_target(size_t lane, int step, const Segment& chunk) = 0;
  // `landed` bytes of the chunk have arrived, `done` of them were absorbed
  // already. Returns how many are absorbed now (reduced or final): the next
  // step may send that prefix. Must return wire_bytes once all have landed.
  virtual size_t absorb(size_t lane, int step, const Segment& chunk, size_t done,
                        size_t landed) = 0;
};

// For codecs that fold exact elements as they land (all-reduce,
// reduce-scatter): of the `landed` bytes of a chunk of `wire` bytes, the
// prefix worth folding now, whole elements only. It waits for pieces of at
// least 64 KiB (or the chunk's end): big enough to amortise the call, small
// enough to stay in cache right after the kernel copied them in. Returns
// `done` when there is nothing worth folding yet.
inline size_t foldable_prefix(size_t done, size_t landed, size_t wire, size_t esize) {
  constexpr size_t kReduceGrain = 64 << 10;
  size_t upto = landed == wire ? wire : landed - landed % esize;
  return upto < wire && upto - done < kReduceGrain ? done : upto;
}

class LaneLoop {
 public:
  LaneLoop(const RingPeers& ring, const RingOptions& options, const StripeLayout& layout,
           LaneCodec& codec);
  ~LaneLoop();
  LaneLoop(const LaneLoop&) = delete;
  LaneLoop& operator=(const LaneLoop&) = delete;
  RingTraffic run();

 private:
  struct SendLane {
    int fd = -1;
    LanePosition at;
    const uint8_t* data = nullptr;  // wire form of the chunk in flight
    size_t sent = 0;
    bool ready = true;  // worth a syscall: not known to be full
  };
  struct RecvLane {
    int fd = -1;
    LanePosition at;
    uint8_t* data = nullptr;
    size_t landed = 0;
    size_t absorbed = 0;
    bool ready = true;  // worth a syscall: not known to be empty
    size_t lowat = 1;   // the socket's SO_RCVLOWAT as last set
  };

  bool finished() const;
  bool sends_finished() const;
  bool serve_recv(size_t i);
  bool serve_send(size_t i);
  // Bytes of send lane i's chunk that may leave now (0: none yet).
  size_t sendable(const SendLane& lane) const;
  // Absorbed bytes of chunk (step, c) on the receive side (SIZE_MAX: all).
  size_t absorbed(int step, size_t c) const;
  size_t wire_bytes(int segment, size_t c) const;
  // Lets the lane's socket wake us only once a worthwhile piece of its chunk
  // is there (see kRecvLowat in ring_lanes.cc).
  void set_wake_threshold(RecvLane& lane);
  // Sleeps on the lanes that would block (not at all if `moved`), marks the
  // ready ones. Throws Cancelled on interrupt, PeerFailure on stall.
  void poll_lanes(bool moved, const Deadline& stall);
  // The interrupt fired while no lane moved: fail, unless bytes still come.
  void on_interrupt(bool moved);

  RingOptions opt_;
  const StripeLayout& layout_;
  LaneCodec& codec_;
  std::vector<SendLane> send_;
  std::vector<RecvLane> recv_;
  std::vector<pollfd> fds_;  // reused: no allocation per wait
  std::vector<int> owners_;  // fds_[i] belongs to lane owners_[i] (send: -1 - index)
  RingTraffic traffic_;
  // Set when the interrupt (a member left) was first heard. A neighbour that
  // finished and exited may have its last bytes still on the way: those
  // arrive within moments, a frozen neighbour's never do.
  Deadline interrupted_grace_ = Deadline::never();
  bool interrupted_ = false;
};

}  // namespace pccl
