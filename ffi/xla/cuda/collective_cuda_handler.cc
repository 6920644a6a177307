#include "xla/cuda/collective_cuda_handler.h"

#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include "xla/cuda/cuda_stream_copies.h"
#include "xla/ffi_support.h"
#include "xla/staged_leaves.h"
#include "xla/xla_order.h"

namespace ffi = xla::ffi;

namespace pccl {
namespace {

ffi::Error collective_cuda_body(cudaStream_t stream, ffi::RemainingArgs& args,
                                ffi::RemainingRets& rets, const CollectiveAttrs& attrs) {
  size_t leaves = args.size();
  std::shared_ptr<Communicator> comm;
  ffi::Error checked = check_collective_call(attrs, leaves, rets.size(), &comm);
  if (checked.failure()) return checked;
  std::vector<CollectiveCall> calls(leaves);
  std::vector<DeviceResult> results(leaves);
  for (size_t i = 0; i < leaves; ++i) {
    auto in = args.get<ffi::AnyBuffer>(i);
    auto out = rets.get<ffi::AnyBuffer>(i);
    if (!in.has_value() || !out.has_value()) {
      return ffi::Error::InvalidArgument("PcclError: bad buffer");
    }
    // in: device memory, staged by run_staged; out: where the result goes back.
    ffi::Error leaf = collective_leaf(attrs, *in, in->untyped_data(), nullptr, i, leaves, &calls[i]);
    if (leaf.failure()) return leaf;
    if ((*out)->size_bytes() != output_bytes(calls[i])) {
      return ffi::Error::InvalidArgument("PcclError: a result buffer has the wrong size");
    }
    results[i] = {(*out)->untyped_data(), (*out)->size_bytes()};
  }
  auto ws = rets.get<ffi::AnyBuffer>(leaves);
  if (!ws.has_value()) return ffi::Error::InvalidArgument("PcclError: missing world_size result");
  size_t facts_bytes = (*ws)->size_bytes();
  // int32 world, or int32[2] (world, rank): see collective_handler.h.
  if (facts_bytes != sizeof(int32_t) && facts_bytes != 2 * sizeof(int32_t)) {
    return ffi::Error::InvalidArgument("PcclError: the world size result has the wrong size");
  }
  // Device -> host on XLA's stream (after what produced the operands), each
  // leaf's ring as soon as its copy is over, each result back as soon as it
  // is in (xla/staged_leaves.h).
  CudaStreamCopies device(stream);
  int world = calls.empty() ? comm->group_world_size() : run_staged(*comm, calls, results, device);
  int32_t* words = static_cast<int32_t*>(device.staging(2 * sizeof(int32_t)));
  words[0] = world;
  words[1] = comm->rank();
  device.to_device((*ws)->untyped_data(), words, facts_bytes);
  // The staging buffers go back to the pool when this returns: the copies
  // out of them must be over first.
  device.finish();
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
