#include "peer/async_collectives.h"

#include <algorithm>
#include <cstring>

#include "collectives/ring_io.h"
#include "common/errors.h"

namespace pccl {

namespace {

constexpr size_t kPoolBuffers = 8;
constexpr size_t kAlign = 2u << 20;  // huge-page aligned, so madvise covers it all

}  // namespace

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

uint64_t AsyncCollectives::start(const void* in, size_t bytes, Work work) {
  auto job = std::make_shared<Job>();
  job->bytes = bytes;
  job->work = std::move(work);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) throw Cancelled("communicator closed");
    job->in = acquire(bytes);
    job->out = acquire(bytes);
  }
  if (bytes > 0) std::memcpy(job->in.data.get(), in, bytes);
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) throw Cancelled("communicator closed");
  if (!worker_.joinable()) worker_ = std::thread([this] { worker_loop(); });
  uint64_t ticket = next_ticket_++;
  jobs_[ticket] = job;
  queue_.push_back(ticket);
  cv_.notify_all();
  return ticket;
}

void AsyncCollectives::worker_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return closed_ || !queue_.empty(); });
    if (queue_.empty()) return;  // closed and nothing left
    uint64_t ticket = queue_.front();
    queue_.pop_front();
    std::shared_ptr<Job> job = jobs_.count(ticket) ? jobs_[ticket] : nullptr;
    running_ = true;
    lock.unlock();
    if (job) {
      try {
        job->world = job->work(job->in.data.get(), job->out.data.get());
      } catch (...) {
        job->error = std::current_exception();
      }
    }
    lock.lock();
    if (job) release(std::move(job->in));
    running_ = false;
    if (job) job->done = true;
    cv_.notify_all();
  }
}

int AsyncCollectives::wait(uint64_t ticket, void* out, size_t bytes, const Deadline& deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(ticket);
  if (it == jobs_.end()) {
    throw PcclError("all_reduce_wait: unknown or already waited handle " + std::to_string(ticket));
  }
  std::shared_ptr<Job> job = it->second;
  while (!job->done) {
    if (deadline.expired()) throw PeerFailure("all_reduce_wait timed out");
    cv_.wait_for(lock, std::chrono::milliseconds(deadline.remaining_ms(200)));
  }
  jobs_.erase(ticket);
  lock.unlock();
  auto give_back = [&] {
    std::lock_guard<std::mutex> relock(mu_);
    release(std::move(job->out));
  };
  if (job->error) {
    give_back();
    std::rethrow_exception(job->error);
  }
  if (bytes != job->bytes) {
    give_back();
    throw PcclError("all_reduce_wait: result size mismatch");
  }
  ring_io::advise_huge_pages(out, bytes);  // XLA's result buffer is usually fresh
  if (bytes > 0) std::memcpy(out, job->out.data.get(), bytes);
  give_back();
  return job->world;
}

size_t AsyncCollectives::outstanding() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size();
}

void AsyncCollectives::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return queue_.empty() && !running_; });
}

void AsyncCollectives::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_ && !worker_.joinable()) return;
    closed_ = true;
    // Not yet run: fail them now rather than after a doomed network attempt.
    for (uint64_t ticket : queue_) {
      auto it = jobs_.find(ticket);
      if (it == jobs_.end()) continue;
      it->second->error = std::make_exception_ptr(Cancelled("communicator closed"));
      it->second->done = true;
    }
    queue_.clear();
    cv_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
}

}  // namespace pccl
