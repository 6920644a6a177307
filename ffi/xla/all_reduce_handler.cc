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
    std::optional<DType> dtype = to_engine_dtype(in->element_type());
    if (!dtype) return ffi::Error::InvalidArgument("PcclError: unsupported dtype");
    // Quantization is a per-call choice, applied to the floating leaves only.
    auto q = static_cast<Quantization>(quantization);
    if (!quantization_applies(q, *dtype)) q = Quantization::kNone;
    calls[i] = AllReduceCall{in->untyped_data(), (*out)->untyped_data(), in->element_count(),
                             *dtype, static_cast<ReduceOp>(op), describe_leaf(*in, i, leaves), q};
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
