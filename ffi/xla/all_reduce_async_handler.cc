#include "xla/all_reduce_async_handler.h"

#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "xla/bound_waits.h"
#include "xla/comm_registry.h"
#include "xla/completion_executor.h"
#include "xla/ffi_support.h"
#include "xla/handler_faults.h"
#include "xla/start_wait_bindings.h"
#include "xla/ticket_words.h"
#include "xla/xla_order.h"

namespace ffi = xla::ffi;

namespace pccl {
namespace {

ffi::Error start_body(ffi::RemainingArgs& args, ffi::Result<ffi::Buffer<ffi::S32>>& tickets,
                      int64_t comm_handle, int32_t op, int32_t quantization) {
  size_t leaves = args.size();
  std::shared_ptr<Communicator> comm;
  ffi::Error checked = check_start_call(comm_handle, op, quantization, leaves,
                                        tickets->element_count(), &comm);
  if (checked.failure()) return checked;
  int32_t* words = tickets->typed_data();
  // The world size rides after the tickets: the collectives run on the ring
  // they were placed on now (a later update_topology fails them instead).
  words[kTicketWords * leaves] = comm->group_world_size();
  for (size_t i = 0; i < leaves; ++i) {
    auto in = args.get<ffi::AnyBuffer>(i);
    if (!in.has_value()) return ffi::Error::InvalidArgument("PcclError: bad buffer");
    CollectiveCall call;
    ffi::Error leaf = start_leaf(*in, in->untyped_data(), i, leaves, op, quantization, &call);
    if (leaf.failure()) return leaf;
    maybe_fail_for_testing(HandlerFault::kStart);  // as if staging memory ran out
    uint64_t ticket = comm->start(call);
    store_ticket(words + kTicketWords * i, ticket);
  }
  return ffi::Error::Success();
}

ffi::Error start_impl(ffi::Token, ffi::RemainingArgs args, ffi::Result<ffi::Token>,
                      ffi::Result<ffi::Buffer<ffi::S32>> tickets, int64_t comm_handle, int32_t op,
                      int32_t quantization) {
  XlaOrderScope order;
  try {
    return start_body(args, tickets, comm_handle, op, quantization);
  } catch (...) {
    return current_exception_error();
  }
}

ffi::Error bind_impl(ffi::Token, ffi::Buffer<ffi::S32> tickets, ffi::Result<ffi::Token>,
                     int64_t comm_handle, int64_t site) {
  XlaOrderScope order;
  try {
    size_t leaves = ticket_leaves(tickets.element_count());
    if (leaves == 0) return ffi::Error::InvalidArgument("PcclError: no tickets to wait for");
    maybe_fail_for_testing(HandlerFault::kWaitBind);  // as if the vector's allocation failed
    std::vector<uint64_t> bound(leaves);
    for (size_t i = 0; i < leaves; ++i) {
      bound[i] = load_ticket(tickets.typed_data() + kTicketWords * i);
    }
    bind_wait(comm_handle, site, std::move(bound));
    return ffi::Error::Success();
  } catch (...) {
    return current_exception_error();
  }
}

// What one wait call's leaves share while they end, one by one, on engine
// threads: the first error, how many are still out, and where the future is
// completed (never on an engine thread: see completion_executor.h).
struct PendingWait {
  std::mutex mu;
  size_t left = 0;
  std::optional<ffi::Error> error;
  ffi::Promise promise;
  std::shared_ptr<CompletionExecutor> completions;
};

// Counts one leaf (or the hand-over) as ended; true for the last count, whose
// caller then completes the future. Never throws: engine threads call it.
bool count_down(PendingWait& wait, std::exception_ptr failure) noexcept {
  std::optional<ffi::Error> error;
  if (failure) error = exception_error(std::move(failure));
  std::lock_guard<std::mutex> lock(wait.mu);
  if (error && !wait.error) wait.error = std::move(error);
  return --wait.left == 0;
}

// Completing the future runs the rest of XLA's program on this thread.
void complete(PendingWait& wait) {
  xla_order_release();  // what XLA runs next sees the results written
  if (wait.error) {
    wait.promise.SetError(std::move(*wait.error));
    return;
  }
  wait.promise.SetAvailable();
}

ffi::Future failed(ffi::Error error) {
  ffi::Promise promise;
  ffi::Future future(promise);
  promise.SetError(std::move(error));
  return future;
}

// Asynchronous: XLA's thread returns at once and XLA carries on with
// whatever does not need the results. The engine thread that ends the last
// leaf (results already copied into place) hands the completion to the
// communicator's completion executor; if every leaf had ended before the
// hand-over, the future completes here. Its only buffers are the results
// (see bound_waits.h).
ffi::Future wait_body(ffi::RemainingRets& rets, int64_t comm_handle, int64_t site) {
  std::optional<std::vector<uint64_t>> tickets = take_bound_wait(comm_handle, site);
  std::shared_ptr<Communicator> comm = find_communicator(comm_handle);
  std::shared_ptr<CompletionExecutor> completions = find_completions(comm_handle);
  if (!comm || !completions) return failed(closed_before_wait());
  if (!tickets) return failed(ffi::Error::Internal("PcclError: all_reduce_wait found no bound tickets"));
  size_t leaves = tickets->size();
  if (rets.size() != leaves) {
    return failed(ffi::Error::InvalidArgument("PcclError: result count does not match tickets"));
  }
  maybe_fail_for_testing(HandlerFault::kWait);  // as if make_shared failed
  auto wait = std::make_shared<PendingWait>();
  wait->completions = std::move(completions);
  ffi::Future future(wait->promise);
  // One count per leaf, released as each leaf ends, plus one for the
  // hand-over, so that the promise is set only after every ticket was handed
  // over (none left dangling), and a leaf that ends at once, on this thread,
  // is never the last.
  wait->left = leaves + 1;
  auto leaf_ended = [wait](int, std::exception_ptr failure) {
    if (!count_down(*wait, std::move(failure))) return;
    std::shared_ptr<PendingWait> last = wait;
    last->completions->post([last] { complete(*last); });
  };
  // Nothing below throws out of the loop: once a leaf is handed over, the
  // engine writes into XLA's result buffer, so this call must not fail.
  for (size_t i = 0; i < leaves; ++i) {
    try {
      auto out = rets.get<ffi::AnyBuffer>(i);
      if (!out.has_value()) throw PcclError("bad result buffer");
      comm->wait_then((*tickets)[i], (*out)->untyped_data(), (*out)->size_bytes(), leaf_ended);
    } catch (...) {
      count_down(*wait, std::current_exception());  // never the last: the hand-over is held
    }
  }
  if (count_down(*wait, nullptr)) complete(*wait);  // every leaf had ended already
  return future;
}

ffi::Future wait_impl(ffi::Token, ffi::Result<ffi::Token>, ffi::RemainingRets rets,
                      int64_t comm_handle, int64_t site) {
  XlaOrderScope order;
  try {
    return wait_body(rets, comm_handle, site);
  } catch (...) {
    // failed() allocates a promise: if even that throws, memory is gone and
    // no future can be returned at all.
    return failed(current_exception_error());
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AllReduceStartCpuHandler, start_impl,
                              bind_start_call(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(AllReduceWaitBindCpuHandler, bind_impl,
                              bind_wait_bind_call(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(AllReduceWaitCpuHandler, wait_impl,
                              bind_wait_call(ffi::Ffi::Bind()));

}  // namespace pccl
