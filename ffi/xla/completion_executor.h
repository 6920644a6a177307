// The threads that complete XLA's all_reduce_wait futures.
//
// Why not the engine thread that ends the collective: completing an
// ffi::Future runs the rest of the XLA program on the completing thread. On
// an engine slot thread, a later collective of that program that needed the
// same slot waited for the thread it ran on, and the group hung (issue #17).
// So the engine only posts the completion here, and XLA continues on one of
// these threads instead.
//
// Why it grows: a continuation may block (a blocking all_reduce waits for
// the engine, and through the ring for the other peers' programs), so a task
// posted while every thread is busy gets a new thread rather than queueing
// behind a continuation that may be waiting for it. The growth is bounded
// (kMaxCompletionThreads); past the bound, tasks queue for the next free
// thread. Threads stay until close(): growth happens only while
// continuations block, which is rare and short, so a few idle threads are
// cheaper than retiring and re-spawning them.
//
// No engine, XLA or Python dependency: tasks are plain callables.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace pccl {

constexpr size_t kMaxCompletionThreads = 16;
constexpr const char* kCompletionThreadName = "pccl-completion";  // at most 15 characters

class CompletionExecutor : public std::enable_shared_from_this<CompletionExecutor> {
 public:
  using Task = std::function<void()>;

  // Starts with one thread, so that post() never depends on creating one.
  // Throws std::system_error if that thread cannot be started.
  static std::shared_ptr<CompletionExecutor> create(size_t max_threads = kMaxCompletionThreads);

  // Runs `task` soon on one of the executor's threads: an idle one, else a
  // new one while under the bound, else the first to free up. Never throws
  // (it is called from engine threads). Once closed (or out of memory to
  // queue it), runs the task on the caller before returning: a future must
  // be completed whatever happens, or XLA waits for it forever.
  void post(Task task) noexcept;

  // Runs every task posted so far, then joins the threads. Called on one of
  // its own threads (a continuation closing the communicator), that thread
  // is detached instead: it ends when its task returns.
  void close();

  size_t threads() const;  // started so far (for tests)

  CompletionExecutor(const CompletionExecutor&) = delete;
  CompletionExecutor& operator=(const CompletionExecutor&) = delete;

 private:
  explicit CompletionExecutor(size_t max_threads) : max_threads_(max_threads) {}
  void spawn();  // mu_ held; may throw std::system_error
  void loop();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  // Each thread holds a reference to the executor, so a detached one (see
  // close()) never outlives it; the cycle ends when the threads do.
  std::vector<std::thread> threads_;
  size_t started_ = 0;
  size_t idle_ = 0;  // threads waiting for a task, or started and about to
  size_t max_threads_;
  bool closed_ = false;
};

}  // namespace pccl
