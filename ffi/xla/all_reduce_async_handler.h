// XLA FFI handlers for all_reduce_start / all_reduce_wait (CPU).
//   start: operands token, leaves...   results token, tickets (int32[2L+1]:
//          attributes comm, op, quant           L 64-bit tickets as word pairs,
//                                               then the world size; ticket_words.h)
//   wait_bind: operands token, tickets  results token      attributes comm, site
//   wait:      operands token           results token, outs...   attributes comm, site
// start copies the leaves to the engine and returns at once; the collective
// progresses on the communicator's own threads while XLA runs other work.
// all_reduce_wait lowers to wait_bind then wait (see bound_waits.h for why):
// wait is asynchronous (returns an ffi::Future), so no XLA thread is held
// while the collective finishes, and it touches no buffer but its results.
// Its future is completed on the communicator's completion executor, never
// on an engine thread (completion_executor.h). No handler lets a C++
// exception out: each returns it as an FFI error.
#pragma once
#include "xla/ffi/api/ffi.h"

namespace pccl {
XLA_FFI_DECLARE_HANDLER_SYMBOL(AllReduceStartCpuHandler);
XLA_FFI_DECLARE_HANDLER_SYMBOL(AllReduceWaitBindCpuHandler);
XLA_FFI_DECLARE_HANDLER_SYMBOL(AllReduceWaitCpuHandler);
}  // namespace pccl
