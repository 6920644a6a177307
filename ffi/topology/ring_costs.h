// The solvers' view of a cost matrix (ring_solver.h): flat, scaled so that
// the dearest usable link costs 1, with every broken link given one finite
// penalty that is dearer than any whole ring of usable links. Minimising the
// total then minimises the number of broken links first and the usable cost
// second, and the moves need no special case for infinity (inf - inf would
// be NaN in a move's gain).
#pragma once
#include <cstddef>
#include <vector>

#include "topology/ring_solver.h"

namespace pccl {

class ScaledCosts {
 public:
  // `cost` must have passed validate_costs().
  explicit ScaledCosts(const CostMatrix& cost);

  int size() const { return n_; }
  double operator()(int from, int to) const { return c_[static_cast<size_t>(from) * n_ + to]; }
  double penalty() const { return penalty_; }
  // The scaled cost of a ring, summed in ring order.
  double ring(const std::vector<int>& order) const;

 private:
  int n_;
  double penalty_;
  std::vector<double> c_;  // row-major; the diagonal holds the penalty
};

// Throws std::invalid_argument unless cost is a non-empty square matrix with
// no NaN or negative entry off the diagonal (the diagonal is not read).
void validate_costs(const CostMatrix& cost);

// Improvements smaller than this (in scaled units: the dearest usable link
// costs 1) are rounding, not progress: a move must gain more to be taken.
constexpr double kMinGain = 1e-10;

}  // namespace pccl
