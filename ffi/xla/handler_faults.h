// Tests only: makes the next call of one FFI handler throw std::bad_alloc
// where a real allocation of that handler could fail, so that a test can
// check that no C++ exception crosses the FFI boundary (issue #17, 9b).
// Disarmed by default; armed through the bindings' _arm_handler_fault.
#pragma once

namespace pccl {

enum class HandlerFault : int {
  kNone = 0,
  kAllReduce = 1,  // jax_pccl_collective (every kind)
  kStart = 2,      // jax_pccl_all_reduce_start
  kWaitBind = 3,   // jax_pccl_all_reduce_wait_bind
  kWait = 4,       // jax_pccl_all_reduce_wait
};

// The next call of `where` throws once; kNone disarms.
void arm_handler_fault_for_testing(HandlerFault where);
// Throws std::bad_alloc if armed for `here` (and disarms).
void maybe_fail_for_testing(HandlerFault here);

}  // namespace pccl
