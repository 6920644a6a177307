#include "topology/ring_costs.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace pccl {

void validate_costs(const CostMatrix& cost) {
  const size_t n = cost.size();
  if (n == 0) throw std::invalid_argument("ring solver: the cost matrix is empty");
  if (n > static_cast<size_t>(std::numeric_limits<int>::max() / 2)) {
    throw std::invalid_argument("ring solver: too many peers");
  }
  for (size_t i = 0; i < n; ++i) {
    if (cost[i].size() != n) {
      throw std::invalid_argument("ring solver: the cost matrix is not square (row " +
                                  std::to_string(i) + " has " + std::to_string(cost[i].size()) +
                                  " entries, expected " + std::to_string(n) + ")");
    }
    for (size_t j = 0; j < n; ++j) {
      if (i == j) continue;
      const double c = cost[i][j];
      if (std::isnan(c) || c < 0) {
        throw std::invalid_argument("ring solver: cost[" + std::to_string(i) + "][" +
                                    std::to_string(j) + "] is " + std::to_string(c) +
                                    " (costs must be >= 0 or +infinity)");
      }
    }
  }
}

ScaledCosts::ScaledCosts(const CostMatrix& cost) : n_(static_cast<int>(cost.size())) {
  double dearest = 0;
  for (int i = 0; i < n_; ++i) {
    for (int j = 0; j < n_; ++j) {
      if (i != j && std::isfinite(cost[i][j]) && cost[i][j] > dearest) dearest = cost[i][j];
    }
  }
  // Scaling keeps kMinGain meaningful whatever the unit (seconds per byte
  // are around 1e-9). All-zero or all-broken matrices need no scaling.
  const double scale = dearest > 0 ? 1.0 / dearest : 1.0;
  // A usable ring costs at most n (scaled); one broken link more than that.
  penalty_ = 2.0 * (n_ + 1);
  c_.resize(static_cast<size_t>(n_) * n_);
  for (int i = 0; i < n_; ++i) {
    for (int j = 0; j < n_; ++j) {
      const double c = cost[i][j];
      c_[static_cast<size_t>(i) * n_ + j] = (i == j || !std::isfinite(c)) ? penalty_ : c * scale;
    }
  }
}

double ScaledCosts::ring(const std::vector<int>& order) const {
  double total = 0;
  for (size_t i = 0; i < order.size(); ++i) total += (*this)(order[i], order[(i + 1) % order.size()]);
  return total;
}

}  // namespace pccl
