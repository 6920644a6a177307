// A small seeded generator (splitmix64) whose output is the same on every
// platform and standard library (the <random> distributions are not): for
// searches that must be reproducible from their seed, and seeded test data.
#pragma once
#include <cstdint>

namespace pccl {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // In [0, n), n > 0 (the modulo bias is below 2^-32 for n < 2^32).
  int below(int n) { return static_cast<int>(next() % static_cast<uint64_t>(n)); }
  // In [0, 1), from the top 53 bits: exact, so the same double everywhere.
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t s_;
};

}  // namespace pccl
