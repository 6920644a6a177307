// The floating-point environment every codec call runs in (quantization.h:
// "Deterministic"): round to nearest, no flush-to-zero / denormals-are-zero,
// traps masked, whatever the calling thread has set; restored afterwards.
#pragma once
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define PCCL_QUANT_X86 1
#elif defined(__aarch64__)
#define PCCL_QUANT_ARM64 1
#else
#include <cfenv>
#endif

namespace pccl {

// ---------------------------------------------------------------------------
// Floating-point environment: round to nearest, no FTZ/DAZ, traps masked.
// XLA's CPU threads run with FTZ/DAZ on, for instance; subnormal-scale chunks
// would then decode differently on a peer whose thread has them off.

class ScopedDefaultFpEnv {
 public:
#if PCCL_QUANT_X86
  ScopedDefaultFpEnv() : saved_(_mm_getcsr()) {
    // Clear FTZ (bit 15), rounding control (14:13) and DAZ (bit 6); set the
    // six exception masks (12:7).
    const unsigned want = (saved_ & ~0xE040u) | 0x1F80u;
    changed_ = want != saved_;
    if (changed_) _mm_setcsr(want);
  }
  ~ScopedDefaultFpEnv() {
    if (changed_) _mm_setcsr(saved_);
  }

 private:
  unsigned saved_;
  bool changed_;
#elif PCCL_QUANT_ARM64
  ScopedDefaultFpEnv() {
    uint64_t v;
    asm volatile("mrs %0, fpcr" : "=r"(v) : : "memory");
    saved_ = v;
    // Clear FZ (24), RMode (23:22), FZ16 (19), the trap enables (15, 12:8)
    // and FEAT_AFP's AH/FIZ (1:0; RES0 where not implemented).
    const uint64_t want = v & ~((1ull << 24) | (3ull << 22) | (1ull << 19) | (1ull << 15) |
                                (0x1Full << 8) | 3ull);
    changed_ = want != saved_;
    if (changed_) asm volatile("msr fpcr, %0" : : "r"(want) : "memory");
  }
  ~ScopedDefaultFpEnv() {
    if (changed_) asm volatile("msr fpcr, %0" : : "r"(saved_) : "memory");
  }

 private:
  uint64_t saved_;
  bool changed_;
#else
  ScopedDefaultFpEnv() {
    std::feholdexcept(&saved_);  // saves, clears flags, non-stop mode
    std::fesetround(FE_TONEAREST);
  }
  ~ScopedDefaultFpEnv() { std::fesetenv(&saved_); }

 private:
  std::fenv_t saved_;
#endif
};

}  // namespace pccl
