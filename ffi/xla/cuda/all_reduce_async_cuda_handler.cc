#include "xla/cuda/all_reduce_async_cuda_handler.h"

#include <cuda_runtime_api.h>

#include <memory>
#include <optional>
#include <vector>

#include "xla/bound_waits.h"
#include "xla/comm_registry.h"
#include "xla/cuda/cuda_stream_copies.h"
#include "xla/ffi_support.h"
#include "xla/staged_leaves.h"
#include "xla/start_wait_bindings.h"
#include "xla/ticket_words.h"
#include "xla/xla_order.h"

namespace ffi = xla::ffi;

namespace pccl {
namespace {

ffi::Error start_body(cudaStream_t stream, ffi::RemainingArgs& args,
                      ffi::Result<ffi::Buffer<ffi::S32>>& tickets, int64_t comm_handle,
                      int32_t op, int32_t quantization) {
  size_t leaves = args.size();
  std::shared_ptr<Communicator> comm;
  ffi::Error checked = check_start_call(comm_handle, op, quantization, leaves,
                                        tickets->element_count(), &comm);
  if (checked.failure()) return checked;
  std::vector<CollectiveCall> calls(leaves);
  for (size_t i = 0; i < leaves; ++i) {
    auto in = args.get<ffi::AnyBuffer>(i);
    if (!in.has_value()) return ffi::Error::InvalidArgument("PcclError: bad buffer");
    ffi::Error leaf = start_leaf(*in, in->untyped_data(), i, leaves, op, quantization, &calls[i]);
    if (leaf.failure()) return leaf;
  }
  CudaStreamCopies device(stream);
  size_t bytes = tickets->size_bytes();
  auto* words = static_cast<int32_t*>(device.staging(bytes));
  // As on the CPU: the world size of the ring the leaves are placed on now.
  words[kTicketWords * leaves] = comm->group_world_size();
  std::vector<uint64_t> started;
  start_staged(*comm, calls, device, started);
  for (size_t i = 0; i < leaves; ++i) store_ticket(words + kTicketWords * i, started[i]);
  device.to_device(tickets->untyped_data(), words, bytes);
  device.finish();
  return ffi::Error::Success();
}

ffi::Error start_impl(cudaStream_t stream, ffi::Token, ffi::RemainingArgs args,
                      ffi::Result<ffi::Token>, ffi::Result<ffi::Buffer<ffi::S32>> tickets,
                      int64_t comm_handle, int32_t op, int32_t quantization) {
  XlaOrderScope order;
  try {
    return start_body(stream, args, tickets, comm_handle, op, quantization);
  } catch (...) {
    return current_exception_error();  // nothing may cross the FFI boundary
  }
}

ffi::Error bind_impl(cudaStream_t stream, ffi::Token, ffi::Buffer<ffi::S32> tickets,
                     ffi::Result<ffi::Token>, int64_t comm_handle, int64_t site) {
  XlaOrderScope order;
  try {
    size_t leaves = ticket_leaves(tickets.element_count());
    if (leaves == 0) return ffi::Error::InvalidArgument("PcclError: no tickets to wait for");
    CudaStreamCopies device(stream);
    auto* words = static_cast<int32_t*>(device.staging(tickets.size_bytes()));
    device.wait_copied(device.to_host(words, tickets.untyped_data(), tickets.size_bytes()));
    std::vector<uint64_t> bound(leaves);
    for (size_t i = 0; i < leaves; ++i) bound[i] = load_ticket(words + kTicketWords * i);
    bind_wait(comm_handle, site, std::move(bound));
    return ffi::Error::Success();
  } catch (...) {
    return current_exception_error();
  }
}

ffi::Error wait_body(cudaStream_t stream, ffi::RemainingRets& rets, int64_t comm_handle,
                     int64_t site) {
  std::optional<std::vector<uint64_t>> tickets = take_bound_wait(comm_handle, site);
  std::shared_ptr<Communicator> comm = find_communicator(comm_handle);
  if (!comm) return closed_before_wait();
  if (!tickets) return ffi::Error::Internal("PcclError: all_reduce_wait found no bound tickets");
  if (rets.size() != tickets->size()) {
    return ffi::Error::InvalidArgument("PcclError: result count does not match tickets");
  }
  std::vector<DeviceResult> results(rets.size());
  for (size_t i = 0; i < rets.size(); ++i) {
    auto out = rets.get<ffi::AnyBuffer>(i);
    if (!out.has_value()) return ffi::Error::InvalidArgument("PcclError: bad result buffer");
    results[i] = {(*out)->untyped_data(), (*out)->size_bytes()};
  }
  CudaStreamCopies device(stream);
  wait_staged(*comm, *tickets, results, device);
  return ffi::Error::Success();
}

ffi::Error wait_impl(cudaStream_t stream, ffi::Token, ffi::Result<ffi::Token>,
                     ffi::RemainingRets rets, int64_t comm_handle, int64_t site) {
  XlaOrderScope order;
  try {
    return wait_body(stream, rets, comm_handle, site);
  } catch (...) {
    return current_exception_error();
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AllReduceStartCudaHandler, start_impl,
                              bind_start_call(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(AllReduceWaitBindCudaHandler, bind_impl,
                              bind_wait_bind_call(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(AllReduceWaitCudaHandler, wait_impl,
                              bind_wait_call(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()));

}  // namespace pccl
