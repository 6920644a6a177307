#include "topology/ring_search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>

#include "common/splitmix64.h"
#include "topology/ring_local_search.h"
#include "topology/ring_tour.h"

namespace pccl {
namespace {

// Kicks are local, three runs of 1..30 peers, so the descent after one has
// little to repair far from it. (On the uniform 256-peer test instance,
// 3 seeds: after 30000 kicks, runs of up to 30 ended ~1.3% cheaper than up
// to 10 or 100; in 3 s, this kick and the three-link one, B C -> C B, which
// one or-3opt move undoes, were within 0.2% of each other, this one ahead.)
constexpr int kKickRun = 30;

// ... p -> B -> C -> D -> r ...  becomes  ... p -> D -> C -> B -> r ...:
// four links change and no run reverses, so no single move undoes it.
double kick(RingTour& tour, LocalSearch& search, SplitMix64& rng) {
  const int n = tour.size();
  const int most = std::max(1, std::min(kKickRun, (n - 1) / 3));
  int ends[3];
  const int b0 = rng.below(n);
  for (int r = 0, v = b0; r < 3; ++r) {
    for (int step = rng.below(most); step > 0; --step) v = tour.next(v);
    ends[r] = v;
    v = tour.next(v);
  }
  const int c0 = tour.next(ends[0]);
  // B C D -> C D B -> D C B.
  double delta = search.apply({b0, ends[0], ends[2]});
  return delta + search.apply({c0, ends[1], ends[2]});
}

// A search whose kicks have gained nothing for this long is stuck in a
// basin it cannot leave by one kick at a time (seen at 16 peers: 0.46%
// above the optimum after 100000 kicks, for one seed in three). At 256
// peers restarts this rare made no difference either way at 3-10 s.
long stale_limit(int n) { return std::max(1000L, 100L * n); }

// Leaves the basin: three kicks in a row and a descent, kept whatever they
// cost (the best ring is kept apart). Returns the change in cost.
double restart(RingTour& tour, LocalSearch& search, SplitMix64& rng) {
  double delta = 0;
  for (int i = 0; i < 3; ++i) delta += kick(tour, search, rng);
  return delta + search.descend();
}

// Whether the ring after a kick and its descent (delta dearer than before)
// is kept. A ring no dearer is. While the ring breaks links (costs at least
// the penalty), so is any ring that breaks no more, whatever its usable
// links cost: a walk over rings with as many broken links finds ways out
// that descents from one ring do not (it found rings without broken links
// in sparse graphs where keeping only cheaper rings did not).
bool keep(const ScaledCosts& cost, double current, double delta) {
  if (current < cost.penalty()) return delta <= 0;
  // Usable links change a ring's cost by less than half a penalty.
  return std::lround(delta / cost.penalty()) <= 0;
}

}  // namespace

std::vector<int> nearest_neighbour(const ScaledCosts& cost) {
  const int n = cost.size();
  std::vector<int> order{0};
  std::vector<char> used(n, 0);
  used[0] = 1;
  for (int i = 1; i < n; ++i) {
    const int from = order.back();
    int best = -1;
    for (int v = 0; v < n; ++v) {
      if (!used[v] && (best < 0 || cost(from, v) < cost(from, best))) best = v;
    }
    used[best] = 1;
    order.push_back(best);
  }
  return order;
}

std::vector<int> search_ring(const ScaledCosts& cost, const SolverOptions& opts, long* kicks) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point until =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(std::min(opts.time_budget_s, 1e6)));
  const Neighbours near(cost, opts.neighbours);
  RingTour tour(nearest_neighbour(cost));
  LocalSearch search(cost, near, tour);
  for (int v : tour.from_zero()) search.touch(v);
  search.descend();
  std::vector<int> best = tour.from_zero();
  double best_cost = cost.ring(best);
  double current = best_cost;

  SplitMix64 rng(opts.seed);
  std::vector<Exchange> undo;
  search.record_into(&undo);
  *kicks = 0;
  long stale = 0;  // kicks since one last gained
  auto stopped = [&opts] { return opts.stop && opts.stop->load(std::memory_order_relaxed); };
  while ((opts.max_kicks == 0 || *kicks < opts.max_kicks) && Clock::now() < until && !stopped()) {
    ++*kicks;
    undo.clear();
    if (stale >= stale_limit(cost.size())) {
      current += restart(tour, search, rng);
      stale = 0;
      continue;
    }
    const double delta = kick(tour, search, rng) + search.descend();
    stale = delta < -kMinGain ? 0 : stale + 1;
    if (!keep(cost, current, delta)) {
      // Put the ring back, newest change first.
      for (auto e = undo.rbegin(); e != undo.rend(); ++e) tour.exchange(e->b0, e->b1, e->c1);
      continue;
    }
    current += delta;
    if (current < best_cost - kMinGain) {
      best = tour.from_zero();
      best_cost = current = cost.ring(best);  // sums afresh: no drift from the deltas
    }
  }
  return best;
}

}  // namespace pccl
