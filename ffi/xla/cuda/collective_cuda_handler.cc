#include "xla/cuda/collective_cuda_handler.h"

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

ffi::Error collective_cuda_body(cudaStream_t stream, ffi::RemainingArgs& args,
                                ffi::RemainingRets& rets, const CollectiveAttrs& attrs) {
  size_t leaves = args.size();
  std::shared_ptr<Communicator> comm;
  ffi::Error checked = check_collective_call(attrs, leaves, rets.size(), &comm);
  if (checked.failure()) return checked;
  // Device -> host, every leaf, on XLA's stream (after what produced them).
  // A result of the operand's size (all_reduce, broadcast) is computed in
  // place in its staging buffer; others (all_gather, reduce_scatter) get one.
  std::vector<StagedBuffer> host_in, host_out;
  std::vector<void*> results(leaves);
  std::vector<CollectiveCall> calls(leaves);
  host_in.reserve(leaves);
  host_out.reserve(leaves);
  for (size_t i = 0; i < leaves; ++i) {
    auto in = args.get<ffi::AnyBuffer>(i);
    auto out = rets.get<ffi::AnyBuffer>(i);
    if (!in.has_value() || !out.has_value()) {
      return ffi::Error::InvalidArgument("PcclError: bad buffer");
    }
    size_t bytes = in->size_bytes();
    host_in.emplace_back(staging(), bytes);
    results[i] = host_in.back().data();
    if ((*out)->size_bytes() != bytes) {
      host_out.emplace_back(staging(), (*out)->size_bytes());
      results[i] = host_out.back().data();
    }
    ffi::Error leaf = collective_leaf(attrs, *in, host_in.back().data(), results[i], i, leaves,
                                      &calls[i]);
    if (leaf.failure()) return leaf;
    if ((*out)->size_bytes() != output_bytes(calls[i])) {
      return ffi::Error::InvalidArgument("PcclError: a result buffer has the wrong size");
    }
    check_cuda(cudaMemcpyAsync(host_in.back().data(), in->untyped_data(), bytes,
                               cudaMemcpyDeviceToHost, stream),
               "copying a collective's operand to the host");
  }
  check_cuda(cudaStreamSynchronize(stream), "waiting for the operands' copies");
  // The ring, on host memory, exactly as the CPU handler runs it.
  int world = comm->group_world_size();
  if (!calls.empty()) world = comm->run_all(calls);
  // Host -> device: the results, and the world size (device int32s too).
  auto ws = rets.get<ffi::AnyBuffer>(leaves);
  if (!ws.has_value()) return ffi::Error::InvalidArgument("PcclError: missing world_size result");
  size_t facts_bytes = (*ws)->size_bytes();
  StagedBuffer world_host(staging(), 2 * sizeof(int32_t));
  // int32 world, or int32[2] (world, rank): see collective_handler.h.
  int32_t* words = static_cast<int32_t*>(world_host.data());
  words[0] = world;
  words[1] = comm->rank();
  if (facts_bytes != sizeof(int32_t) && facts_bytes != 2 * sizeof(int32_t)) {
    return ffi::Error::InvalidArgument("PcclError: the world size result has the wrong size");
  }
  for (size_t i = 0; i < leaves; ++i) {
    auto out = rets.get<ffi::AnyBuffer>(i);
    check_cuda(cudaMemcpyAsync((*out)->untyped_data(), results[i], (*out)->size_bytes(),
                               cudaMemcpyHostToDevice, stream),
               "copying a collective's result to the device");
  }
  check_cuda(cudaMemcpyAsync((*ws)->untyped_data(), world_host.data(), facts_bytes,
                             cudaMemcpyHostToDevice, stream),
             "copying the world size to the device");
  // The staging buffers go back to the pool when this returns: the copies
  // out of them must be over first.
  check_cuda(cudaStreamSynchronize(stream), "waiting for the results' copies");
  return ffi::Error::Success();
}

ffi::Error collective_cuda_impl(cudaStream_t stream, ffi::Token, ffi::RemainingArgs args,
                                ffi::Result<ffi::Token>, ffi::RemainingRets rets, int64_t comm,
                                int32_t kind, int32_t op, int32_t root, int32_t world,
                                int32_t quant) {
  XlaOrderScope order;
  try {
    return collective_cuda_body(stream, args, rets,
                                CollectiveAttrs{comm, kind, op, root, world, quant});
  } catch (...) {
    return current_exception_error();  // nothing may cross the FFI boundary
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    CollectiveCudaHandler, collective_cuda_impl,
    bind_collective_call(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()));

}  // namespace pccl
