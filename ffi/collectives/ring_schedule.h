// Which segment moves at which step of a ring collective: the one thing that
// differs between the kinds of collective as far as the lanes are concerned
// (ring_stripes.h cuts the items into chunks, ring_lanes.h moves them).
//
// In every pattern the segment a peer sends at step k+1 is the one it
// received at step k (or nothing), which is what lets the send stream run
// as far ahead as the receive stream has been processed. Each peer's send
// sequence is exactly its right neighbour's receive sequence.
//
// - all-reduce: N segments over 2(N-1) steps; steps 0..N-2 reduce-scatter,
//   N-1..2N-3 all-gather the owners' final values.
// - reduce-scatter: N segments over N-1 steps, all reducing, shifted so that
//   rank r ends owning segment r (its slice of the result).
// - all-gather: N segments over N-1 steps, none reducing: rank r starts with
//   segment r (its input) and forwards what it receives.
// - broadcast: one segment down a chain from the root over 2 steps: a peer
//   receives it at step 0 (unless it is the root) and forwards it at step 1
//   (unless its right neighbour is the root). The root sends at step 0.
#pragma once
#include <algorithm>
#include <cstddef>

namespace pccl {
namespace ring_schedule {

inline int wrap(int a, int n) { return ((a % n) + n) % n; }

inline int send_segment(int rank, int n, int step) {
  return step < n - 1 ? wrap(rank - step, n) : wrap(rank + 1 - (step - (n - 1)), n);
}

inline int recv_segment(int rank, int n, int step) {
  return step < n - 1 ? wrap(rank - step - 1, n) : wrap(rank - (step - (n - 1)), n);
}

inline bool is_reduce_step(int n, int step) { return step < n - 1; }
// The last reduce-scatter step leaves this peer owning its segment's final value.
inline bool is_owner_step(int n, int step) { return step == n - 2; }

}  // namespace ring_schedule

enum class RingPattern { kAllReduce, kReduceScatter, kAllGather, kBroadcast };

// One peer's schedule in a pattern. A segment of -1 means "nothing at this
// step" (the broadcast's root receives nothing, its left neighbour forwards
// nothing).
struct RingPlan {
  RingPattern pattern = RingPattern::kAllReduce;
  int rank = 0;
  int size = 1;
  int root = 0;  // broadcast only

  int segments() const { return pattern == RingPattern::kBroadcast ? 1 : size; }

  int steps() const {
    switch (pattern) {
      case RingPattern::kAllReduce: return 2 * (size - 1);
      case RingPattern::kBroadcast: return 2;
      default: return size - 1;
    }
  }

  int send_segment(int step) const {
    using ring_schedule::wrap;
    switch (pattern) {
      case RingPattern::kAllReduce: return ring_schedule::send_segment(rank, size, step);
      case RingPattern::kReduceScatter: return wrap(rank - step - 1, size);
      case RingPattern::kAllGather: return wrap(rank - step, size);
      case RingPattern::kBroadcast: {
        int distance = wrap(rank - root, size);
        if (distance == size - 1) return -1;  // our right neighbour is the root
        return step == (distance == 0 ? 0 : 1) ? 0 : -1;
      }
    }
    return -1;
  }

  int recv_segment(int step) const {
    using ring_schedule::wrap;
    switch (pattern) {
      case RingPattern::kAllReduce: return ring_schedule::recv_segment(rank, size, step);
      case RingPattern::kReduceScatter: return wrap(rank - step - 2, size);
      case RingPattern::kAllGather: return wrap(rank - step - 1, size);
      case RingPattern::kBroadcast: return step == 0 && rank != root ? 0 : -1;
    }
    return -1;
  }

  // Received bytes are folded into ours at this step (else they are final).
  bool reduces(int step) const {
    switch (pattern) {
      case RingPattern::kAllReduce: return ring_schedule::is_reduce_step(size, step);
      case RingPattern::kReduceScatter: return true;
      default: return false;
    }
  }

  // This step's reduction gives the segment's final value (avg divides there).
  bool owns_after(int step) const {
    return (pattern == RingPattern::kAllReduce || pattern == RingPattern::kReduceScatter) &&
           step == size - 2;
  }
};

}  // namespace pccl
