// How one ring hop's data is spread over its K TCP connections ("lanes").
//
// Every item (one segment at one step, see ring_schedule.h's RingPlan) is cut into
// chunks of a fixed number of elements; chunk c of every item travels on lane
// c % K. Each lane therefore carries a fixed subsequence in (step, chunk)
// order, which both ends derive from the collective's shape alone: no chunk
// ids on the wire, nothing to validate, and a lane can be read straight into
// its destination. Chunk c of step k+1 is the same segment bytes as chunk c
// of step k, reduced, so a lane's sends wait only on the same chunk of the
// previous step, never on another lane's tail. One slow TCP connection thus
// delays its own stripe only until the others need its chunks.
#pragma once
#include <algorithm>
#include <cstddef>

#include "collectives/ring_allreduce.h"
#include "collectives/ring_schedule.h"

namespace pccl {

// Chunk size for a collective: about 32 chunks per segment (the most bulk lanes a
// hop can have, kMaxRingConnections), so every lane has work even for mid-sized
// messages, but at least 256 KiB and at most `max_chunk_bytes`. Below that a
// message fits one warm TCP window anyway, and spreading it over more
// sockets only costs wake-ups.
// It depends only on the collective's shape: both ends of every hop cut
// alike whatever their lane counts, and a chunk received at step k is the
// chunk sent at step k+1.
inline size_t stripe_chunk_elems(size_t count, int segments, size_t esize,
                                 size_t max_chunk_bytes) {
  constexpr size_t kMinChunkBytes = 256 << 10;
  constexpr size_t kChunksPerSegment = 32;
  size_t n = static_cast<size_t>(segments);
  size_t segment_bytes = (count + n - 1) / n * esize;
  size_t bytes = std::clamp(segment_bytes / kChunksPerSegment, kMinChunkBytes,
                            std::max(kMinChunkBytes, max_chunk_bytes));
  return std::max<size_t>(1, bytes / esize);
}

// Where a lane is in its subsequence: chunk `chunk` of step `step`.
struct LanePosition {
  int step = 0;
  size_t chunk = 0;
  bool before(int s, size_t c) const { return step < s || (step == s && chunk < c); }
};

class StripeLayout {
 public:
  StripeLayout(size_t count, const RingPlan& plan, size_t chunk_elems)
      : count_(count), plan_(plan), chunk_elems_(std::max<size_t>(1, chunk_elems)) {}
  // An all-reduce's layout.
  StripeLayout(size_t count, int rank, int size, size_t chunk_elems)
      : StripeLayout(count, RingPlan{RingPattern::kAllReduce, rank, size, 0}, chunk_elems) {}

  int steps() const { return plan_.steps(); }
  int send_segment(int step) const { return plan_.send_segment(step); }
  int recv_segment(int step) const { return plan_.recv_segment(step); }

  // Segment -1 (nothing at that step) has no chunks.
  size_t chunks_of(int segment) const {
    if (segment < 0) return 0;
    Segment s = ring_segment(count_, plan_.segments(), segment);
    return (s.end - s.begin + chunk_elems_ - 1) / chunk_elems_;
  }
  // The elements [begin, end) of the whole buffer that chunk c of a segment covers.
  Segment chunk(int segment, size_t c) const {
    Segment s = ring_segment(count_, plan_.segments(), segment);
    size_t begin = s.begin + c * chunk_elems_;
    return {begin, std::min(s.end, begin + chunk_elems_)};
  }

  // Lane `lane`'s first chunk, and the one after `p`; step == steps() when
  // the lane has nothing left. `sending` picks the send or receive schedule.
  LanePosition first(size_t lane, bool sending) const { return settle({0, lane}, lane, sending); }
  LanePosition next(LanePosition p, size_t lane, size_t lanes, bool sending) const {
    p.chunk += lanes;
    return settle(p, lane, sending);
  }

 private:
  // Skips items too short to have chunk `lane` (uneven, empty or absent segments).
  LanePosition settle(LanePosition p, size_t lane, bool sending) const {
    while (p.step < steps()) {
      int seg = sending ? send_segment(p.step) : recv_segment(p.step);
      if (p.chunk < chunks_of(seg)) break;
      ++p.step;
      p.chunk = lane;
    }
    return p;
  }

  size_t count_;  // elements of the whole buffer the segments cut
  RingPlan plan_;
  size_t chunk_elems_;
};

}  // namespace pccl
