#include "xla/all_reduce_async_handler.h"

#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "xla/bound_waits.h"
#include "xla/comm_registry.h"
#include "xla/ffi_support.h"
#include "xla/handler_faults.h"

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
  if (tickets->element_count() != leaves + 1) {
    return ffi::Error::InvalidArgument("PcclError: ticket count does not match operands");
  }
  // The world size rides after the tickets: the collectives run on the ring
  // they were placed on now (a later update_topology fails them instead).
  tickets->typed_data()[leaves] = comm->group_world_size();
  try {
    for (size_t i = 0; i < leaves; ++i) {
      auto in = args.get<ffi::AnyBuffer>(i);
      if (!in.has_value()) return ffi::Error::InvalidArgument("PcclError: bad buffer");
      auto dtype = to_engine_dtype(in->element_type());
      if (!dtype) return ffi::Error::InvalidArgument("PcclError: unsupported dtype");
      auto q = static_cast<Quantization>(quantization);
      if (!quantization_applies(q, *dtype)) q = Quantization::kNone;
      maybe_fail_for_testing(HandlerFault::kStart);  // as if staging memory ran out
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

ffi::Error bind_impl(ffi::Token, ffi::Buffer<ffi::S32> tickets, ffi::Result<ffi::Token>,
                     int64_t comm_handle, int64_t site) {
  size_t count = tickets.element_count();
  if (count == 0) return ffi::Error::InvalidArgument("PcclError: no tickets to wait for");
  maybe_fail_for_testing(HandlerFault::kWaitBind);  // as if the vector's allocation failed
  std::vector<uint64_t> bound(count - 1);  // the last entry is the world size
  for (size_t i = 0; i + 1 < count; ++i) bound[i] = static_cast<uint64_t>(tickets.typed_data()[i]);
  bind_wait(comm_handle, site, std::move(bound));
  return ffi::Error::Success();
}

// What one wait call's leaves share while they end, one by one, on engine
// threads: the first error and how many are still out.
struct PendingWait {
  std::mutex mu;
  size_t left = 0;
  std::optional<ffi::Error> error;
  ffi::Promise promise;
};

void leaf_ended(const std::shared_ptr<PendingWait>& wait, std::exception_ptr failure) {
  std::optional<ffi::Error> error;
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const PcclError& e) {
      error = to_ffi_error(e);
    } catch (const std::exception& e) {
      error = ffi::Error::Internal(std::string("PcclError: ") + e.what());
    }
  }
  std::lock_guard<std::mutex> lock(wait->mu);
  if (error && !wait->error) wait->error = std::move(error);
  if (--wait->left > 0) return;
  if (wait->error) {
    wait->promise.SetError(std::move(*wait->error));
    return;
  }
  wait->promise.SetAvailable();
}

ffi::Future failed(ffi::Error error) {
  ffi::Promise promise;
  ffi::Future future(promise);
  promise.SetError(std::move(error));
  return future;
}

// Asynchronous: XLA's thread returns at once and XLA carries on with
// whatever does not need the results; the future completes on the engine
// thread that ends the last leaf (results already copied into place). Its
// only buffers are the results (see bound_waits.h).
ffi::Future wait_impl(ffi::Token, ffi::Result<ffi::Token>, ffi::RemainingRets rets,
                      int64_t comm_handle, int64_t site) {
  std::optional<std::vector<uint64_t>> tickets = take_bound_wait(comm_handle, site);
  std::shared_ptr<Communicator> comm = find_communicator(comm_handle);
  if (!comm) return failed(precondition("the communicator used by this compiled function was closed"));
  if (!tickets) return failed(ffi::Error::Internal("PcclError: all_reduce_wait found no bound tickets"));
  size_t leaves = tickets->size();
  if (rets.size() != leaves) {
    return failed(ffi::Error::InvalidArgument("PcclError: result count does not match tickets"));
  }
  maybe_fail_for_testing(HandlerFault::kWait);  // as if make_shared failed
  auto wait = std::make_shared<PendingWait>();
  ffi::Future future(wait->promise);
  // One count per leaf, released as each leaf ends, plus one for the
  // hand-over, so that the promise is set only after every ticket was handed
  // over (none left dangling).
  wait->left = leaves + 1;
  for (size_t i = 0; i < leaves; ++i) {
    auto out = rets.get<ffi::AnyBuffer>(i);
    try {
      if (!out.has_value()) throw PcclError("bad result buffer");
      comm->wait_all_reduce_then((*tickets)[i], (*out)->untyped_data(), (*out)->size_bytes(),
                                 [wait](int, std::exception_ptr failure) {
                                   leaf_ended(wait, std::move(failure));
                                 });
    } catch (...) {
      leaf_ended(wait, std::current_exception());
    }
  }
  leaf_ended(wait, nullptr);  // the hand-over count
  return future;
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(AllReduceWaitBindCpuHandler, bind_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Token>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Token>()
                                  .Attr<int64_t>("comm")
                                  .Attr<int64_t>("site"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AllReduceWaitCpuHandler, wait_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Token>()
                                  .Ret<ffi::Token>()
                                  .RemainingRets()
                                  .Attr<int64_t>("comm")
                                  .Attr<int64_t>("site"));

}  // namespace pccl
