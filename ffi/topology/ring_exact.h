// The exact solver for small rings: Held-Karp dynamic programming over the
// subsets of peers, O(N^2 2^N) time and O(N 2^N) memory.
#pragma once
#include <vector>

#include "topology/ring_costs.h"

namespace pccl {

// The cheapest ring (in scaled costs, so fewest broken links first), as a
// rotation starting at 0. Needs 2 <= N <= kMaxExactRing.
std::vector<int> solve_ring_exactly(const ScaledCosts& cost);

}  // namespace pccl
