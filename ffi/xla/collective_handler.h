// XLA FFI handler for jax_pccl's collective custom call (CPU): every kind of
// peer/collective_kinds.h over the leaves of one pytree.
//   operands: token, leaf_0 .. leaf_{L-1}
//   results:  token, out_0 .. out_{L-1}, then int32 world_size, or int32[2]
//             (world_size, rank) where the caller needs its rank (a
//             broadcast's transpose keeps the summed cotangent on the root)
//   attributes: comm (int64 handle), kind (CollectiveKind), op (ReduceOp),
//               root, world (the group size the result shapes assume, 0: any),
//               quant (Quantization)
// The token threads JAX's ordered effect through every collective, so XLA can
// neither reorder nor run them concurrently.
#pragma once
#include "xla/ffi/api/ffi.h"

namespace pccl {
XLA_FFI_DECLARE_HANDLER_SYMBOL(CollectiveCpuHandler);
}  // namespace pccl
