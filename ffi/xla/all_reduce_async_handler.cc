#include "xla/all_reduce_async_handler.h"

#include <string>

#include "xla/comm_registry.h"
#include "xla/ffi_support.h"

namespace ffi = xla::ffi;

namespace pccl {
namespace {

ffi::Error start_impl(ffi::Token, ffi::RemainingArgs args, ffi::Result<ffi::Token>,
                      ffi::Result<ffi::Buffer<ffi::S32>> tickets, int64_t comm_handle, int32_t op,
                      int32_t quantization) {
  std::shared_ptr<Communicator> comm = find_communicator(comm_handle);
  if (!comm) return precondition("the communicator used by this compiled function was closed");
  if (op < 0 || !reduce_op_valid(static_cast<uint8_t>(op)) || quantization < 0 ||
      !quantization_valid(static_cast<uint8_t>(quantization))) {
    return ffi::Error::InvalidArgument("PcclError: invalid op or quantization");
  }
  size_t leaves = args.size();
  if (tickets->element_count() != leaves) {
    return ffi::Error::InvalidArgument("PcclError: ticket count does not match operands");
  }
  try {
    for (size_t i = 0; i < leaves; ++i) {
      auto in = args.get<ffi::AnyBuffer>(i);
      if (!in.has_value()) return ffi::Error::InvalidArgument("PcclError: bad buffer");
      auto dtype = to_engine_dtype(in->element_type());
      if (!dtype) return ffi::Error::InvalidArgument("PcclError: unsupported dtype");
      auto q = static_cast<Quantization>(quantization);
      if (!quantization_applies(q, *dtype)) q = Quantization::kNone;
      uint64_t ticket = comm->start_all_reduce(in->untyped_data(), in->element_count(), *dtype,
                                               static_cast<ReduceOp>(op),
                                               describe_leaf(*in, i, leaves), q);
      tickets->typed_data()[i] = static_cast<int32_t>(ticket);
    }
  } catch (const PcclError& e) {
    return to_ffi_error(e);
  }
  return ffi::Error::Success();
}

ffi::Error wait_impl(ffi::Token, ffi::Buffer<ffi::S32> tickets, ffi::Result<ffi::Token>,
                     ffi::RemainingRets rets, int64_t comm_handle) {
  std::shared_ptr<Communicator> comm = find_communicator(comm_handle);
  if (!comm) return precondition("the communicator used by this compiled function was closed");
  size_t leaves = tickets.element_count();
  if (rets.size() != leaves + 1) {
    return ffi::Error::InvalidArgument("PcclError: result count does not match tickets");
  }
  int world = comm->group_world_size();
  ffi::Error first_error = ffi::Error::Success();
  // Wait for every ticket even after a failure, so none is left dangling.
  for (size_t i = 0; i < leaves; ++i) {
    auto out = rets.get<ffi::AnyBuffer>(i);
    if (!out.has_value()) return ffi::Error::InvalidArgument("PcclError: bad result buffer");
    try {
      world = comm->wait_all_reduce(static_cast<uint64_t>(tickets.typed_data()[i]),
                                    (*out)->untyped_data(), (*out)->size_bytes());
    } catch (const PcclError& e) {
      if (first_error.success()) first_error = to_ffi_error(e);
    }
  }
  if (!first_error.success()) return first_error;
  auto ws = rets.get<ffi::AnyBuffer>(leaves);
  if (!ws.has_value()) return ffi::Error::InvalidArgument("PcclError: missing world_size result");
  *static_cast<int32_t*>((*ws)->untyped_data()) = world;
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AllReduceStartCpuHandler, start_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Token>()
                                  .RemainingArgs()
                                  .Ret<ffi::Token>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("comm")
                                  .Attr<int32_t>("op")
                                  .Attr<int32_t>("quant"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AllReduceWaitCpuHandler, wait_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Token>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Token>()
                                  .RemainingRets()
                                  .Attr<int64_t>("comm"));

}  // namespace pccl
