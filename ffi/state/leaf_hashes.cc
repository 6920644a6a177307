#include "state/leaf_hashes.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "common/content_hash.h"

namespace pccl {
namespace {

constexpr uint64_t kParallelAbove = 16u << 20;  // below this, threads cost more than they save
constexpr unsigned kMaxThreads = 8;

}  // namespace

std::vector<uint64_t> hash_leaves(const std::vector<ConstSpan>& leaves) {
  std::vector<uint64_t> out(leaves.size());
  uint64_t total = 0;
  for (const ConstSpan& l : leaves) total += l.size;
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  size_t threads = std::min<size_t>({cores, kMaxThreads, leaves.size()});
  if (total < kParallelAbove || threads < 2) {
    for (size_t i = 0; i < leaves.size(); ++i) out[i] = xxh64(leaves[i].data, leaves[i].size);
    return out;
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < leaves.size(); i = next++) out[i] = xxh64(leaves[i].data, leaves[i].size);
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  return out;
}

}  // namespace pccl
