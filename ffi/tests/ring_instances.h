// Seeded cost matrices for the ring solver's test and benchmark
// (test_ring_solver.cc, ring_solver_bench.cc). The generator is splitmix64
// (common/splitmix64.h), so an instance is the same on every platform and
// standard library: best-known costs recorded from long runs stay valid.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "common/splitmix64.h"
#include "topology/ring_solver.h"

namespace ring_instances {

// The platform-independent generator, with the uniform doubles tests want.
class Random : public pccl::SplitMix64 {
 public:
  using SplitMix64::SplitMix64;
  double uniform(double lo, double hi) { return lo + (hi - lo) * unit(); }
};

constexpr double kInf = std::numeric_limits<double>::infinity();

inline pccl::CostMatrix matrix(int n, double fill) {
  return pccl::CostMatrix(n, std::vector<double>(n, fill));
}

// Every directed link independently uniform in [1, 100): the classic random
// ATSP, the hardest kind for local search (no structure to exploit).
inline pccl::CostMatrix uniform(int n, uint64_t seed) {
  Random rng(seed);
  pccl::CostMatrix c = matrix(n, 0);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) c[i][j] = i == j ? 0 : rng.uniform(1, 100);
  }
  return c;
}

// A WAN in seconds per byte: hosts in `regions` regions (dealt at random),
// about 1 GB/s within a region, 20-60x slower between regions, with each
// ordered pair of regions its own speed (routes are asymmetric), a few
// percent of noise on every link, and one host in 16 slow (a weak NIC or a
// busy host): its links in and out cost 10x.
inline pccl::CostMatrix clustered(int n, int regions, uint64_t seed) {
  Random rng(seed);
  std::vector<int> region(n);
  for (int i = 0; i < n; ++i) region[i] = rng.below(regions);
  std::vector<double> between(regions * regions);
  for (double& b : between) b = rng.uniform(20, 60);
  std::vector<double> slow(n, 1.0);
  for (int i = 0; i < std::max(1, n / 16); ++i) slow[rng.below(n)] = 10.0;
  pccl::CostMatrix c = matrix(n, 0);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      if (i == j) continue;
      const double base = region[i] == region[j] ? 1.0 : between[region[i] * regions + region[j]];
      c[i][j] = 1e-9 * base * slow[i] * slow[j] * rng.uniform(1.0, 1.05);
    }
  }
  return c;
}

// Every link broken except a hidden ring (a random order) and `extra` random
// links out of each peer; the hidden ring's links are not the cheapest.
inline pccl::CostMatrix hidden_ring(int n, int extra, uint64_t seed) {
  Random rng(seed);
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  for (int i = n - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
  pccl::CostMatrix c = matrix(n, kInf);
  for (int i = 0; i < n; ++i) c[order[i]][order[(i + 1) % n]] = rng.uniform(50, 100);
  for (int i = 0; i < n; ++i) {
    for (int e = 0; e < extra; ++e) {
      const int j = rng.below(n);
      if (j != i && c[i][j] == kInf) c[i][j] = rng.uniform(1, 50);
    }
  }
  return c;
}

}  // namespace ring_instances
