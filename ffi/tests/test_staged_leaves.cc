// Collectives staged through host memory (xla/staged_leaves.h), as the CUDA
// handlers run them, with host memory standing in for the device: a
// LazyDevice completes a device -> host copy only when it is waited for and
// the copies back only at finish(), as a stream would some time later, so a
// pipeline that waited for every copy before starting, or for every leaf
// before copying back, shows it here, with no timing. A master and three
// communicators on threads of one process, over 127.0.0.1.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "master/master.h"
#include "peer/communicator.h"
#include "tests/check.h"
#include "tests/engine_harness.h"
#include "xla/staged_leaves.h"

using namespace pccl;

namespace {

constexpr int kPeers = 3;

class LazyDevice final : public DeviceCopies {
 public:
  // ends_wait_for_copies_back: a leaf that ends on an engine thread waits
  // there until every leaf that ended before it was queued back to the
  // device, 15 s at most: a pipeline that copies back only after the last
  // leaf ended keeps it waiting out the 15 s. `waiting`: counts this
  // device's wait once it holds every leaf.
  explicit LazyDevice(bool ends_wait_for_copies_back = false,
                      std::atomic<int>* waiting = nullptr)
      : gate_ends_(ends_wait_for_copies_back), waiting_(waiting) {}

  void* staging(size_t bytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    buffers_.push_back(std::make_unique<uint8_t[]>(bytes));
    std::memset(buffers_.back().get(), 0xA5, bytes);  // stale bytes must never reach a result
    return buffers_.back().get();
  }
  size_t to_host(void* host, const void* device, size_t bytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    to_host_.push_back({host, device, bytes});
    return to_host_.size() - 1;
  }
  void wait_copied(size_t copy) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (; copied_ <= copy && copied_ < to_host_.size(); ++copied_) perform(to_host_[copied_]);
    ++waits_;
  }
  void to_device(void* device, const void* host, size_t bytes) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (fail_to_device_ == static_cast<int>(back_.size())) {
        fail_to_device_ = -1;
        throw PcclError("copying a result to the device failed (LazyDevice)");
      }
      back_.push_back({device, host, bytes});
    }
    cv_.notify_all();
  }
  void finish() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (; copied_ < to_host_.size(); ++copied_) perform(to_host_[copied_]);
    for (const Copy& c : back_) perform(c);
    backs_done_ += back_.size();
    back_.clear();
    ++finishes_;
  }
  void observe(Step step, size_t leaf) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (step == Step::kStarted) {
      started_.push_back(leaf);
      // How far the device had got when this leaf went to the engine.
      copied_at_start_.push_back(copied_);
      queued_at_start_.push_back(to_host_.size());
      return;
    }
    if (step == Step::kWaiting) {
      caller_ = std::this_thread::get_id();
      if (waiting_) ++*waiting_;
      return;
    }
    ended_.push_back(leaf);
    if (gate_ends_ && ended_.size() > 1 && std::this_thread::get_id() != caller_) {
      ++gated_;
      size_t before = ended_.size() - 1;
      bool opened = cv_.wait_for(lock, std::chrono::seconds(15),
                                 [&] { return backs_queued() >= before; });
      if (!opened) ++gate_timeouts_;
    }
  }

  void fail_to_device_at(int k) { fail_to_device_ = k; }
  // Read after the pipeline returned (no engine thread calls in any more).
  std::vector<size_t> started_, ended_, copied_at_start_, queued_at_start_;
  size_t waits_ = 0, finishes_ = 0, gated_ = 0, gate_timeouts_ = 0;

 private:
  struct Copy {
    void* dst;
    const void* src;
    size_t bytes;
  };
  void perform(const Copy& c) {
    if (c.bytes) std::memcpy(c.dst, c.src, c.bytes);
  }
  // Copies back queued so far, performed or not (finish() clears back_).
  size_t backs_queued() const { return back_.size() + backs_done_; }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<uint8_t[]>> buffers_;
  std::vector<Copy> to_host_, back_;
  size_t copied_ = 0, backs_done_ = 0;
  bool gate_ends_;
  std::atomic<int>* waiting_;
  std::thread::id caller_;
  int fail_to_device_ = -1;
};

std::vector<float> floats_of(size_t count, int rank, int leaf) {
  std::vector<float> v(count);
  for (size_t i = 0; i < count; ++i) v[i] = static_cast<float>((i % 97) + 10 * rank + 1000 * leaf);
  return v;
}

CollectiveCall sum_of(const std::vector<float>& device_in) {
  return all_reduce_call(device_in.data(), nullptr, device_in.size(), DType::kFloat32,
                         ReduceOp::kSum);
}

// Four leaves of every size class (inline, one chunk, the ring) and an
// all-gather (a result larger than its input), started and waited staged:
// results exact; each leaf went to the engine when its own copy was over,
// all copies queued first; each result went back before the next leaf ended.
// Rank 2 starts its leaves only once the others wait for every leaf, so that
// theirs end on engine threads while their waits copy back.
void test_results_and_overlap() {
  Master master(MasterConfig{});
  master.start();
  std::atomic<int> waiting{0};
  with_ring(master, kPeers, [&](int, Communicator& c) {
    const int r = c.rank();
    const std::vector<size_t> counts = {5, 40000, (1u << 20) + 3, 0};
    std::vector<std::vector<float>> in, out;
    std::vector<CollectiveCall> calls;
    std::vector<DeviceResult> results;
    for (size_t l = 0; l < counts.size(); ++l) {
      in.push_back(floats_of(counts[l], r, static_cast<int>(l)));
      out.emplace_back(counts[l], -1.0f);
    }
    for (size_t l = 0; l < counts.size(); ++l) {
      calls.push_back(sum_of(in[l]));
      results.push_back({out[l].data(), out[l].size() * sizeof(float)});
    }
    std::vector<int32_t> mine(3000), gathered(3000 * kPeers, -1);
    for (size_t i = 0; i < mine.size(); ++i) mine[i] = static_cast<int32_t>(i + 7 * r);
    CollectiveCall gather;
    gather.kind = CollectiveKind::kAllGather;
    gather.in = mine.data();
    gather.count = mine.size();
    gather.dtype = DType::kInt32;
    gather.world = kPeers;
    calls.push_back(gather);
    results.push_back({gathered.data(), gathered.size() * sizeof(int32_t)});

    LazyDevice device(/*ends_wait_for_copies_back=*/r != 2, &waiting);
    std::vector<uint64_t> tickets;
    if (r == 2) {
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (waiting < 2 && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      CHECK_EQ(waiting.load(), 2);
    }
    start_staged(c, calls, device, tickets);
    CHECK_EQ(tickets.size(), calls.size());
    CHECK_EQ(device.started_.size(), calls.size());
    if (!device.started_.empty()) {
      // Leaf 0 went to the engine with one copy done and every copy queued.
      CHECK_EQ(device.copied_at_start_[0], size_t{1});
      CHECK_EQ(device.queued_at_start_[0], calls.size());
    }
    bool in_order = true;
    for (size_t i = 0; i < device.started_.size(); ++i) {
      in_order = in_order && device.started_[i] == i && device.copied_at_start_[i] == i + 1;
    }
    CHECK(in_order);
    CHECK_EQ(wait_staged(c, tickets, results, device), kPeers);
    CHECK_EQ(device.gate_timeouts_, size_t{0});
    // Every leaf after the first ended on an engine thread and was held there.
    if (r != 2) CHECK_EQ(device.gated_, calls.size() - 1);
    CHECK_EQ(device.ended_.size(), calls.size());
    CHECK_EQ(device.finishes_, size_t{1});

    // Reference: leaf l of rank p holds (i % 97) + 10 p + 1000 l (floats_of).
    Tally t{"staged sums"};
    for (size_t l = 0; l < counts.size(); ++l) {
      for (size_t i = 0; i < counts[l]; ++i) {
        float want = static_cast<float>(3 * ((i % 97) + 1000 * l) + 10 * (0 + 1 + 2));
        t.expect(out[l][i] == want, [&] { return "leaf " + std::to_string(l) + " [" +
                                                 std::to_string(i) + "]"; });
      }
    }
    t.finish();
    size_t wrong = 0;
    for (int p = 0; p < kPeers; ++p) {
      for (size_t i = 0; i < mine.size(); ++i) {
        wrong += gathered[p * mine.size() + i] != static_cast<int32_t>(i + 7 * p);
      }
    }
    CHECK_EQ(wrong, size_t{0});
  }, 10.0, "", {}, kConcurrentSlots);
  master.stop();
}

// Every element of a ring-sized sum, against a reference computed apart.
void test_every_element_of_a_ring_sum() {
  Master master(MasterConfig{});
  master.start();
  with_ring(master, kPeers, [&](int, Communicator& c) {
    const size_t count = 300001;
    std::vector<float> in = floats_of(count, c.rank(), 3), out(count, -1.0f);
    LazyDevice device;
    CHECK_EQ(run_staged(c, {sum_of(in)}, {{out.data(), count * sizeof(float)}}, device),
             kPeers);
    Tally t{"ring sum"};
    for (size_t i = 0; i < count; ++i) {
      float want = static_cast<float>(3 * ((i % 97) + 3000) + 10 * (0 + 1 + 2));
      t.expect(out[i] == want, [&] { return std::to_string(i); });
    }
    t.finish();
  });
  master.stop();
}

// Failures: an unknown ticket and a failed copy back fail the wait after
// every other leaf was copied back; a leaf the engine refuses fails the
// synchronous call after the leaves started before it ended, and the ring
// goes on (update_topology finds nothing left running).
void test_failures_end_the_call_with_everything_accounted_for() {
  Master master(MasterConfig{});
  master.start();
  with_ring(master, kPeers, [&](int, Communicator& c) {
    const int r = c.rank();
    std::vector<float> a = floats_of(1000, r, 0), b = floats_of(70000, r, 1);
    std::vector<float> oa(a.size(), -1), ob(b.size(), -1);
    std::vector<DeviceResult> results = {{oa.data(), oa.size() * 4}, {ob.data(), ob.size() * 4}};

    LazyDevice d1;
    std::vector<uint64_t> tickets;
    start_staged(c, {sum_of(a), sum_of(b)}, d1, tickets);
    std::vector<uint64_t> with_unknown = {tickets[0], tickets[1], 987654321};
    std::vector<DeviceResult> three = {results[0], results[1], {oa.data(), 4}};
    std::string what;
    CHECK(throws_kind([&] { wait_staged(c, with_unknown, three, d1); }, ErrorKind::kGeneric,
                      &what));
    CHECK(what.find("987654321") != std::string::npos || what.find("ticket") != std::string::npos);
    CHECK_EQ(d1.finishes_, size_t{1});
    CHECK_EQ(oa[999], static_cast<float>(3 * (999 % 97) + 30));
    CHECK_EQ(ob[69999], static_cast<float>(3 * ((69999 % 97) + 1000) + 30));

    LazyDevice d2;
    d2.fail_to_device_at(0);
    std::fill(oa.begin(), oa.end(), -1.0f);
    std::fill(ob.begin(), ob.end(), -1.0f);
    CHECK(throws_kind([&] { run_staged(c, {sum_of(a), sum_of(b)}, results, d2); },
                      ErrorKind::kGeneric, &what));
    CHECK(what.find("LazyDevice") != std::string::npos);
    CHECK_EQ(d2.ended_.size(), size_t{2});
    CHECK_EQ(d2.finishes_, size_t{1});
    // The first leaf to end failed its copy back; the other one got its result.
    CHECK(oa[0] == -1.0f || ob[0] == -1.0f);
    CHECK(oa[0] == static_cast<float>(30) || ob[0] == static_cast<float>(3 * 1000 + 30));

    // Refused by the engine: an all-gather without the world size it is sized for.
    CollectiveCall unsized;
    unsized.kind = CollectiveKind::kAllGather;
    unsized.in = a.data();
    unsized.count = a.size();
    LazyDevice d3;
    std::vector<float> gathered(a.size() * kPeers);
    CHECK(throws_kind([&] {
      run_staged(c, {sum_of(a), unsized}, {results[0], {gathered.data(), gathered.size() * 4}},
                 d3);
    }, ErrorKind::kGeneric, &what));
    CHECK(what.find("(world) is required") != std::string::npos);
    CHECK_EQ(d3.started_.size(), size_t{1});
    c.update_topology();  // refuses while a start is not waited for
    LazyDevice d4;
    std::fill(ob.begin(), ob.end(), -1.0f);
    CHECK_EQ(run_staged(c, {sum_of(b)}, {results[1]}, d4), kPeers);
    CHECK_EQ(ob[5], static_cast<float>(3 * (5 + 1000) + 30));
  });
  master.stop();
}

// A peer that leaves mid-run fails the others' staged wait promptly with a
// peer failure; nothing hangs.
void test_a_peer_leaving_fails_the_wait() {
  Master master(MasterConfig{});
  master.start();
  with_ring(master, 2, [&](int, Communicator& c) {
    std::vector<float> in = floats_of(200000, c.rank(), 0), out(in.size());
    if (c.rank() == 1) {
      c.close();
      return;
    }
    LazyDevice device;
    std::string what;
    bool failed = false;
    try {
      run_staged(c, {sum_of(in)}, {{out.data(), out.size() * 4}}, device);
    } catch (const PcclError& e) {
      failed = e.kind() == ErrorKind::kPeerFailure;
      what = e.what();
    }
    if (!CHECK(failed)) std::fprintf(stderr, "  the wait raised: %s\n", what.c_str());
    CHECK_EQ(device.finishes_, size_t{1});
  }, 3.0);
  master.stop();
}

}  // namespace

int main() {
  test_results_and_overlap();
  test_every_element_of_a_ring_sum();
  test_failures_end_the_call_with_everything_accounted_for();
  test_a_peer_leaving_fails_the_wait();
  return check_summary("test_staged_leaves");
}
