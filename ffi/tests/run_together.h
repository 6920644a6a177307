// Runs fn(i) for i in [0, n) on n threads released at once (scale_bench).
// The threads are created first and wait at a gate, so creating them (tens of
// milliseconds at 1024 threads on a busy machine) is not part of what the
// caller times: every figure starts at the moment the gate opened.
#pragma once
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pccl_bench {

using Clock = std::chrono::steady_clock;

inline double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// `before_open` runs on the calling thread once all n threads wait (the join
// connects its first peer there). Returns when the gate opened. An exception
// in fn(i) is kept and the first one rethrown after every thread joined: one
// escaping a thread would abort the whole process.
inline Clock::time_point run_together(int n, const std::function<void(int)>& fn,
                                      const std::function<void()>& before_open = {}) {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  bool abandoned = false;  // thread creation failed: released threads do nothing
  std::exception_ptr first_error;
  std::vector<std::thread> threads;
  threads.reserve(n);
  auto body = [&](int i) {
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return open; });
      if (abandoned) return;
    }
    try {
      fn(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!first_error) first_error = std::current_exception();
    }
  };
  try {
    for (int i = 0; i < n; ++i) threads.emplace_back(body, i);
    if (before_open) before_open();
  } catch (...) {
    // Creating a thread failed (a process limit): release and join the others.
    {
      std::lock_guard<std::mutex> lock(mu);
      open = abandoned = true;
    }
    cv.notify_all();
    for (auto& t : threads) t.join();
    throw;
  }
  Clock::time_point opened;
  {
    std::lock_guard<std::mutex> lock(mu);
    open = true;
    opened = Clock::now();
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
  if (first_error) std::rethrow_exception(first_error);
  return opened;
}

}  // namespace pccl_bench
