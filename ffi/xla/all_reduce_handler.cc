#include "xla/all_reduce_handler.h"

#include <optional>
#include <string>
#include <vector>

#include "common/errors.h"
#include "xla/comm_registry.h"
#include "xla/ffi_support.h"
#include "xla/handler_faults.h"
#include "xla/xla_order.h"

namespace ffi = xla::ffi;

namespace pccl {
namespace {

ffi::Error all_reduce_body(ffi::RemainingArgs& args, ffi::RemainingRets& rets,
                           int64_t comm_handle, int32_t op, int32_t quantization) {
  size_t leaves = args.size();
  std::shared_ptr<Communicator> comm;
  ffi::Error checked = check_all_reduce_call(comm_handle, op, quantization, leaves, rets.size(), &comm);
  if (checked.failure()) return checked;
  int world = comm->group_world_size();
  // Every leaf at once, in place: XLA keeps the buffers alive for this call,
  // and the communicator waits for all of them before it returns.
  maybe_fail_for_testing(HandlerFault::kAllReduce);  // as if the vector's allocation failed
  std::vector<AllReduceCall> calls(leaves);
  for (size_t i = 0; i < leaves; ++i) {
    auto in = args.get<ffi::AnyBuffer>(i);
    auto out = rets.get<ffi::AnyBuffer>(i);
    if (!in.has_value() || !out.has_value()) {
      return ffi::Error::InvalidArgument("PcclError: bad buffer");
    }
    ffi::Error leaf = all_reduce_leaf(*in, in->untyped_data(), (*out)->untyped_data(), i, leaves,
                                      op, quantization, &calls[i]);
    if (leaf.failure()) return leaf;
  }
  if (!calls.empty()) world = comm->all_reduce_concurrently(calls);
  auto ws = rets.get<ffi::AnyBuffer>(leaves);
  if (!ws.has_value()) return ffi::Error::InvalidArgument("PcclError: missing world_size result");
  *static_cast<int32_t*>((*ws)->untyped_data()) = world;
  return ffi::Error::Success();
}

ffi::Error all_reduce_impl(ffi::Token, ffi::RemainingArgs args, ffi::Result<ffi::Token>,
                           ffi::RemainingRets rets, int64_t comm_handle, int32_t op,
                           int32_t quantization) {
  XlaOrderScope order;
  try {
    return all_reduce_body(args, rets, comm_handle, op, quantization);
  } catch (...) {
    return current_exception_error();  // nothing may cross the FFI boundary
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AllReduceCpuHandler, all_reduce_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Token>()
                                  .RemainingArgs()
                                  .Ret<ffi::Token>()
                                  .RemainingRets()
                                  .Attr<int64_t>("comm")
                                  .Attr<int32_t>("op")
                                  .Attr<int32_t>("quant"));

}  // namespace pccl
