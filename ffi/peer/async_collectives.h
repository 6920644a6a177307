// The engine threads that run collectives, one per slot (see
// peer/collective_slots.h): all_reduce_start / all_reduce_wait, the leaves
// of a pytree at once, and plain blocking calls, all in one order per slot.
//
// A slot runs its collectives one at a time in the order they were queued,
// which the caller makes program order; different slots run at the same
// time. start() copies its input (the caller may reuse its buffer at once);
// start_in_place() copies nothing (the caller keeps both buffers alive until
// wait). wait(ticket) rethrows the collective's error. run_here() runs one on
// the calling thread, in its slot's order: no hand-over to another thread
// for a plain blocking call. Nothing here knows about rings: `work` does it.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/deadline.h"

namespace pccl {

class AsyncCollectives {
  struct Job;

 public:
  // work(in, out) performs one collective and returns the peers that took part.
  using Work = std::function<int(const void* in, void* out)>;

  explicit AsyncCollectives(int slots);
  ~AsyncCollectives() { close(); }
  AsyncCollectives(const AsyncCollectives&) = delete;
  AsyncCollectives& operator=(const AsyncCollectives&) = delete;

  // Queues `work` on `slot` with a copy of `in_bytes` of input; wait()
  // copies the `out_bytes` of result out (an all-gather's result is larger
  // than its input, a reduce-scatter's smaller). Throws Cancelled once closed.
  uint64_t start(int slot, const void* in, size_t in_bytes, size_t out_bytes, Work work);
  // Queues `work` on `slot` over the caller's own buffers, which must stay
  // valid until wait(ticket) returns; `out` holds `out_bytes`.
  uint64_t start_in_place(int slot, const void* in, void* out, size_t out_bytes, Work work);
  // Blocks until the ticket's collective ended; copies `bytes` of result
  // (staged ones). Throws the collective's error, or PcclError for an unknown
  // ticket or another result size.
  int wait(uint64_t ticket, void* out, size_t bytes, const Deadline& deadline);
  // wait() without blocking: `then(world, error)` runs exactly once, after the
  // result is in `out` (or with the error wait() would throw): at once on
  // this thread if the collective has ended, else on the thread that ends it
  // (its slot's, or close()'s). `out` must stay valid until then. Throws
  // PcclError for an unknown ticket, as wait() does.
  using Then = std::function<void(int world, std::exception_ptr error)>;
  void wait_then(uint64_t ticket, void* out, size_t bytes, Then then);

  // A plain blocking call in two steps, so that the caller can take its
  // place in the slot's order under its own ordering lock: claim() queues
  // it, run_claimed() waits until the slot reaches it and runs `work` here.
  class Claim {
    friend class AsyncCollectives;
    std::shared_ptr<Job> job_;
  };
  Claim claim(int slot);
  int run_claimed(const Claim& claim, const void* in, void* out, const Work& work);

  // Collectives started and not yet waited for.
  size_t outstanding() const;
  // Recovery after a failed epoch: forgets every started (staged) collective
  // not yet waited for, so that update_topology() can go on. They still run
  // to their end on their slot (the broken ring fails them at once); a later
  // wait on one of their tickets throws PeerFailure(`why`). In-place jobs
  // are kept: their caller waits for them itself, over its own buffers.
  // Returns how many were discarded.
  size_t discard_started(const std::string& why);
  // Tests only: the next ticket handed out, so that a test can cross the 2^32
  // boundary without running 2^32 collectives.
  void set_next_ticket_for_testing(uint64_t next);
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
    Buffer in_stage, out_stage;  // empty unless staged
    const void* in = nullptr;
    void* out = nullptr;
    size_t out_bytes = 0;  // of the result
    Work work;
    int slot = 0;
    bool staged = false;
    bool on_caller = false;  // run by run_claimed(), not by the slot's thread
    bool done = false;
    std::condition_variable ended;  // done became true: its waiter alone wakes
    Then then;  // set by wait_then() before the job ended: called when it does
    void* then_out = nullptr;
    size_t then_bytes = 0;
    int world = 0;
    std::exception_ptr error;
  };
  struct Slot {
    std::deque<std::shared_ptr<Job>> queue;  // queued, not yet running
    bool running = false;
    // The slot's thread and callers waiting for their claimed turn sleep on
    // their own slot's: a busy slot never wakes the idle ones (on two cores
    // such wake-ups cost small collectives more than their round trips).
    std::condition_variable cv;
    std::thread worker;  // started with the slot's first queued job
  };
  uint64_t enqueue(std::shared_ptr<Job> job);  // mu_ held
  void worker_loop(int slot);
  static void run(Job& job);
  // The end of a wait: copies the result out (or rethrows the job's error)
  // and gives the staging buffers back. mu_ not held.
  int collect(Job& job, void* out, size_t bytes);
  // Calls the job's `then`, if wait_then() left one. mu_ not held.
  void run_then(const std::shared_ptr<Job>& job);

  mutable std::mutex mu_;
  std::vector<Slot> slots_;
  std::map<uint64_t, std::shared_ptr<Job>> jobs_;  // started, not yet waited
  // Tickets forgotten by discard_started(), with the reason their wait
  // reports; the oldest go first beyond kMaxDiscarded.
  std::map<uint64_t, std::string> discarded_;
  // Throws PeerFailure if `ticket` was discarded, else the unknown-handle error. mu_ held.
  [[noreturn]] void throw_not_found(uint64_t ticket) const;
  bool closed_ = false;
  uint64_t next_ticket_ = 1;
  std::vector<Buffer> pool_;  // idle buffers, bounded by kPoolBuffers
};

}  // namespace pccl
