// XLA FFI handlers of all_reduce_start / all_reduce_wait for arrays on a CUDA
// GPU (built with -DJAX_PCCL_CUDA=ON): the same calls as the CPU handlers
// (all_reduce_async_handler.h), so ops/all_reduce_async.py lowers both alike.
//   start:     copies the leaves to page-locked host memory on XLA's stream,
//              starts each leaf's collective as soon as its own copy is over
//              (the engine keeps a copy of its input) and writes the tickets
//              to the device; returns once they are there.
//   wait_bind: reads the tickets back to the host and binds them to the site.
//   wait:      synchronous (XLA's GPU runtime runs FFI calls in stream
//              order): copies each result to the device as soon as its
//              collective ends, returns once every copy back is over. The
//              GPU keeps running the kernels queued before it meanwhile, and
//              the ring ran on the engine's threads since the start, so the
//              compute between start and wait overlaps the collective.
// Errors as on the CPU; a wait whose communicator was closed is cancelled.
#pragma once
#include "xla/ffi/api/ffi.h"

namespace pccl {
XLA_FFI_DECLARE_HANDLER_SYMBOL(AllReduceStartCudaHandler);
XLA_FFI_DECLARE_HANDLER_SYMBOL(AllReduceWaitBindCudaHandler);
XLA_FFI_DECLARE_HANDLER_SYMBOL(AllReduceWaitCudaHandler);
}  // namespace pccl
