#include "xla/staged_leaves.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>

namespace pccl {
namespace {

// A staging buffer is never empty: a zero-size leaf still gets an address.
void* staging_for(DeviceCopies& device, size_t bytes) {
  return device.staging(std::max<size_t>(bytes, 1));
}

// Leaves as they end, handed from the engine threads that end them to the
// thread that copies them back.
struct Arrivals {
  struct Ended {
    size_t leaf;
    int world;
    std::exception_ptr error;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Ended> ended;

  void push(Ended e) {
    {
      std::lock_guard<std::mutex> lock(mu);
      ended.push_back(std::move(e));
    }
    cv.notify_one();
  }
  Ended pop() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return !ended.empty(); });
    Ended e = std::move(ended.front());
    ended.pop_front();
    return e;
  }
};

}  // namespace

void start_staged(Communicator& comm, const std::vector<CollectiveCall>& calls,
                  DeviceCopies& device, std::vector<uint64_t>& tickets) {
  std::vector<void*> host(calls.size());
  std::vector<size_t> copies(calls.size());
  // Every copy queued first: the device works through them while the
  // engine runs the leaves already copied.
  for (size_t i = 0; i < calls.size(); ++i) {
    size_t bytes = input_bytes(calls[i]);
    host[i] = staging_for(device, bytes);
    copies[i] = device.to_host(host[i], calls[i].in, bytes);
  }
  for (size_t i = 0; i < calls.size(); ++i) {
    device.wait_copied(copies[i]);
    CollectiveCall call = calls[i];
    call.in = host[i];
    call.out = nullptr;
    tickets.push_back(comm.start(call));
    device.observe(DeviceCopies::Step::kStarted, i);
  }
}

int wait_staged(Communicator& comm, const std::vector<uint64_t>& tickets,
                const std::vector<DeviceResult>& results, DeviceCopies& device) {
  if (tickets.size() != results.size()) throw PcclError("a result for every ticket is needed");
  size_t n = tickets.size();
  std::vector<void*> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = staging_for(device, results[i].bytes);
  // Shared with the engine threads' callbacks; every callback has run
  // before this returns (the loop below counts them all in), so `device`
  // and the staging buffers they write are still there when they run.
  auto arrivals = std::make_shared<Arrivals>();
  for (size_t i = 0; i < n; ++i) {
    try {
      comm.wait_then(tickets[i], host[i], results[i].bytes,
                     [arrivals, &device, i](int world, std::exception_ptr error) {
                       try {
                         device.observe(DeviceCopies::Step::kEnded, i);
                       } catch (...) {  // a test's hook: never out of an engine thread
                       }
                       arrivals->push({i, world, std::move(error)});
                     });
    } catch (...) {  // an unknown ticket: its callback never runs
      arrivals->push({i, 0, std::current_exception()});
    }
  }
  device.observe(DeviceCopies::Step::kWaiting, n);
  // Unbounded, as the CPU wait: each leaf's ring waits end after the stall
  // timeout (or at once on a drop notice, master loss or close()), and its
  // callback runs exactly once however it ends.
  int world = 0;
  std::exception_ptr error;
  for (size_t received = 0; received < n; ++received) {
    Arrivals::Ended e = arrivals->pop();
    if (e.error) {
      error = more_telling(error, e.error);
      continue;
    }
    world = e.world;
    try {
      device.to_device(results[e.leaf].data, host[e.leaf], results[e.leaf].bytes);
    } catch (...) {  // keep counting: the other leaves still write into staging
      error = more_telling(error, std::current_exception());
    }
  }
  device.finish();
  if (error) std::rethrow_exception(error);
  return world;
}

int run_staged(Communicator& comm, const std::vector<CollectiveCall>& calls,
               const std::vector<DeviceResult>& results, DeviceCopies& device) {
  std::vector<uint64_t> tickets;
  try {
    start_staged(comm, calls, device, tickets);
  } catch (...) {
    std::exception_ptr refused = std::current_exception();
    for (size_t i = 0; i < tickets.size(); ++i) {
      size_t bytes = output_bytes(calls[i]);
      try {
        comm.wait(tickets[i], staging_for(device, bytes), bytes);
      } catch (...) {  // the refusal is the error to report
      }
    }
    std::rethrow_exception(refused);
  }
  return wait_staged(comm, tickets, results, device);
}

}  // namespace pccl
