#include "topology/ring_tour.h"

#include <algorithm>

namespace pccl {

RingTour::RingTour(std::vector<int> order) : order_(std::move(order)), pos_(order_.size()) {
  for (int i = 0; i < size(); ++i) pos_[order_[i]] = i;
}

void RingTour::exchange(int b0, int b1, int c1) {
  // The ring is three runs B, C and R (the rest). Exchanging any two of
  // them gives the same cycle (B C R -> C B R = B R C = R C B), so swap the
  // two shortest: a move near the kick costs its own size, not the ring's.
  const int pb = pos_[b0];
  const int len_b = wrap(pos_[b1] - pb) + 1;
  const int pc = wrap(pb + len_b);
  const int len_c = wrap(pos_[c1] - pc) + 1;
  const int len_r = size() - len_b - len_c;
  if (len_r <= 0) return;  // B C is the whole ring: C B is the same cycle
  if (len_r >= len_b && len_r >= len_c) swap_runs(pb, len_b, len_c);
  else if (len_b >= len_c) swap_runs(pc, len_c, len_r);
  else swap_runs(wrap(pc + len_c), len_r, len_b);
}

void RingTour::swap_runs(int x, int len_x, int len_y) {
  // Through a buffer, since the runs may wrap past the end of order_.
  scratch_.resize(len_x + len_y);
  for (int i = 0; i < len_y; ++i) scratch_[i] = order_[wrap(x + len_x + i)];
  for (int i = 0; i < len_x; ++i) scratch_[len_y + i] = order_[wrap(x + i)];
  for (int i = 0; i < len_x + len_y; ++i) {
    const int p = wrap(x + i);
    order_[p] = scratch_[i];
    pos_[scratch_[i]] = p;
  }
}

std::vector<int> RingTour::from_zero() const {
  std::vector<int> order(order_);
  std::rotate(order.begin(), order.begin() + pos_[0], order.end());
  return order;
}

}  // namespace pccl
