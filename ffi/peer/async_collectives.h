// all_reduce_start / all_reduce_wait: collectives that progress on an engine
// thread while the caller (XLA) computes.
//
// Started collectives run one at a time in start order, which is program
// order on every peer, so peers can never pair up different collectives.
// start() copies its input (the caller may reuse its buffer at once) and
// returns a ticket; wait(ticket) copies the result out or rethrows the
// collective's error. Nothing here knows about rings: `run` does the work.
#pragma once
#include <condition_variable>
#include <cstdlib>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/deadline.h"

namespace pccl {

class AsyncCollectives {
 public:
  // run(in, out) performs one collective and returns the peers that took part.
  using Work = std::function<int(const void* in, void* out)>;

  AsyncCollectives() = default;
  ~AsyncCollectives() { close(); }
  AsyncCollectives(const AsyncCollectives&) = delete;
  AsyncCollectives& operator=(const AsyncCollectives&) = delete;

  uint64_t start(const void* in, size_t bytes, Work work);
  // Blocks until the ticket's collective ended; copies `bytes` of result.
  // Throws the collective's error, or PcclError for an unknown ticket.
  int wait(uint64_t ticket, void* out, size_t bytes, const Deadline& deadline);
  // Collectives started and not yet waited for.
  size_t outstanding() const;
  // Blocks until every started collective has run (not necessarily waited).
  void drain();
  // Cancels what has not run yet (their waits throw `cancelled`); joins.
  void close();

 private:
  // Reusable, huge-page-backed staging memory: fresh allocations of tens of
  // MiB cost more in page faults than the collective itself.
  struct Buffer {
    std::unique_ptr<uint8_t, void (*)(void*)> data{nullptr, &std::free};
    size_t capacity = 0;
  };
  Buffer acquire(size_t bytes);  // mu_ held
  void release(Buffer b);        // mu_ held

  struct Job {
    Buffer in, out;
    size_t bytes = 0;
    Work work;
    bool done = false;
    int world = 0;
    std::exception_ptr error;
  };
  void worker_loop();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, std::shared_ptr<Job>> jobs_;  // started, not yet waited
  std::deque<uint64_t> queue_;                     // started, not yet run
  bool running_ = false;
  bool closed_ = false;
  uint64_t next_ticket_ = 1;
  std::vector<Buffer> pool_;  // idle buffers, bounded by kPoolBuffers
  std::thread worker_;
};

}  // namespace pccl
