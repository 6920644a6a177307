// The ring order for measured links. A pipelined ring all-reduce moves a
// chunk over every link at once, step after step, so each step takes as long
// as the ring's slowest link: the ring to pick is the one whose slowest link
// is fastest (a bottleneck tour). Among the rings that tie on it, the one
// with the least total cost (the lowest latencies) wins. solve_ring()
// minimises the total, so the planner searches the smallest cost threshold
// under which a ring still exists (links above it count as broken), then
// minimises the total among the links under it.
#pragma once
#include <vector>

#include "topology/ring_solver.h"

namespace pccl {

struct RingPlan {
  std::vector<int> order;     // as RingSolution::order
  double bottleneck = 0;      // the dearest link of the ring (inf: a broken one is used)
  double total = 0;           // sum over the ring's links
  bool exact = false;         // every solve was exact: the bottleneck is optimal
  int solves = 0;             // solver calls it took
};

// `cost` as for solve_ring(); options.time_budget_s is the whole plan's
// budget (split between the solves). Throws as solve_ring().
RingPlan plan_ring(const CostMatrix& cost, const SolverOptions& options = {});

// A given ring's plan figures (bottleneck and total; exact false, no solves):
// how the master compares a ring found elsewhere with its own.
RingPlan evaluate_ring(const CostMatrix& cost, const std::vector<int>& order);

// The cost of the directed link for the planner: seconds to move one
// reference chunk over it (its round trip plus the chunk at its rate).
// A link without a usable rate costs infinity.
double link_seconds(double bytes_per_s, double rtt_s);

}  // namespace pccl
