// A cancellation signal that poll() can wait on (an eventfd), so close() can
// wake every thread blocked in network I/O at once. reset() re-arms it, which
// lets a communicator use one as a per-epoch interrupt (peer dropped, master lost).
#pragma once
#include <atomic>

namespace pccl {

// After an interrupt (a member left), how long a collective still waits for
// bytes that may be on their way before it fails; any byte that arrives
// restarts the wait. A neighbour that sent its last bytes and exited is
// announced by the master, and that notice can overtake those bytes.
constexpr double kInterruptGraceS = 0.25;

class Canceller {
 public:
  Canceller();
  ~Canceller();
  Canceller(const Canceller&) = delete;
  Canceller& operator=(const Canceller&) = delete;

  void cancel();
  void reset();  // only for interrupts: a closed communicator never resets
  // Re-arms, then fires again at once if `still_firing()` says the cause is
  // still there. The order matters: a cancel() whose cause was set before it
  // fired is either seen by `still_firing` or lands after the reset.
  template <typename Predicate>
  void rearm(Predicate still_firing) {
    reset();
    if (still_firing()) cancel();
  }
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }
  int fd() const { return fd_; }  // readable once cancelled

 private:
  int fd_;
  std::atomic<bool> cancelled_{false};
};

}  // namespace pccl
