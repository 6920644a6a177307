// Ring all-reduce = reduce-scatter + all-gather, written as one pipelined
// stream per direction, striped over the K connections of each hop
// (ring_stripes.h) so that a long fat pipe is filled by several TCP windows.
//
// The buffer is cut into N segments. Over 2(N-1) steps a peer sends a segment
// to its right neighbour and receives one from its left. The segment it sends
// at step k+1 is exactly the one it received (and reduced) at step k, so the
// send stream may run as far ahead as the receive stream has been processed:
// chunk c of step k+1 leaves as soon as chunk c of step k is reduced. Reduction
// of one chunk thus overlaps the transfer of the next, across step boundaries.
// Bytes are received straight into the output and reduced there in place
// (into a per-lane scratch chunk first when the input is the output).
//
// Only the owner of a segment computes its final value (and applies avg's
// division); the all-gather ships those bytes verbatim, so every peer ends
// with bit-identical results.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/canceller.h"
#include "common/dtype.h"

namespace pccl {

struct RingPeers {
  int rank = 0;
  int size = 1;
  std::vector<int> right;  // sockets we send on, one per lane (at least one)
  std::vector<int> left;   // sockets we receive on; the left neighbour chose how many
};

struct RingOptions {
  double stall_timeout_s = 30.0;   // fail if no byte moves for this long
  // Largest striping unit (chunk c of every item travels on lane c % K):
  // big enough that a lane's chunk is a long send. Smaller messages use
  // smaller chunks so that they still spread over the lanes (ring_stripes.h).
  size_t chunk_bytes = 1 << 20;
  // Fires on a drop notice or close(): heard whenever no lane can move.
  const Canceller* cancel = nullptr;
  // Fires on close(): heard at once, even while bytes are moving.
  const Canceller* closing = nullptr;
};

struct RingTraffic {
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
};

// out = reduce over peers of in (count elements). in and out are either the
// same buffer (in place) or do not overlap. Throws PeerFailure (EOF, reset,
// stall) or Cancelled; out of place, `in` is never written.
RingTraffic ring_all_reduce(const RingPeers& ring, const RingOptions& options, const void* in,
                            void* out, size_t count, DType dtype, ReduceOp op);

// The segment [begin, end) in elements that segment `index` of N covers.
struct Segment {
  size_t begin = 0;
  size_t end = 0;
};
Segment ring_segment(size_t count, int n, int index);

}  // namespace pccl
