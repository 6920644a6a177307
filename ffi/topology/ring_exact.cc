#include "topology/ring_exact.h"

#include <cstdint>
#include <limits>
#include <stdexcept>

namespace pccl {
namespace {

// Peer 0 starts every path, so subsets range over peers 1..n-1: bit b of a
// mask stands for peer b + 1.
struct PathTable {
  int m;                        // peers other than 0
  std::vector<double> best;     // best[mask * m + b]: cheapest 0 -> ... -> peer b+1 through mask
  std::vector<int8_t> before;   // the bit of the peer before b+1 on that path (-1: peer 0)

  explicit PathTable(int n)
      : m(n - 1),
        best(static_cast<size_t>(m) << m, std::numeric_limits<double>::infinity()),
        before(static_cast<size_t>(m) << m, -1) {}
  size_t at(uint32_t mask, int b) const { return static_cast<size_t>(mask) * m + b; }
};

// Fills the table in order of increasing masks: a mask's sub-masks are smaller.
// Strict < and a fixed scan order make ties go the same way every run.
void fill(PathTable& t, const ScaledCosts& cost) {
  for (int b = 0; b < t.m; ++b) t.best[t.at(1u << b, b)] = cost(0, b + 1);
  const uint32_t full = (1u << t.m) - 1;
  for (uint32_t mask = 1; mask <= full; ++mask) {
    if ((mask & (mask - 1)) == 0) continue;  // single peers are the base case
    for (int b = 0; b < t.m; ++b) {
      if (!(mask & (1u << b))) continue;
      const uint32_t rest = mask ^ (1u << b);
      double best = std::numeric_limits<double>::infinity();
      int8_t before = -1;
      for (int a = 0; a < t.m; ++a) {
        if (!(rest & (1u << a))) continue;
        const double c = t.best[t.at(rest, a)] + cost(a + 1, b + 1);
        if (c < best) { best = c; before = static_cast<int8_t>(a); }
      }
      t.best[t.at(mask, b)] = best;
      t.before[t.at(mask, b)] = before;
    }
  }
}

}  // namespace

std::vector<int> solve_ring_exactly(const ScaledCosts& cost) {
  const int n = cost.size();
  if (n < 2 || n > kMaxExactRing) throw std::invalid_argument("exact ring solver: N out of range");
  PathTable t(n);
  fill(t, cost);
  // Close the ring: the cheapest full path plus its link back to peer 0.
  const uint32_t full = (1u << t.m) - 1;
  int last = 0;
  double best = std::numeric_limits<double>::infinity();
  for (int b = 0; b < t.m; ++b) {
    const double c = t.best[t.at(full, b)] + cost(b + 1, 0);
    if (c < best) { best = c; last = b; }
  }
  // Walk the path back from its last peer.
  std::vector<int> order(n);
  uint32_t mask = full;
  for (int i = n - 1, b = last; i >= 1; --i) {
    order[i] = b + 1;
    const int a = t.before[t.at(mask, b)];
    mask ^= 1u << b;
    b = a;
  }
  order[0] = 0;
  return order;
}

}  // namespace pccl
