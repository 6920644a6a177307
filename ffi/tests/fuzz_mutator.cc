#include "tests/fuzz_mutator.h"

#include <algorithm>

namespace pccl_fuzz {
namespace {

constexpr size_t kPoolLimit = 512;
constexpr size_t kMaxInput = 4096;
// Values that sit on the bounds parsers check: zero, one, limits +-1, all ones.
constexpr uint64_t kBoundaries[] = {0,     1,     2,      0x7f,       0x80,       0xff,
                                    0x100, 0x101, 0x7fff, 0xffff,     0x10000,    1u << 20,
                                    (1u << 20) + 1, 0x7fffffff, 0xffffffff, 71, 72, 256, 257, 512, 513};

}  // namespace

Mutator::Mutator(uint64_t seed, std::vector<Bytes> seeds)
    : rng_(seed), pool_(std::move(seeds)), n_seeds_(pool_.size()) {}

Bytes Mutator::next() {
  if (pool_.empty() || below(20) == 0) {
    Bytes b(below(512));
    for (auto& x : b) x = byte();
    return b;
  }
  Bytes b = pool_[below(pool_.size())];
  for (size_t i = 0, n = 1 + below(4); i < n; ++i) edit(b);
  if (b.size() > kMaxInput) b.resize(kMaxInput);
  return b;
}

void Mutator::keep(const Bytes& accepted) {
  if (pool_.size() < kPoolLimit) {
    pool_.push_back(accepted);
  } else {
    // Replace an earlier find, never one of the original seeds.
    pool_[n_seeds_ + below(pool_.size() - n_seeds_)] = accepted;
  }
}

void Mutator::edit(Bytes& b) {
  switch (below(9)) {
    case 0:  // flip one bit
      if (!b.empty()) b[below(b.size())] ^= static_cast<uint8_t>(1u << below(8));
      break;
    case 1:  // overwrite one byte
      if (!b.empty()) b[below(b.size())] = byte();
      break;
    case 2:  // truncate
      b.resize(below(b.size() + 1));
      break;
    case 3:  // a length or count field set to a boundary value
      write_boundary_value(b);
      break;
    case 4: {  // insert random bytes
      Bytes ins(1 + below(16));
      for (auto& x : ins) x = byte();
      b.insert(b.begin() + below(b.size() + 1), ins.begin(), ins.end());
      break;
    }
    case 5: {  // delete a range
      if (b.empty()) break;
      size_t at = below(b.size()), n = 1 + below(std::min<size_t>(16, b.size() - at));
      b.erase(b.begin() + at, b.begin() + at + n);
      break;
    }
    case 6: {  // duplicate a range (repeated fields, a second frame)
      if (b.empty()) break;
      size_t at = below(b.size()), n = 1 + below(b.size() - at);
      Bytes dup(b.begin() + at, b.begin() + at + n);
      b.insert(b.begin() + below(b.size() + 1), dup.begin(), dup.end());
      break;
    }
    case 7: {  // splice: our head, another pool entry's tail
      const Bytes& other = pool_[below(pool_.size())];
      size_t cut = below(b.size() + 1), from = below(other.size() + 1);
      b.resize(cut);
      b.insert(b.end(), other.begin() + from, other.end());
      break;
    }
    default:  // append random bytes (trailing garbage)
      for (size_t i = 0, n = 1 + below(8); i < n; ++i) b.push_back(byte());
      break;
  }
}

void Mutator::write_boundary_value(Bytes& b) {
  static const size_t kWidths[] = {1, 2, 4, 8};
  size_t w = kWidths[below(4)];
  if (b.size() < w) return;
  uint64_t v = kBoundaries[below(sizeof(kBoundaries) / sizeof(kBoundaries[0]))];
  if (below(4) == 0) v += below(3) - 1;  // and one off either side
  size_t at = below(b.size() - w + 1);
  for (size_t i = 0; i < w; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace pccl_fuzz
