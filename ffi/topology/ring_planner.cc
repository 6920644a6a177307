#include "topology/ring_planner.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace pccl {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// A ring step moves about size / N bytes per link; 8 MiB weighs rate against
// round trip the way a few-hundred-MiB all-reduce over a handful of peers does.
constexpr double kReferenceChunkBytes = 8.0 * (1 << 20);

CostMatrix without_links_above(const CostMatrix& cost, double threshold) {
  CostMatrix masked = cost;
  for (size_t i = 0; i < masked.size(); ++i) {
    for (size_t j = 0; j < masked.size(); ++j) {
      if (i != j && masked[i][j] > threshold) masked[i][j] = kInf;
    }
  }
  return masked;
}

double dearest_link(const CostMatrix& cost, const std::vector<int>& order) {
  double worst = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    worst = std::max(worst, cost[order[i]][order[(i + 1) % order.size()]]);
  }
  return worst;
}

}  // namespace

double link_seconds(double bytes_per_s, double rtt_s) {
  if (!(bytes_per_s > 0) || !std::isfinite(rtt_s) || rtt_s < 0) return kInf;
  return rtt_s + kReferenceChunkBytes / bytes_per_s;
}

RingPlan plan_ring(const CostMatrix& cost, const SolverOptions& options) {
  RingPlan plan;
  std::vector<double> levels;
  for (size_t i = 0; i < cost.size(); ++i) {
    for (size_t j = 0; j < cost[i].size(); ++j) {
      if (i != j && std::isfinite(cost[i][j])) levels.push_back(cost[i][j]);
    }
  }
  std::sort(levels.begin(), levels.end());
  levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
  // About log2(N^2) threshold solves, then the last one again: share the budget.
  int expected = 2 + static_cast<int>(std::ceil(std::log2(levels.size() + 1.0)));
  SolverOptions each = options;
  each.time_budget_s = options.time_budget_s / expected;
  plan.exact = true;
  auto solve = [&](const CostMatrix& c) {
    ++plan.solves;
    RingSolution s = solve_ring(c, each);
    plan.exact = plan.exact && s.exact;
    return s;
  };
  RingSolution best = solve(cost);  // validates the input; also the answer without thresholds
  if (best.broken_links == 0 && !levels.empty()) {
    // Smallest level whose links still make a ring. The full set does
    // (best has no broken link), so the answer lies in [lo, hi].
    size_t lo = 0, hi = levels.size() - 1;
    RingSolution at_hi = best;
    // A stop leaves the answer at hi: a ring, only not the tightest one.
    while (lo < hi && !(options.stop && options.stop->load(std::memory_order_relaxed))) {
      size_t mid = lo + (hi - lo) / 2;
      RingSolution s = solve(without_links_above(cost, levels[mid]));
      if (s.broken_links == 0) {
        hi = mid;
        at_hi = s;
      } else {
        lo = mid + 1;
      }
    }
    best = at_hi;
  }
  RingPlan figures = evaluate_ring(cost, best.order);
  plan.order = best.order;
  plan.bottleneck = figures.bottleneck;
  plan.total = figures.total;
  return plan;
}

RingPlan evaluate_ring(const CostMatrix& cost, const std::vector<int>& order) {
  RingPlan plan;
  plan.order = order;
  plan.bottleneck = dearest_link(cost, order);
  plan.total = ring_cost(cost, order);
  return plan;
}

}  // namespace pccl
