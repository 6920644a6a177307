#include "xla/cuda/all_reduce_cuda_handler.h"

#include <cuda_runtime_api.h>

#include <optional>
#include <string>
#include <vector>

#include "common/errors.h"
#include "xla/comm_registry.h"
#include "xla/cuda/pinned_staging.h"
#include "xla/ffi_support.h"
#include "xla/xla_order.h"

namespace ffi = xla::ffi;

namespace pccl {
namespace {

PinnedStaging& staging() {
  static PinnedStaging pool;  // lives as long as the process: buffers are reused across calls
  return pool;
}

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw PcclError(std::string(what) + ": " + cudaGetErrorString(err));
}

ffi::Error all_reduce_cuda_body(cudaStream_t stream, ffi::RemainingArgs& args,
                                ffi::RemainingRets& rets, int64_t comm_handle, int32_t op,
                                int32_t quantization) {
  size_t leaves = args.size();
  std::shared_ptr<Communicator> comm;
  ffi::Error checked = check_all_reduce_call(comm_handle, op, quantization, leaves, rets.size(), &comm);
  if (checked.failure()) return checked;
  // Device -> host, every leaf, on XLA's stream (after what produced them).
  std::vector<StagedBuffer> host;
  std::vector<AllReduceCall> calls(leaves);
  host.reserve(leaves);
  for (size_t i = 0; i < leaves; ++i) {
    auto in = args.get<ffi::AnyBuffer>(i);
    auto out = rets.get<ffi::AnyBuffer>(i);
    if (!in.has_value() || !out.has_value()) {
      return ffi::Error::InvalidArgument("PcclError: bad buffer");
    }
    size_t bytes = in->size_bytes();
    host.emplace_back(staging(), bytes);
    ffi::Error leaf = all_reduce_leaf(*in, host.back().data(), host.back().data(), i, leaves, op,
                                      quantization, &calls[i]);
    if (leaf.failure()) return leaf;
    check_cuda(cudaMemcpyAsync(host.back().data(), in->untyped_data(), bytes,
                               cudaMemcpyDeviceToHost, stream),
               "copying an all_reduce operand to the host");
  }
  check_cuda(cudaStreamSynchronize(stream), "waiting for the operands' copies");
  // The ring, on host memory, exactly as the CPU handler runs it.
  int world = comm->group_world_size();
  if (!calls.empty()) world = comm->all_reduce_concurrently(calls);
  // Host -> device: the results, and the world size (a device int32 too).
  StagedBuffer world_host(staging(), sizeof(int32_t));
  *static_cast<int32_t*>(world_host.data()) = world;
  for (size_t i = 0; i < leaves; ++i) {
    auto out = rets.get<ffi::AnyBuffer>(i);
    check_cuda(cudaMemcpyAsync((*out)->untyped_data(), host[i].data(), (*out)->size_bytes(),
                               cudaMemcpyHostToDevice, stream),
               "copying an all_reduce result to the device");
  }
  auto ws = rets.get<ffi::AnyBuffer>(leaves);
  if (!ws.has_value()) return ffi::Error::InvalidArgument("PcclError: missing world_size result");
  check_cuda(cudaMemcpyAsync((*ws)->untyped_data(), world_host.data(), sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream),
             "copying the world size to the device");
  // The staging buffers go back to the pool when this returns: the copies
  // out of them must be over first.
  check_cuda(cudaStreamSynchronize(stream), "waiting for the results' copies");
  return ffi::Error::Success();
}

ffi::Error all_reduce_cuda_impl(cudaStream_t stream, ffi::Token, ffi::RemainingArgs args,
                                ffi::Result<ffi::Token>, ffi::RemainingRets rets,
                                int64_t comm_handle, int32_t op, int32_t quantization) {
  XlaOrderScope order;
  try {
    return all_reduce_cuda_body(stream, args, rets, comm_handle, op, quantization);
  } catch (...) {
    return current_exception_error();  // nothing may cross the FFI boundary
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AllReduceCudaHandler, all_reduce_cuda_impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Token>()
                                  .RemainingArgs()
                                  .Ret<ffi::Token>()
                                  .RemainingRets()
                                  .Attr<int64_t>("comm")
                                  .Attr<int32_t>("op")
                                  .Attr<int32_t>("quant"));

}  // namespace pccl
