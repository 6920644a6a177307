// What ThreadSanitizer must be told about XLA's ordering of custom calls.
//
// XLA runs the custom calls of a program on its own threads and orders them
// (data and effect dependencies, futures) with synchronisation inside jaxlib,
// which TSan cannot see: jaxlib is not instrumented. Without help, a ticket
// written by the start handler on one XLA thread and read by the wait handler
// on another looks like a race. So, in a TSan build only, every handler entry
// acquires and every handler exit and future completion releases one token
// that stands for XLA's ordering. This hides nothing between our own threads
// (engine, completion executor, close()): their races are still reported.
// Elsewhere these are empty.
#pragma once

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

namespace pccl {

#if defined(__SANITIZE_THREAD__)
inline char xla_order_token;
inline void xla_order_acquire() { __tsan_acquire(&xla_order_token); }
inline void xla_order_release() { __tsan_release(&xla_order_token); }
#else
inline void xla_order_acquire() {}
inline void xla_order_release() {}
#endif

// One handler call: XLA ordered it after what it depends on, and orders what
// depends on it after its return.
class XlaOrderScope {
 public:
  XlaOrderScope() { xla_order_acquire(); }
  ~XlaOrderScope() { xla_order_release(); }
  XlaOrderScope(const XlaOrderScope&) = delete;
  XlaOrderScope& operator=(const XlaOrderScope&) = delete;
};

}  // namespace pccl
