// Chooses the order of the ring: the directed cycle through all N peers whose
// links cost least in total, sum of cost[i][next(i)]. A ring all-reduce moves
// the same bytes over every directed link, so with costs in seconds per byte
// (measured per directed pair, which is why they are asymmetric) a cheaper
// ring is a faster one. This is the asymmetric travelling-salesman problem.
//
// Small rings are solved exactly (Held-Karp, ring_exact.h); larger ones by an
// iterated local search (ring_search.h) that runs until its time budget or
// its kick bound is spent. Pure computation: no I/O, no threads.
#pragma once
#include <atomic>
#include <cstdint>
#include <vector>

namespace pccl {

// cost[i][j]: the cost of the directed link i -> j. The diagonal is ignored.
// Infinity marks a link that cannot be used (a broken link).
using CostMatrix = std::vector<std::vector<double>>;

// The largest N the exact solver accepts: its table holds N * 2^(N-1) costs
// (4 MB at 16) and its time grows as N^2 2^N.
constexpr int kMaxExactRing = 16;

struct SolverOptions {
  // Wall time the local search may take (after its first descent). Where it
  // is what stops the search, the result depends on the machine's speed.
  double time_budget_s = 1.0;
  // The search's random choices (kicks, the order it scans nodes in) come
  // from this seed alone: one input, seed and options give one ring, on one
  // build, whenever max_kicks rather than the time budget stops the search.
  uint64_t seed = 1;
  // Rings of up to this many peers are solved exactly (0..kMaxExactRing).
  int exact_up_to = 12;
  // Stop the search after this many kicks (0: only the time budget stops it).
  long max_kicks = 0;
  // Candidate links per node that the moves consider: the k cheapest
  // successors and the k cheapest predecessors.
  int neighbours = 10;
  // The cancellation path of a long search (the master's background planner
  // on close): once it reads true, the search returns the best ring so far.
  const std::atomic<bool>* stop = nullptr;
};

struct RingSolution {
  // A rotation of 0..N-1 starting at 0: order[i] sends to order[i + 1], the
  // last to order[0].
  std::vector<int> order;
  // The ring's total cost; infinity when it uses a broken link, which it does
  // only when no ring avoids them (proven when exact, otherwise none found).
  double cost = 0;
  bool exact = false;       // order is optimal (exact solver or N <= 3)
  int broken_links = 0;     // links of the ring with infinite cost
  long kicks = 0;           // perturbations the search made (0 when exact)
};

// Throws std::invalid_argument for a matrix that is not square, empty, or
// holds a NaN or negative cost off the diagonal, and for options out of range;
// std::logic_error if the search catches itself in a bug (a move whose
// expected gain is not what it changed), rather than search for ever.
RingSolution solve_ring(const CostMatrix& cost, const SolverOptions& opts = {});

// The total cost of a ring in `order` (a permutation of 0..N-1).
double ring_cost(const CostMatrix& cost, const std::vector<int>& order);

// Nearest-neighbour construction from peer 0: a baseline for benchmarks.
std::vector<int> nearest_neighbour_ring(const CostMatrix& cost);

}  // namespace pccl
