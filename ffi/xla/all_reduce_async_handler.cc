#include "xla/all_reduce_async_handler.h"

#include <exception>
#include <memory>
#include <mutex>
#include <optional>
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

// What one wait call's leaves share while they end, one by one, on engine
// threads: the first error, the world size, and how many are still out.
struct PendingWait {
  std::mutex mu;
  size_t left = 0;
  int world = 0;
  std::optional<ffi::Error> error;
  int32_t* world_out = nullptr;
  ffi::Promise promise;
};

// `world` is empty for the hand-over count (no leaf behind it).
void leaf_ended(const std::shared_ptr<PendingWait>& wait, std::optional<int> world,
                std::exception_ptr failure) {
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
  if (!failure && world) wait->world = *world;
  if (--wait->left > 0) return;
  if (wait->error) {
    wait->promise.SetError(std::move(*wait->error));
    return;
  }
  *wait->world_out = wait->world;
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
// thread that ends the last leaf (results already copied into place).
ffi::Future wait_impl(ffi::Token, ffi::Buffer<ffi::S32> tickets, ffi::Result<ffi::Token>,
                      ffi::RemainingRets rets, int64_t comm_handle) {
  std::shared_ptr<Communicator> comm = find_communicator(comm_handle);
  if (!comm) return failed(precondition("the communicator used by this compiled function was closed"));
  size_t leaves = tickets.element_count();
  if (rets.size() != leaves + 1) {
    return failed(ffi::Error::InvalidArgument("PcclError: result count does not match tickets"));
  }
  auto ws = rets.get<ffi::AnyBuffer>(leaves);
  if (!ws.has_value()) {
    return failed(ffi::Error::InvalidArgument("PcclError: missing world_size result"));
  }
  auto wait = std::make_shared<PendingWait>();
  wait->world = comm->group_world_size();
  wait->world_out = static_cast<int32_t*>((*ws)->untyped_data());
  ffi::Future future(wait->promise);
  if (leaves == 0) {
    *wait->world_out = wait->world;
    wait->promise.SetAvailable();
    return future;
  }
  // One count per leaf, released as each leaf ends, so that the promise is
  // set only after every ticket was handed over (none left dangling).
  wait->left = leaves + 1;
  for (size_t i = 0; i < leaves; ++i) {
    auto out = rets.get<ffi::AnyBuffer>(i);
    uint64_t ticket = static_cast<uint64_t>(tickets.typed_data()[i]);
    try {
      if (!out.has_value()) throw PcclError("bad result buffer");
      comm->wait_all_reduce_then(ticket, (*out)->untyped_data(), (*out)->size_bytes(),
                                 [wait](int world, std::exception_ptr failure) {
                                   leaf_ended(wait, world, std::move(failure));
                                 });
    } catch (...) {
      leaf_ended(wait, std::nullopt, std::current_exception());
    }
  }
  leaf_ended(wait, std::nullopt, nullptr);  // the hand-over count
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(AllReduceWaitCpuHandler, wait_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Token>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Token>()
                                  .RemainingRets()
                                  .Attr<int64_t>("comm"));

}  // namespace pccl
