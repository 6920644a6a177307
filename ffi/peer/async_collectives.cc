#include "peer/async_collectives.h"

#include <algorithm>
#include <cstring>

#include "collectives/ring_io.h"
#include "common/errors.h"

namespace pccl {

namespace {

constexpr size_t kPoolBuffers = 8;
// Enough for every leaf of the few starts a failed step leaves behind.
constexpr size_t kMaxDiscarded = 4096;
constexpr size_t kAlign = 2u << 20;  // huge-page aligned, so madvise covers it all

}  // namespace

AsyncCollectives::AsyncCollectives(int slots) : slots_(static_cast<size_t>(std::max(1, slots))) {}

AsyncCollectives::Buffer AsyncCollectives::acquire(size_t bytes) {
  // Smallest idle buffer that fits; otherwise a new one.
  auto best = pool_.end();
  for (auto it = pool_.begin(); it != pool_.end(); ++it) {
    if (it->capacity >= bytes && (best == pool_.end() || it->capacity < best->capacity)) best = it;
  }
  if (best != pool_.end()) {
    Buffer b = std::move(*best);
    pool_.erase(best);
    return b;
  }
  Buffer b;
  b.capacity = std::max(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  void* p = std::aligned_alloc(kAlign, b.capacity);
  if (p == nullptr) throw PcclError("out of memory staging an all_reduce_start");
  ring_io::advise_huge_pages(p, b.capacity);
  b.data.reset(static_cast<uint8_t*>(p));
  return b;
}

void AsyncCollectives::release(Buffer b) {
  if (!b.data) return;
  pool_.push_back(std::move(b));
  if (pool_.size() > kPoolBuffers) {  // drop the smallest: big ones are the costly ones
    auto smallest = std::min_element(pool_.begin(), pool_.end(), [](const Buffer& x, const Buffer& y) {
      return x.capacity < y.capacity;
    });
    pool_.erase(smallest);
  }
}

uint64_t AsyncCollectives::start(int slot, const void* in, size_t in_bytes, size_t out_bytes,
                                 Work work) {
  auto job = std::make_shared<Job>();
  job->out_bytes = out_bytes;
  job->work = std::move(work);
  job->slot = slot;
  job->staged = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) throw Cancelled("communicator closed");
    job->in_stage = acquire(in_bytes);
    job->out_stage = acquire(out_bytes);
  }
  job->in = job->in_stage.data.get();
  job->out = job->out_stage.data.get();
  if (in_bytes > 0) std::memcpy(job->in_stage.data.get(), in, in_bytes);
  std::lock_guard<std::mutex> lock(mu_);
  return enqueue(std::move(job));
}

uint64_t AsyncCollectives::start_in_place(int slot, const void* in, void* out, size_t out_bytes,
                                          Work work) {
  auto job = std::make_shared<Job>();
  job->in = in;
  job->out = out;
  job->out_bytes = out_bytes;
  job->work = std::move(work);
  job->slot = slot;
  std::lock_guard<std::mutex> lock(mu_);
  return enqueue(std::move(job));
}

uint64_t AsyncCollectives::enqueue(std::shared_ptr<Job> job) {
  if (closed_) throw Cancelled("communicator closed");
  if (job->slot < 0 || static_cast<size_t>(job->slot) >= slots_.size()) {
    throw PcclError("no such collective slot: " + std::to_string(job->slot));
  }
  Slot& slot = slots_[static_cast<size_t>(job->slot)];
  if (!job->on_caller && !slot.worker.joinable()) {
    int index = job->slot;
    slot.worker = std::thread([this, index] { worker_loop(index); });
  }
  uint64_t ticket = next_ticket_++;
  bool for_worker = !job->on_caller;
  if (for_worker) jobs_[ticket] = job;
  slot.queue.push_back(std::move(job));
  if (for_worker) slot.cv.notify_all();  // a claimed job is its caller's to run
  return ticket;
}

void AsyncCollectives::run(Job& job) {
  try {
    job.world = job.work(job.in, job.out);
  } catch (...) {
    job.error = std::current_exception();
  }
}

void AsyncCollectives::worker_loop(int index) {
  Slot& slot = slots_[static_cast<size_t>(index)];
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    // A claimed job at the front is the caller's to run: wait until it has.
    slot.cv.wait(lock, [&] {
      return (closed_ && slot.queue.empty()) ||
             (!slot.queue.empty() && !slot.queue.front()->on_caller && !slot.running);
    });
    if (slot.queue.empty()) return;  // closed and nothing left
    std::shared_ptr<Job> job = std::move(slot.queue.front());
    slot.queue.pop_front();
    slot.running = true;
    lock.unlock();
    run(*job);
    lock.lock();
    release(std::move(job->in_stage));
    slot.running = false;
    job->done = true;
    job->ended.notify_all();
    if (!slot.queue.empty()) slot.cv.notify_all();  // a caller may wait for its claimed turn
    if (job->then) {
      lock.unlock();
      run_then(job);
      lock.lock();
    }
  }
}

AsyncCollectives::Claim AsyncCollectives::claim(int slot) {
  auto job = std::make_shared<Job>();
  job->slot = slot;
  job->on_caller = true;
  std::lock_guard<std::mutex> lock(mu_);
  enqueue(job);
  Claim c;
  c.job_ = std::move(job);
  return c;
}

int AsyncCollectives::run_claimed(const Claim& claim, const void* in, void* out,
                                  const Work& work) {
  Job& job = *claim.job_;
  Slot& slot = slots_[static_cast<size_t>(job.slot)];
  {
    std::unique_lock<std::mutex> lock(mu_);
    slot.cv.wait(lock, [&] {
      return job.done || (slot.queue.front() == claim.job_ && !slot.running);
    });
    if (job.done) std::rethrow_exception(job.error);  // cancelled by close()
    slot.queue.pop_front();
    slot.running = true;
  }
  job.in = in;
  job.out = out;
  job.work = work;
  run(job);
  std::lock_guard<std::mutex> lock(mu_);
  slot.running = false;
  job.done = true;
  if (!slot.queue.empty()) slot.cv.notify_all();  // what was queued behind it
  if (job.error) std::rethrow_exception(job.error);
  return job.world;
}

int AsyncCollectives::wait(uint64_t ticket, void* out, size_t bytes, const Deadline& deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(ticket);
  if (it == jobs_.end()) throw_not_found(ticket);
  std::shared_ptr<Job> job = it->second;
  while (!job->done) {
    if (deadline.expired()) throw PeerFailure("all_reduce_wait timed out");
    job->ended.wait_for(lock, std::chrono::milliseconds(deadline.remaining_ms(200)));
  }
  jobs_.erase(ticket);
  lock.unlock();
  return collect(*job, out, bytes);
}

int AsyncCollectives::collect(Job& job, void* out, size_t bytes) {
  auto give_back = [&] {
    std::lock_guard<std::mutex> relock(mu_);
    release(std::move(job.in_stage));  // a job cancelled before it ran still holds it
    release(std::move(job.out_stage));
  };
  if (job.error) {
    give_back();
    std::rethrow_exception(job.error);
  }
  if (bytes != job.out_bytes) {
    give_back();
    throw PcclError("wait: the result has " + std::to_string(job.out_bytes) + " bytes, the buffer " +
                    std::to_string(bytes));
  }
  if (job.staged && bytes > 0) {
    ring_io::advise_huge_pages(out, bytes);  // XLA's result buffer is usually fresh
    std::memcpy(out, job.out_stage.data.get(), bytes);
  }
  give_back();
  return job.world;
}

void AsyncCollectives::wait_then(uint64_t ticket, void* out, size_t bytes, Then then) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(ticket);
  if (it == jobs_.end()) throw_not_found(ticket);
  std::shared_ptr<Job> job = it->second;
  jobs_.erase(it);
  job->then = std::move(then);
  job->then_out = out;
  job->then_bytes = bytes;
  if (!job->done) return;  // the thread that ends it calls run_then()
  lock.unlock();
  run_then(job);
}

void AsyncCollectives::run_then(const std::shared_ptr<Job>& job) {
  Then then;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!job->then) return;
    then = std::move(job->then);
    job->then = nullptr;  // exactly once, whoever gets here first
  }
  int world = 0;
  std::exception_ptr error;
  try {
    world = collect(*job, job->then_out, job->then_bytes);
  } catch (...) {
    error = std::current_exception();
  }
  then(world, error);
}

void AsyncCollectives::throw_not_found(uint64_t ticket) const {
  auto gone = discarded_.find(ticket);
  if (gone != discarded_.end()) throw PeerFailure(gone->second);
  throw PcclError("all_reduce_wait: unknown or already waited handle " + std::to_string(ticket));
}

size_t AsyncCollectives::discard_started(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t count = 0;
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    // The job itself stays queued or running: its slot's thread owns it
    // until it ends, and its staging buffers go with the last reference.
    if (!it->second->staged) {
      ++it;
      continue;
    }
    discarded_[it->first] = why;
    it = jobs_.erase(it);
    ++count;
  }
  while (discarded_.size() > kMaxDiscarded) discarded_.erase(discarded_.begin());
  return count;
}

size_t AsyncCollectives::outstanding() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size();
}

void AsyncCollectives::set_next_ticket_for_testing(uint64_t next) {
  std::lock_guard<std::mutex> lock(mu_);
  next_ticket_ = next;
}

void AsyncCollectives::close() {
  std::vector<std::shared_ptr<Job>> cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    // Not yet run: fail them now rather than after a doomed network attempt.
    for (Slot& slot : slots_) {
      for (auto& job : slot.queue) {
        job->error = std::make_exception_ptr(Cancelled("communicator closed"));
        job->done = true;
        job->ended.notify_all();
        cancelled.push_back(job);
      }
      slot.queue.clear();
      slot.cv.notify_all();  // callers waiting for their claimed turn
    }
  }
  for (auto& job : cancelled) run_then(job);  // an async wait must hear of it too
  for (Slot& slot : slots_) {
    if (slot.worker.joinable()) slot.worker.join();
  }
}

}  // namespace pccl
