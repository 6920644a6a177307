// Elapsed wall time, for reporting where an operation spent its time.
#pragma once
#include <chrono>

namespace pccl {

class Stopwatch {
 public:
  using Clock = std::chrono::steady_clock;
  // Seconds since the previous lap (or since construction).
  double lap() {
    Clock::time_point now = Clock::now();
    double s = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    return s;
  }
  double total() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_ = start_;
};

}  // namespace pccl
