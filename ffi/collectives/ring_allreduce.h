// Ring all-reduce = reduce-scatter + all-gather, written as ONE pipelined
// stream per direction.
//
// The buffer is cut into N segments. Over 2(N-1) steps a peer sends a segment
// to its right neighbour and receives one from its left. The segment it sends
// at step k+1 is exactly the one it received (and reduced) at step k, so the
// send stream may run as far ahead as the receive stream has been processed:
// chunk c of step k+1 leaves as soon as chunk c of step k is reduced. Reduction
// of one chunk thus overlaps the transfer of the next, across step boundaries.
//
// Only the owner of a segment computes its final value (and applies avg's
// division); the all-gather ships those bytes verbatim, so every peer ends
// with bit-identical results.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/canceller.h"
#include "common/dtype.h"
#include "transport/socket.h"

namespace pccl {

struct RingPeers {
  int rank = 0;
  int size = 1;
  Socket* right = nullptr;  // we send on this
  Socket* left = nullptr;   // we receive on this
};

struct RingOptions {
  double stall_timeout_s = 30.0;   // fail if no byte moves for this long
  size_t chunk_bytes = 512 << 10;  // reduction granularity
  const Canceller* cancel = nullptr;
};

struct RingTraffic {
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
};

// out = reduce over peers of in (count elements). in and out must not overlap.
// Throws PeerFailure (EOF, reset, stall) or Cancelled; `in` is never written.
RingTraffic ring_all_reduce(const RingPeers& ring, const RingOptions& options, const void* in,
                            void* out, size_t count, DType dtype, ReduceOp op);

// The segment [begin, end) in elements that segment `index` of N covers.
struct Segment {
  size_t begin = 0;
  size_t end = 0;
};
Segment ring_segment(size_t count, int n, int index);

}  // namespace pccl
