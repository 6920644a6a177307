// Several collectives in flight at once (peer/collective_slots.h): exact and
// bit-identical results, real overlap, failures that end every one of them
// fast, and mismatches still named. A master and three communicators on
// threads of one process, over 127.0.0.1.
#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "master/master.h"
#include "peer/communicator.h"
#include "tests/check.h"
#include "tests/engine_harness.h"

using namespace pccl;
using Clock = std::chrono::steady_clock;

namespace {

// An all-reduce started on `c` (the input is copied).
uint64_t start_all_reduce(Communicator& c, const void* in, size_t count, DType dtype, ReduceOp op,
                          const LeafDescriptor& leaf, Quantization quantization) {
  return c.start(all_reduce_call(in, nullptr, count, dtype, op, leaf, quantization));
}

constexpr int kPeers = 3;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Collective j's input on peer `rank`: small integers, so float32 sums are exact.
std::vector<float> input_of(size_t count, int j, int rank) {
  std::vector<float> v(count);
  for (size_t i = 0; i < count; ++i) v[i] = static_cast<float>((i * 7 + j) % 101 + 10 * rank);
  return v;
}

float expected_sum(size_t i, int j) {
  return static_cast<float>(kPeers * ((i * 7 + j) % 101) + 10 * (0 + 1 + 2));
}

size_t mismatches(const std::vector<float>& out, int j) {
  size_t bad = 0;
  for (size_t i = 0; i < out.size(); ++i) bad += out[i] != expected_sum(i, j);
  return bad;
}

// Inline-small (1 KiB), ring on a small slot (100 KiB), striped bulk (8 MiB).
const std::vector<size_t> kMixedCounts = {256, 25600, 2u << 20, 256, 25600, 256,
                                          2u << 20, 25600, 256, 25600, 2u << 20, 256};

void test_mixed_sizes_started_together_are_exact_and_identical() {
  Master master(MasterConfig{});
  master.start();
  const size_t jobs = kMixedCounts.size();
  std::vector<std::vector<std::vector<float>>> results(kPeers);
  std::vector<std::vector<uint16_t>> averages(kPeers);
  with_ring(master, kPeers, [&](int, Communicator& c) {
    int r = c.rank();
    std::vector<uint64_t> tickets;
    for (size_t j = 0; j < jobs; ++j) {
      std::vector<float> in = input_of(kMixedCounts[j], static_cast<int>(j), r);
      tickets.push_back(start_all_reduce(c, in.data(), in.size(), DType::kFloat32, ReduceOp::kSum,
                                           {}, Quantization::kNone));
    }
    // Not exact in bfloat16: the peers must still end with the same bits.
    std::vector<uint16_t> bin(40000), bout(bin.size());
    for (size_t i = 0; i < bin.size(); ++i) bin[i] = static_cast<uint16_t>(0x3F80 + (i * 13 + r) % 97);
    uint64_t avg = start_all_reduce(c, bin.data(), bin.size(), DType::kBFloat16, ReduceOp::kAvg, {},
                                      Quantization::kNone);
    results[r].resize(jobs);
    for (size_t j = 0; j < jobs; ++j) {
      results[r][j].resize(kMixedCounts[j]);
      CHECK_EQ(c.wait(tickets[j], results[r][j].data(), kMixedCounts[j] * 4), kPeers);
      CHECK_EQ(mismatches(results[r][j], static_cast<int>(j)), size_t(0));
    }
    c.wait(avg, bout.data(), bout.size() * 2);
    averages[r] = bout;
    CHECK_EQ(c.stats().collectives_done, uint64_t(jobs + 1));
  }, 10.0, "", {}, kConcurrentSlots);
  for (int p = 1; p < kPeers; ++p) {
    CHECK(results[p] == results[0]);
    CHECK(averages[p] == averages[0]);
  }
  master.stop();
}

// The leaves of a pytree (what the XLA handler does): in place, all at once.
void test_run_all_reduces_every_leaf_in_place() {
  Master master(MasterConfig{});
  master.start();
  with_ring(master, kPeers, [&](int, Communicator& c) {
    const int leaves = 40;
    std::vector<std::vector<float>> ins, outs;
    std::vector<CollectiveCall> calls;
    for (int j = 0; j < leaves; ++j) {
      size_t count = j % 10 == 9 ? (1u << 19) : j % 3 == 0 ? 25600 : 1024;
      ins.push_back(input_of(count, j, c.rank()));
      outs.emplace_back(count, -1.0f);
    }
    for (int j = 0; j < leaves; ++j) {
      CollectiveCall call;
      call.in = ins[j].data();
      call.out = outs[j].data();
      call.count = ins[j].size();
      call.leaf.leaf_index = static_cast<uint32_t>(j);
      call.leaf.leaf_count = leaves;
      calls.push_back(call);
    }
    CHECK_EQ(c.run_all(calls), kPeers);
    size_t bad = 0;
    for (int j = 0; j < leaves; ++j) bad += mismatches(outs[j], j);
    CHECK_EQ(bad, size_t(0));
  }, 10.0, "", {}, kConcurrentSlots);
  master.stop();
}

// The XLA wait handler does not block: wait_then() hands the
// result over on the engine thread that ends the collective (or at once).
void test_wait_then_hands_results_over_without_blocking() {
  Master master(MasterConfig{});
  master.start();
  for (int concurrency : {1, static_cast<int>(kConcurrentSlots)}) {
    with_ring(master, kPeers, [&](int, Communicator& c) {
      const std::vector<size_t> counts = {2u << 20, 1024, 25600};
      std::vector<std::vector<float>> outs;
      std::vector<std::promise<int>> ended(counts.size());
      for (size_t j = 0; j < counts.size(); ++j) {
        std::vector<float> in = input_of(counts[j], static_cast<int>(j), c.rank());
        outs.emplace_back(counts[j], -1.0f);
        uint64_t ticket = start_all_reduce(c, in.data(), in.size(), DType::kFloat32,
                                             ReduceOp::kSum, {}, Quantization::kNone);
        c.wait_then(ticket, outs[j].data(), counts[j] * 4,
                               [&, j](int world, std::exception_ptr error) {
                                 if (error) ended[j].set_exception(error);
                                 else ended[j].set_value(world);
                               });
      }
      size_t bad = 0;
      for (size_t j = 0; j < counts.size(); ++j) {
        std::future<int> f = ended[j].get_future();
        CHECK(f.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
        CHECK_EQ(f.get(), kPeers);
        bad += mismatches(outs[j], static_cast<int>(j));
      }
      CHECK_EQ(bad, size_t(0));
      CHECK(throws_kind([&] { c.wait_then(987654, nullptr, 0, nullptr); },
                        ErrorKind::kGeneric));
    }, 10.0, "", {}, concurrency);
  }
  master.stop();
}

// A small collective started after a large one must not queue behind it.
// Evidence that cannot come from timing noise: when the small one's wait
// returns, the engine has completed exactly one more collective (the small
// one), not two. Run one at a time, the large one would come first.
void test_small_collective_overtakes_a_large_one() {
  Master master(MasterConfig{});
  master.start();
  with_ring(master, kPeers, [&](int, Communicator& c) {
    std::vector<float> big(16u << 20, 1.0f), big_out(big.size());  // 64 MiB
    std::vector<float> small(1024, 2.0f), small_out(small.size());  // 4 KiB
    uint64_t done_before = c.stats().collectives_done;
    uint64_t large = start_all_reduce(c, big.data(), big.size(), DType::kFloat32, ReduceOp::kSum,
                                        {}, Quantization::kNone);
    uint64_t quick = start_all_reduce(c, small.data(), small.size(), DType::kFloat32,
                                        ReduceOp::kSum, {}, Quantization::kNone);
    c.wait(quick, small_out.data(), small.size() * 4);
    uint64_t done_at_small = c.stats().collectives_done;
    c.wait(large, big_out.data(), big.size() * 4);
    CHECK_EQ(done_at_small - done_before, uint64_t(1));
    CHECK_EQ(small_out[0], 6.0f);
    CHECK_EQ(big_out[big.size() - 1], 3.0f);
  }, 10.0, "", {}, kConcurrentSlots);
  master.stop();
}

// Rank 1 starts only the large collective and leaves while it moves data;
// the survivors also have small ones in flight (stuck in their header
// exchange, since rank 1 never joins them). Every one of them must fail
// fast, not after the 10 s timeout, and the survivors then go on.
void test_peer_leaving_fails_every_collective_in_flight() {
  Master master(MasterConfig{});
  master.start();
  with_ring(master, kPeers, [&](int, Communicator& c) {
    std::vector<float> big(16u << 20, 1.0f), out(big.size());
    std::vector<float> small(25600, 1.0f);
    c.all_reduce(small.data(), out.data(), 16, DType::kFloat32, ReduceOp::kSum, {});  // all in
    uint64_t large = start_all_reduce(c, big.data(), big.size(), DType::kFloat32, ReduceOp::kSum,
                                        {}, Quantization::kNone);
    if (c.rank() == 1) {
      // 5 ms, not more: on an idle machine the 64 MiB ring completes in about
      // 40 ms, and then there would be nothing in flight to cancel (CI saw
      // the wait return normally after a 50 ms sleep).
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      c.close();
      bool cancelled = false;
      std::string got = "returned normally";
      try {
        c.wait(large, out.data(), big.size() * 4);
      } catch (const PcclError& e) {
        cancelled = e.kind() == ErrorKind::kCancelled;
        got = std::string("kind ") + std::to_string(static_cast<int>(e.kind())) + ": " + e.what();
      }
      if (!CHECK(cancelled)) std::fprintf(stderr, "  the closed peer's wait: %s\n", got.c_str());
      return;
    }
    std::vector<uint64_t> tickets{large};
    for (int j = 0; j < 6; ++j) {
      size_t count = j % 2 ? 25600 : 256;  // ring and inline paths
      tickets.push_back(start_all_reduce(c, small.data(), count, DType::kFloat32, ReduceOp::kSum,
                                           {}, Quantization::kNone));
    }
    auto t0 = Clock::now();
    int failed = 0, peer_failures = 0;
    for (size_t j = 0; j < tickets.size(); ++j) {
      try {
        c.wait(tickets[j], out.data(), (j == 0 ? big.size() : j % 2 ? 256 : 25600) * 4);
        // Only the large one can have finished before rank 1 left, exactly.
        CHECK(j == 0 && out[big.size() - 1] == 3.0f);
      } catch (const PcclError& e) {
        ++failed;
        peer_failures += e.kind() == ErrorKind::kPeerFailure;
      }
    }
    CHECK(failed >= static_cast<int>(tickets.size()) - 1);
    CHECK(peer_failures >= 1);
    CHECK(seconds_since(t0) < 5.0);  // EOF on the lanes, not the 10 s timeout
    c.update_topology();
    CHECK_EQ(c.group_world_size(), 2);
    std::vector<float> a(25600, 1.0f), b(2u << 20, 1.0f), a_out(a.size()), b_out(b.size());
    std::vector<CollectiveCall> calls(2);
    calls[0].in = a.data(), calls[0].out = a_out.data(), calls[0].count = a.size();
    calls[1].in = b.data(), calls[1].out = b_out.data(), calls[1].count = b.size();
    CHECK_EQ(c.run_all(calls), 2);
    CHECK_EQ(a_out[a.size() - 1], 2.0f);
    CHECK_EQ(b_out[b.size() - 1], 2.0f);
  }, 10.0, "", {}, kConcurrentSlots);
  master.stop();
}

// Four small collectives in flight, one of them with another shape on rank
// 2: that one is a Mismatch naming the shape on every peer, the others are
// exact, and the ring stays usable.
void test_mismatch_among_concurrent_collectives_named_everywhere() {
  Master master(MasterConfig{});
  master.start();
  with_ring(master, kPeers, [&](int, Communicator& c) {
    const int jobs = 4;
    std::vector<std::vector<float>> ins, outs;
    std::vector<CollectiveCall> calls(jobs);
    for (int j = 0; j < jobs; ++j) {
      size_t count = j == 2 && c.rank() == 2 ? 1001 : 1000;
      ins.push_back(input_of(count, j, c.rank()));
      outs.emplace_back(count);
      calls[j].in = ins[j].data();
      calls[j].out = outs[j].data();
      calls[j].count = count;
      calls[j].leaf.dims = {static_cast<int64_t>(count)};
    }
    std::string message;
    try {
      c.run_all(calls);
    } catch (const PcclError& e) {
      CHECK(e.kind() == ErrorKind::kMismatch);
      message = e.what();
    }
    CHECK(message.find("shape") != std::string::npos);
    for (int j : {0, 1, 3}) CHECK_EQ(mismatches(outs[j], j), size_t(0));
    std::vector<float> in(1000, 1.0f), out(1000);
    c.all_reduce(in.data(), out.data(), in.size(), DType::kFloat32, ReduceOp::kSum, {});
    CHECK_EQ(out[999], 3.0f);
  }, 10.0, "", {}, kConcurrentSlots);
  master.stop();
}

// Concurrency is opt-in and must match along the ring: a neighbour that
// runs another value is refused with an error that says so, never a hang.
void test_neighbours_with_different_concurrency_are_refused() {
  Master master(MasterConfig{});
  master.start();
  auto serial = make_peer(master.port(), 5.0, "", 2, 1);
  auto concurrent = make_peer(master.port(), 5.0, "", 2, kConcurrentSlots);
  std::mutex mu;
  std::string messages;
  auto note = [&](const PcclError& e) {
    std::lock_guard<std::mutex> lock(mu);
    messages += std::string(e.what()) + "\n";
  };
  auto t0 = Clock::now();
  serial->connect(10.0);
  std::thread joiner([&] {
    try {
      concurrent->connect(10.0);
      concurrent->update_topology();
    } catch (const PcclError& e) {
      note(e);
    }
  });
  try {
    while (serial->group_world_size() < 2 && seconds_since(t0) < 15.0) {
      serial->update_topology();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } catch (const PcclError& e) {
    note(e);
  }
  joiner.join();
  CHECK(messages.find("concurrency") != std::string::npos);
  CHECK(seconds_since(t0) < 15.0);
  serial->close();
  concurrent->close();
  master.stop();
}

}  // namespace

int main() {
  test_mixed_sizes_started_together_are_exact_and_identical();
  test_run_all_reduces_every_leaf_in_place();
  test_wait_then_hands_results_over_without_blocking();
  test_small_collective_overtakes_a_large_one();
  test_peer_leaving_fails_every_collective_in_flight();
  test_mismatch_among_concurrent_collectives_named_everywhere();
  test_neighbours_with_different_concurrency_are_refused();
  return check_summary("test_concurrency");
}
