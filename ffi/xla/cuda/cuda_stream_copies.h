// DeviceCopies (xla/staged_leaves.h) on XLA's CUDA stream: staging from the
// process's pool of page-locked buffers, each device -> host copy followed
// by an event that its wait blocks on (the thread sleeps: the engine's
// threads need the cores), everything in stream order after the kernels
// that produced the operands. Going away waits for the stream: a copy still
// queued there reads or writes the staging buffers it gives back.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <deque>
#include <vector>

#include "xla/cuda/pinned_staging.h"
#include "xla/staged_leaves.h"

namespace pccl {

// Throws PcclError("what: CUDA's reason") unless err is cudaSuccess.
void check_cuda(cudaError_t err, const char* what);

// The process's staging pool: buffers are reused across calls.
PinnedStaging& pinned_staging();

class CudaStreamCopies final : public DeviceCopies {
 public:
  explicit CudaStreamCopies(cudaStream_t stream) : stream_(stream) {}
  ~CudaStreamCopies() override;
  CudaStreamCopies(const CudaStreamCopies&) = delete;
  CudaStreamCopies& operator=(const CudaStreamCopies&) = delete;

  void* staging(size_t bytes) override;
  size_t to_host(void* host, const void* device, size_t bytes) override;
  void wait_copied(size_t copy) override;
  void to_device(void* device, const void* host, size_t bytes) override;
  void finish() override;

 private:
  cudaStream_t stream_;
  std::deque<StagedBuffer> buffers_;  // a deque: taking one never moves the others
  std::vector<cudaEvent_t> copied_;   // one per device -> host copy
};

}  // namespace pccl
