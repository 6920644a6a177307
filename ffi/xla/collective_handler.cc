#include "xla/collective_handler.h"

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

ffi::Error collective_body(ffi::RemainingArgs& args, ffi::RemainingRets& rets,
                           const CollectiveAttrs& attrs) {
  size_t leaves = args.size();
  std::shared_ptr<Communicator> comm;
  ffi::Error checked = check_collective_call(attrs, leaves, rets.size(), &comm);
  if (checked.failure()) return checked;
  int world = comm->group_world_size();
  // Every leaf at once, over XLA's buffers: XLA keeps them alive for this
  // call, and the communicator waits for all of them before it returns.
  maybe_fail_for_testing(HandlerFault::kAllReduce);  // as if the vector's allocation failed
  std::vector<CollectiveCall> calls(leaves);
  for (size_t i = 0; i < leaves; ++i) {
    auto in = args.get<ffi::AnyBuffer>(i);
    auto out = rets.get<ffi::AnyBuffer>(i);
    if (!in.has_value() || !out.has_value()) {
      return ffi::Error::InvalidArgument("PcclError: bad buffer");
    }
    ffi::Error leaf = collective_leaf(attrs, *in, in->untyped_data(), (*out)->untyped_data(), i,
                                      leaves, &calls[i]);
    if (leaf.failure()) return leaf;
    if ((*out)->size_bytes() != output_bytes(calls[i])) {
      return ffi::Error::InvalidArgument("PcclError: a result buffer has the wrong size");
    }
  }
  if (!calls.empty()) world = comm->run_all(calls);
  auto ws = rets.get<ffi::AnyBuffer>(leaves);
  if (!ws.has_value()) return ffi::Error::InvalidArgument("PcclError: missing world_size result");
  return write_group_facts(**ws, world, comm->rank());
}

ffi::Error collective_impl(ffi::Token, ffi::RemainingArgs args, ffi::Result<ffi::Token>,
                           ffi::RemainingRets rets, int64_t comm, int32_t kind, int32_t op,
                           int32_t root, int32_t world, int32_t quant) {
  XlaOrderScope order;
  try {
    return collective_body(args, rets, CollectiveAttrs{comm, kind, op, root, world, quant});
  } catch (...) {
    return current_exception_error();  // nothing may cross the FFI boundary
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CollectiveCpuHandler, collective_impl,
                              bind_collective_call(ffi::Ffi::Bind()));

}  // namespace pccl
