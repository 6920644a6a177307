// XLA FFI handlers for all_reduce_start / all_reduce_wait (CPU).
//   start: operands token, leaves...   results token, tickets (int32[L])
//          attributes comm, op, quant
//   wait:  operands token, tickets     results token, outs..., world_size (int32)
//          attributes comm
// start copies the leaves to the engine and returns at once; the collective
// progresses on the communicator's own threads while XLA runs other work.
// wait is asynchronous (returns an ffi::Future): no XLA thread is held while
// the collective finishes.
#pragma once
#include "xla/ffi/api/ffi.h"

namespace pccl {
XLA_FFI_DECLARE_HANDLER_SYMBOL(AllReduceStartCpuHandler);
XLA_FFI_DECLARE_HANDLER_SYMBOL(AllReduceWaitCpuHandler);
}  // namespace pccl
