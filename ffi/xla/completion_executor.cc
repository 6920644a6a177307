#include "xla/completion_executor.h"

#include <pthread.h>

#include <algorithm>
#include <utility>

namespace pccl {

std::shared_ptr<CompletionExecutor> CompletionExecutor::create(size_t max_threads) {
  std::shared_ptr<CompletionExecutor> executor(
      new CompletionExecutor(std::max<size_t>(1, max_threads)));
  std::lock_guard<std::mutex> lock(executor->mu_);
  executor->spawn();
  return executor;
}

void CompletionExecutor::spawn() {
  std::shared_ptr<CompletionExecutor> self = shared_from_this();
  threads_.emplace_back([self] { self->loop(); });
  ++started_;
  ++idle_;  // counted from now on: its first act is to take a task
}

void CompletionExecutor::post(Task task) noexcept {
  try {
    std::unique_lock<std::mutex> lock(mu_);
    if (!closed_) {
      queue_.push_back(std::move(task));
      // Every queued task needs a thread of its own that is free now: the
      // busy ones may be blocked in continuations for a long time.
      if (queue_.size() > idle_ && threads_.size() < max_threads_) {
        try {
          spawn();
        } catch (...) {
          // No new thread (none to be had, or no memory to keep it): the
          // task, queued already, waits for one of the existing ones.
        }
      }
      lock.unlock();
      cv_.notify_one();
      return;
    }
  } catch (...) {
    // Could not queue it (out of memory): run it here rather than lose it.
  }
  try {
    if (task) task();
  } catch (...) {
    // As in loop(): tasks do not throw, and post() must not.
  }
}

void CompletionExecutor::loop() {
  // Named, so that a test (and a debugger) can tell where XLA's program
  // continues: here, never on an engine thread.
#ifdef __linux__
  pthread_setname_np(pthread_self(), kCompletionThreadName);
#endif
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return closed_ || !queue_.empty(); });
    --idle_;
    if (queue_.empty()) return;  // closed, and everything posted has run
    Task task = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    try {
      task();
    } catch (...) {
      // Tasks complete futures and do not throw; if one did, the thread must
      // still live on to run the others.
    }
    task = nullptr;  // whatever it held is released outside the lock
    lock.lock();
    ++idle_;
  }
}

void CompletionExecutor::close() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    threads.swap(threads_);
  }
  cv_.notify_all();
  for (std::thread& t : threads) {
    if (t.get_id() == std::this_thread::get_id()) {
      t.detach();
    } else {
      t.join();
    }
  }
}

size_t CompletionExecutor::threads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return started_;
}

}  // namespace pccl
