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
  std::shared_ptr<Communicator> comm = find_communicator(comm_handle);
  if (!comm) return precondition("the communicator this compiled function was traced with is closed: re-jit the function with the new Communicator (jitted functions keep the communicator they captured)");
  if (op < 0 || !reduce_op_valid(static_cast<uint8_t>(op))) {
    return ffi::Error::InvalidArgument("PcclError: invalid reduce op");
  }
  if (quantization < 0 || !quantization_valid(static_cast<uint8_t>(quantization))) {
    return ffi::Error::InvalidArgument("PcclError: invalid quantization");
  }
  size_t leaves = args.size();
  if (rets.size() != leaves + 1) {
    return ffi::Error::InvalidArgument("PcclError: result count does not match operands");
  }
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
    std::optional<DType> dtype = to_engine_dtype(in->element_type());
    if (!dtype) return ffi::Error::InvalidArgument("PcclError: unsupported dtype");
    size_t bytes = in->size_bytes();
    host.emplace_back(staging(), bytes);
    check_cuda(cudaMemcpyAsync(host.back().data(), in->untyped_data(), bytes,
                               cudaMemcpyDeviceToHost, stream),
               "copying an all_reduce operand to the host");
    auto q = static_cast<Quantization>(quantization);
    if (!quantization_applies(q, *dtype)) q = Quantization::kNone;
    calls[i] = AllReduceCall{host.back().data(), host.back().data(), in->element_count(), *dtype,
                             static_cast<ReduceOp>(op), describe_leaf(*in, i, leaves), q};
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
