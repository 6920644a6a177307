// The heuristic solver for rings too large to solve exactly: an iterated
// local search. A nearest-neighbour ring is improved by moves that never
// reverse a run (with asymmetric costs a reversed run costs something else):
//  - Or-opt: move a run of 1-3 peers elsewhere in the ring, same direction;
//  - or-3opt: exchange two adjacent runs of any length (the one 3-opt move,
//    "a'b'c'", that keeps every run's direction).
// Both look only at each peer's cheapest successors and predecessors, so a
// pass is O(N k^2), not O(N^3). A local optimum is then kicked (three runs
// put back in reverse order, a double bridge that reverses no run) and
// improved again; the kicked ring is kept if it is no dearer, else undone
// (while every ring found breaks links, it is kept if it breaks no more).
// A search that has gained nothing for many kicks restarts from a ring
// kicked three times; the best ring found is what it returns.
#pragma once
#include <vector>

#include "topology/ring_costs.h"

namespace pccl {

// The best ring found, as a rotation starting at 0; *kicks counts the kicks.
// Needs N >= 4.
std::vector<int> search_ring(const ScaledCosts& cost, const SolverOptions& opts, long* kicks);

// From peer 0, always on to the cheapest peer not yet in the ring.
std::vector<int> nearest_neighbour(const ScaledCosts& cost);

}  // namespace pccl
