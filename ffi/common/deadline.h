// A point in time after which a blocking operation gives up. Every wait in the
// engine takes one, so nothing can block forever.
#pragma once
#include <chrono>
#include <limits>

namespace pccl {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  static Deadline after(double seconds) {
    if (seconds < 0 || seconds > 1e9) return never();
    return Deadline(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(seconds)));
  }
  static Deadline never() { return Deadline(Clock::time_point::max()); }

  bool is_never() const { return at_ == Clock::time_point::max(); }
  bool expired() const { return !is_never() && Clock::now() >= at_; }
  // Milliseconds left, clamped to [0, cap_ms]; cap_ms for a never-deadline.
  int remaining_ms(int cap_ms) const {
    if (is_never()) return cap_ms;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(at_ - Clock::now()).count();
    if (left < 0) return 0;
    return left > cap_ms ? cap_ms : static_cast<int>(left);
  }

 private:
  explicit Deadline(Clock::time_point at) : at_(at) {}
  Clock::time_point at_;
};

}  // namespace pccl
