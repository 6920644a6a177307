#include "topology/ring_solver.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "topology/ring_costs.h"
#include "topology/ring_exact.h"
#include "topology/ring_search.h"

namespace pccl {
namespace {

void validate_options(const SolverOptions& opts) {
  if (!(opts.time_budget_s >= 0)) {  // also NaN
    throw std::invalid_argument("ring solver: time_budget_s must be >= 0");
  }
  if (opts.exact_up_to < 0 || opts.exact_up_to > kMaxExactRing) {
    throw std::invalid_argument("ring solver: exact_up_to must be in 0.." +
                                std::to_string(kMaxExactRing) + ", not " +
                                std::to_string(opts.exact_up_to));
  }
  if (opts.max_kicks < 0) throw std::invalid_argument("ring solver: max_kicks must be >= 0");
  if (opts.neighbours < 1) throw std::invalid_argument("ring solver: neighbours must be >= 1");
}

// Up to three peers there are at most two rings: try both.
std::vector<int> tiny_ring(const ScaledCosts& cost) {
  const int n = cost.size();
  if (n < 3) {
    std::vector<int> order(n);
    for (int i = 0; i < n; ++i) order[i] = i;
    return order;
  }
  const std::vector<int> forward{0, 1, 2}, backward{0, 2, 1};
  return cost.ring(backward) < cost.ring(forward) ? backward : forward;
}

}  // namespace

double ring_cost(const CostMatrix& cost, const std::vector<int>& order) {
  if (order.size() < 2) return 0;  // one peer: no link (the diagonal is ignored)
  double total = 0;
  for (size_t i = 0; i < order.size(); ++i) total += cost[order[i]][order[(i + 1) % order.size()]];
  return total;
}

std::vector<int> nearest_neighbour_ring(const CostMatrix& cost) {
  validate_costs(cost);
  return nearest_neighbour(ScaledCosts(cost));
}

RingSolution solve_ring(const CostMatrix& cost, const SolverOptions& opts) {
  validate_costs(cost);
  validate_options(opts);
  const ScaledCosts scaled(cost);
  const int n = scaled.size();
  RingSolution s;
  if (n <= 3) {
    s.order = tiny_ring(scaled);
    s.exact = true;
  } else if (n <= opts.exact_up_to) {
    s.order = solve_ring_exactly(scaled);
    s.exact = true;
  } else {
    s.order = search_ring(scaled, opts, &s.kicks);
  }
  s.cost = ring_cost(cost, s.order);
  for (int i = 0; n > 1 && i < n; ++i) {
    if (std::isinf(cost[s.order[i]][s.order[(i + 1) % n]])) ++s.broken_links;
  }
  return s;
}

}  // namespace pccl
