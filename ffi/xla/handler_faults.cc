#include "xla/handler_faults.h"

#include <atomic>
#include <new>

namespace pccl {
namespace {

std::atomic<int> armed{static_cast<int>(HandlerFault::kNone)};

}  // namespace

void arm_handler_fault_for_testing(HandlerFault where) { armed.store(static_cast<int>(where)); }

void maybe_fail_for_testing(HandlerFault here) {
  int expected = static_cast<int>(here);
  if (here != HandlerFault::kNone &&
      armed.compare_exchange_strong(expected, static_cast<int>(HandlerFault::kNone))) {
    throw std::bad_alloc();
  }
}

}  // namespace pccl
