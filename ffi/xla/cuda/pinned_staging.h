// Page-locked host buffers for the CUDA all_reduce handler: device bytes are
// copied into them, all-reduced by the engine (which works on host memory),
// and copied back. cudaMallocHost costs milliseconds, so buffers are kept
// and reused: a call takes one per leaf and gives them back when its copies
// are over. Bounded: at most kMaxCachedBytes stay cached between calls.
#pragma once
#include <cstddef>
#include <map>
#include <mutex>

namespace pccl {

class PinnedStaging {
 public:
  static constexpr size_t kMaxCachedBytes = size_t{1} << 30;

  // A page-locked buffer of at least `bytes`; throws PcclError when CUDA
  // cannot allocate it.
  void* take(size_t bytes, size_t* capacity);
  void give_back(void* buffer, size_t capacity);
  ~PinnedStaging();

 private:
  std::mutex mu_;
  std::multimap<size_t, void*> free_;  // capacity -> buffer
  size_t cached_bytes_ = 0;
};

// One staging buffer, given back however the call ends.
class StagedBuffer {
 public:
  StagedBuffer(PinnedStaging& pool, size_t bytes) : pool_(&pool) {
    data_ = pool.take(bytes, &capacity_);
  }
  ~StagedBuffer() {
    if (data_ != nullptr) pool_->give_back(data_, capacity_);
  }
  StagedBuffer(StagedBuffer&& other) noexcept
      : pool_(other.pool_), data_(other.data_), capacity_(other.capacity_) {
    other.data_ = nullptr;
  }
  StagedBuffer(const StagedBuffer&) = delete;
  StagedBuffer& operator=(const StagedBuffer&) = delete;
  StagedBuffer& operator=(StagedBuffer&&) = delete;
  void* data() const { return data_; }

 private:
  PinnedStaging* pool_;
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace pccl
