// XLA FFI handler for jax_pccl's all_reduce custom call (CPU).
//   operands: token, leaf_0 .. leaf_{L-1}
//   results:  token, out_0 .. out_{L-1}, world_size (int32 scalar)
//   attributes: comm (int64 handle), op (int32 ReduceOp), quant (int32 Quantization)
// The token threads JAX's ordered effect through every collective, so XLA can
// neither reorder nor run them concurrently.
#pragma once
#include "xla/ffi/api/ffi.h"

namespace pccl {
XLA_FFI_DECLARE_HANDLER_SYMBOL(AllReduceCpuHandler);
}  // namespace pccl
