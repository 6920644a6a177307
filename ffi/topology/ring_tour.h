// A ring under local search: the peers in ring order plus each peer's
// position, so that next, prev and "is v between a and b" are O(1).
//
// Every move the search makes (ring_search.cc) is one exchange of two
// adjacent runs, which keeps every run's direction: with asymmetric costs a
// reversed run would change cost, so no move reverses one.
#pragma once
#include <vector>

namespace pccl {

class RingTour {
 public:
  explicit RingTour(std::vector<int> order);

  int size() const { return static_cast<int>(order_.size()); }
  int next(int v) const { return order_[wrap(pos_[v] + 1)]; }
  int prev(int v) const { return order_[wrap(pos_[v] - 1)]; }
  // Whether v lies on the run from a forward to b (both ends included).
  bool on_run(int v, int a, int b) const {
    return wrap(pos_[v] - pos_[a]) <= wrap(pos_[b] - pos_[a]);
  }
  // ... first -> [b0 .. b1] -> [next(b1) .. c1] -> rest ...  becomes
  // ... first -> [next(b1) .. c1] -> [b0 .. b1] -> rest ...: three links
  // change, none reverses. The runs must not cover the whole ring.
  void exchange(int b0, int b1, int c1);
  // The ring as a rotation starting at peer 0.
  std::vector<int> from_zero() const;

 private:
  int wrap(int p) const { const int n = size(); return p < 0 ? p + n : (p >= n ? p - n : p); }
  // Swaps the adjacent runs starting at positions x (len_x peers) and y = x + len_x.
  void swap_runs(int x, int len_x, int len_y);

  std::vector<int> order_;
  std::vector<int> pos_;
  std::vector<int> scratch_;
};

}  // namespace pccl
