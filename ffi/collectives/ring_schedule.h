// Which segment moves at which step of a ring all-reduce, shared by the exact
// and the quantized pipelines.
//
// The buffer is cut into N segments; over 2(N-1) steps a peer sends one to
// its right neighbour and receives one from its left. Steps 0..N-2 are the
// reduce-scatter, N-1..2N-3 the all-gather. The segment sent at step k+1 is
// always the one received at step k, which is what lets the send stream run
// as far ahead as the receive stream has been processed.
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
}  // namespace pccl
