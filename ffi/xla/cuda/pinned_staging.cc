#include "xla/cuda/pinned_staging.h"

#include <cuda_runtime_api.h>

#include <string>

#include "common/errors.h"

namespace pccl {

namespace {
// Capacities in powers of two from 64 KiB: a reused buffer fits calls of
// similar size, and the cache never holds more than twice what was asked.
size_t rounded(size_t bytes) {
  size_t capacity = size_t{64} << 10;
  while (capacity < bytes) capacity <<= 1;
  return capacity;
}
}  // namespace

void* PinnedStaging::take(size_t bytes, size_t* capacity) {
  size_t want = rounded(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.lower_bound(want);
    if (it != free_.end() && it->first == want) {
      void* buffer = it->second;
      *capacity = it->first;
      cached_bytes_ -= it->first;
      free_.erase(it);
      return buffer;
    }
  }
  void* buffer = nullptr;
  cudaError_t err = cudaMallocHost(&buffer, want);
  if (err != cudaSuccess) {
    throw PcclError("cannot allocate " + std::to_string(want) +
                    " bytes of page-locked host memory for staging: " + cudaGetErrorString(err));
  }
  *capacity = want;
  return buffer;
}

void PinnedStaging::give_back(void* buffer, size_t capacity) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cached_bytes_ + capacity <= kMaxCachedBytes) {
      free_.emplace(capacity, buffer);
      cached_bytes_ += capacity;
      return;
    }
  }
  cudaFreeHost(buffer);
}

PinnedStaging::~PinnedStaging() {
  for (auto& [capacity, buffer] : free_) cudaFreeHost(buffer);
}

}  // namespace pccl
