#include "xla/cuda/cuda_stream_copies.h"

#include <string>

#include "common/errors.h"

namespace pccl {

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw PcclError(std::string(what) + ": " + cudaGetErrorString(err));
}

PinnedStaging& pinned_staging() {
  static PinnedStaging pool;  // lives as long as the process
  return pool;
}

CudaStreamCopies::~CudaStreamCopies() {
  // Errors are the call's to report (finish() throws them); here only the
  // buffers' safety matters.
  cudaStreamSynchronize(stream_);
  for (cudaEvent_t e : copied_) cudaEventDestroy(e);
}

void* CudaStreamCopies::staging(size_t bytes) {
  buffers_.emplace_back(pinned_staging(), bytes);
  return buffers_.back().data();
}

size_t CudaStreamCopies::to_host(void* host, const void* device, size_t bytes) {
  check_cuda(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_),
             "copying a collective's operand to the host");
  cudaEvent_t done = nullptr;
  check_cuda(cudaEventCreateWithFlags(&done, cudaEventDisableTiming | cudaEventBlockingSync),
             "creating a CUDA event");
  copied_.push_back(done);
  check_cuda(cudaEventRecord(done, stream_), "recording a CUDA event");
  return copied_.size() - 1;
}

void CudaStreamCopies::wait_copied(size_t copy) {
  if (copy >= copied_.size()) throw PcclError("waiting for a copy that was never queued");
  check_cuda(cudaEventSynchronize(copied_[copy]), "waiting for an operand's copy to the host");
}

void CudaStreamCopies::to_device(void* device, const void* host, size_t bytes) {
  check_cuda(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_),
             "copying a collective's result to the device");
}

void CudaStreamCopies::finish() {
  check_cuda(cudaStreamSynchronize(stream_), "waiting for the copies to and from the device");
}

}  // namespace pccl
