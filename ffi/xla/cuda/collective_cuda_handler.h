// The XLA FFI handler of jax_pccl's collectives for arrays on a CUDA GPU
// (built with -DJAX_PCCL_CUDA=ON): same call as the CPU handler
// (collective_handler.h). The ring runs on host memory: each leaf is copied
// from the device into a page-locked staging buffer on XLA's stream, each
// leaf's collective starts as soon as its own copy is over, and each result
// is copied back on the same stream as soon as it is in, while the other
// leaves are still on the ring (xla/staged_leaves.h). The call returns once
// the copies back are over (the staging buffers are then reused).
#pragma once
#include "xla/ffi/api/ffi.h"

namespace pccl {
XLA_FFI_DECLARE_HANDLER_SYMBOL(CollectiveCudaHandler);
}  // namespace pccl
