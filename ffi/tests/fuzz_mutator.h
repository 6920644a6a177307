// The plain driver's input generator: seeded, mutation-based, no coverage
// feedback. It starts from valid encodings and applies the edits that break
// parsers: bit flips, truncations, length-field edits (boundary values written
// over 1, 2 or 4 bytes), inserted, deleted or duplicated ranges, splices of
// two inputs, and now and then pure random bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "tests/fuzz_target.h"

namespace pccl_fuzz {

class Mutator {
 public:
  Mutator(uint64_t seed, std::vector<Bytes> seeds);
  // The next input: a pool entry with 1 to 4 edits (or random bytes).
  Bytes next();
  // Keeps an input the parser accepted: valid-but-unusual inputs are the best
  // starting points for the next edits (the pool stays bounded).
  void keep(const Bytes& accepted);

 private:
  void edit(Bytes& b);
  void write_boundary_value(Bytes& b);
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng_() % n); }
  uint8_t byte() { return static_cast<uint8_t>(rng_()); }

  std::mt19937_64 rng_;
  std::vector<Bytes> pool_;
  size_t n_seeds_;
};

}  // namespace pccl_fuzz
