// The engine end to end in one process: a master and several communicators on
// threads over 127.0.0.1. No Python, no JAX.
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "master/master.h"
#include "peer/communicator.h"
#include "tests/check.h"
#include "transport/frame.h"

using namespace pccl;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::unique_ptr<Communicator> make_peer(uint16_t master_port, double timeout = 10.0) {
  CommunicatorConfig cfg;
  cfg.master_host = "127.0.0.1";
  cfg.master_port = master_port;
  cfg.timeout_s = timeout;
  return std::make_unique<Communicator>(cfg);
}

// Runs fn(rank_hint, comm) on n threads after all n peers are admitted.
void with_ring(Master& master, int n, const std::function<void(int, Communicator&)>& fn,
               double timeout = 10.0) {
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int i = 0; i < n; ++i) comms.push_back(make_peer(master.port(), timeout));
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      std::this_thread::sleep_for(std::chrono::milliseconds(30 * i));
      Communicator& c = *comms[i];
      c.connect(20.0);
      while (c.group_world_size() < n) {
        c.update_topology();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      fn(i, c);
    });
  }
  for (auto& t : threads) t.join();
}

void test_exact_sum_and_bit_identity() {
  Master master(MasterConfig{});
  master.start();
  const int n = 3;
  const size_t count = 1000003;  // not divisible by n: uneven segments
  std::vector<std::vector<float>> results(n);
  with_ring(master, n, [&](int, Communicator& c) {
    std::vector<float> in(count), out(count);
    for (size_t i = 0; i < count; ++i) in[i] = static_cast<float>((i % 97) + c.rank());
    int world = c.all_reduce(in.data(), out.data(), count, DType::kFloat32, ReduceOp::kSum, {});
    CHECK_EQ(world, n);
    bool exact = true;
    for (size_t i = 0; i < count; ++i) exact &= out[i] == static_cast<float>(3 * (i % 97) + 3);
    CHECK(exact);
    results[c.rank()] = out;
  });
  CHECK(results[0] == results[1] && results[1] == results[2]);
  master.stop();
}

void test_ops_and_tiny_counts() {
  Master master(MasterConfig{});
  master.start();
  const int n = 3;
  with_ring(master, n, [&](int, Communicator& c) {
    int r = c.rank();
    for (size_t count : {size_t(1), size_t(2), size_t(5)}) {  // fewer elements than peers too
      std::vector<int32_t> in(count, r + 2), out(count, -7);
      c.all_reduce(in.data(), out.data(), count, DType::kInt32, ReduceOp::kProd, {});
      CHECK_EQ(out[count - 1], 2 * 3 * 4);
      c.all_reduce(in.data(), out.data(), count, DType::kInt32, ReduceOp::kMin, {});
      CHECK_EQ(out[0], 2);
      c.all_reduce(in.data(), out.data(), count, DType::kInt32, ReduceOp::kMax, {});
      CHECK_EQ(out[0], 4);
      c.all_reduce(in.data(), out.data(), count, DType::kInt32, ReduceOp::kAvg, {});
      CHECK_EQ(out[0], 3);
    }
    std::vector<double> in(10, 1.0 + r), out(10);
    c.all_reduce(in.data(), out.data(), 10, DType::kFloat64, ReduceOp::kAvg, {});
    CHECK_EQ(out[9], 2.0);
  });
  master.stop();
}

void test_mismatch_reported_everywhere_ring_survives() {
  Master master(MasterConfig{});
  master.start();
  const int n = 3;
  with_ring(master, n, [&](int, Communicator& c) {
    size_t count = c.rank() == 2 ? 5 : 4;
    std::vector<float> in(5, 1.0f), out(5);
    LeafDescriptor leaf;
    leaf.dims = {static_cast<int64_t>(count)};
    std::string message;
    try {
      c.all_reduce(in.data(), out.data(), count, DType::kFloat32, ReduceOp::kSum, leaf);
    } catch (const PcclError& e) {
      CHECK(e.kind() == ErrorKind::kMismatch);
      message = e.what();
    }
    CHECK(message.find("shape") != std::string::npos);
    // Detected before data moved: the very next collective works.
    c.all_reduce(in.data(), out.data(), 4, DType::kFloat32, ReduceOp::kSum, {});
    CHECK_EQ(out[0], 3.0f);
  });
  master.stop();
}

void test_closed_peer_fails_others_fast_then_survivors_continue() {
  Master master(MasterConfig{});
  master.start();
  const int n = 3;
  with_ring(master, n, [&](int, Communicator& c) {
    std::vector<float> in(1 << 20, 1.0f), out(1 << 20);
    c.all_reduce(in.data(), out.data(), in.size(), DType::kFloat32, ReduceOp::kSum, {});
    if (c.rank() == 1) {
      c.close();  // leaves mid-run: the others are about to start a collective
      return;
    }
    auto t0 = Clock::now();
    bool failed = false;
    try {
      c.all_reduce(in.data(), out.data(), in.size(), DType::kFloat32, ReduceOp::kSum, {});
    } catch (const PcclError& e) {
      failed = e.kind() == ErrorKind::kPeerFailure;
    }
    CHECK(failed);
    CHECK(seconds_since(t0) < 5.0);  // EOF, not the 10 s timeout
    c.update_topology();
    CHECK_EQ(c.group_world_size(), 2);
    c.all_reduce(in.data(), out.data(), in.size(), DType::kFloat32, ReduceOp::kSum, {});
    CHECK_EQ(out[123], 2.0f);
  });
  master.stop();
}

void test_unreachable_master_bounded() {
  uint16_t port;
  {
    Master m(MasterConfig{});  // bind then close: a port nobody listens on
    port = m.port();
  }
  auto c = make_peer(port, 1.0);
  auto t0 = Clock::now();
  bool right_kind = false;
  try {
    c->connect(1.0);
  } catch (const PcclError& e) {
    right_kind = e.kind() == ErrorKind::kMasterUnreachable;
  }
  CHECK(right_kind);
  CHECK(seconds_since(t0) < 3.0);
}

void test_admission_timeout_leaves_nothing_behind() {
  Master master(MasterConfig{});
  master.start();
  auto first = make_peer(master.port());
  first->connect(5.0);  // accepted at once, never calls update_topology()
  auto late = make_peer(master.port());
  auto t0 = Clock::now();
  bool refused = false;
  try {
    late->connect(0.5);
  } catch (const PcclError& e) {
    refused = std::string(e.what()).find("not admitted") != std::string::npos;
  }
  CHECK(refused);
  CHECK(seconds_since(t0) < 3.0);
  // The failed peer closed itself: the master forgets it, nobody stays pending.
  bool forgotten = false;
  for (int i = 0; i < 50 && !forgotten; ++i) {
    forgotten = master.status_json().find("\"pending\":0") != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(forgotten);
  bool closed_error = false;
  try {
    late->connect(0.5);
  } catch (const PcclError& e) {
    closed_error = std::string(e.what()).find("closed") != std::string::npos;
  }
  CHECK(closed_error);
  master.stop();
}

void test_silent_peer_dropped_by_heartbeat_timeout() {
  MasterConfig cfg;
  cfg.heartbeat_timeout_s = 1.0;
  Master master(cfg);
  master.start();
  // A raw client that registers and then says nothing: a frozen process.
  Socket silent = Socket::connect_to("127.0.0.1", master.port(), Deadline::after(2), nullptr);
  HelloMsg hello{9, 1234, ""};
  write_frame(silent, static_cast<uint16_t>(MsgType::kHello), hello.encode(), Deadline::after(2),
              nullptr);
  auto registered = [&] { return master.status_json().find("\"group\":9,") != std::string::npos; };
  bool seen = false;
  for (int i = 0; i < 50 && !seen; ++i) {
    seen = registered();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(seen);
  auto t0 = Clock::now();
  while (master.status_json().find("\"world_size\":1,") != std::string::npos &&
         seconds_since(t0) < 5.0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  double took = seconds_since(t0);
  CHECK(took > 0.5 && took < 3.0);  // dropped after ~1 s of silence, not before
  master.stop();
}

void test_calls_after_master_loss_raise_master_unreachable() {
  auto master = std::make_unique<Master>(MasterConfig{});
  master->start();
  auto a = make_peer(master->port(), 5.0);
  auto b = make_peer(master->port(), 5.0);
  std::thread ta([&] {
    a->connect(10.0);
    while (a->group_world_size() < 2) {
      a->update_topology();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  b->connect(10.0);
  ta.join();
  master->stop();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (Communicator* c : {a.get(), b.get()}) {
    std::vector<float> in(10, 1.0f), out(10);
    auto t0 = Clock::now();
    int kinds = 0;
    try {
      c->all_reduce(in.data(), out.data(), 10, DType::kFloat32, ReduceOp::kSum, {});
    } catch (const PcclError& e) {
      kinds += e.kind() == ErrorKind::kMasterUnreachable;
    }
    try {
      c->update_topology();
    } catch (const PcclError& e) {
      kinds += e.kind() == ErrorKind::kMasterUnreachable;
    }
    CHECK_EQ(kinds, 2);
    CHECK(seconds_since(t0) < 1.0);
  }
}

void report_throughput() {
  Master master(MasterConfig{});
  master.start();
  const size_t count = (64u << 20) / 4;
  with_ring(master, 2, [&](int, Communicator& c) {
    std::vector<float> in(count, 1.0f), out(count);
    c.all_reduce(in.data(), out.data(), count, DType::kFloat32, ReduceOp::kSum, {});
    auto t0 = Clock::now();
    const int iters = 5;
    for (int i = 0; i < iters; ++i) {
      c.all_reduce(in.data(), out.data(), count, DType::kFloat32, ReduceOp::kSum, {});
    }
    double t = seconds_since(t0) / iters;
    if (c.rank() == 0) {
      std::printf("engine-only N=2 64 MiB float32: %.1f ms/call, busbw %.2f GB/s\n", t * 1e3,
                  (64u << 20) / t / 1e9);
    }
  });
  master.stop();
}

}  // namespace

int main(int argc, char** argv) {
  test_exact_sum_and_bit_identity();
  test_ops_and_tiny_counts();
  test_mismatch_reported_everywhere_ring_survives();
  test_closed_peer_fails_others_fast_then_survivors_continue();
  test_unreachable_master_bounded();
  test_admission_timeout_leaves_nothing_behind();
  test_silent_peer_dropped_by_heartbeat_timeout();
  test_calls_after_master_loss_raise_master_unreachable();
  if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) report_throughput();
  return check_summary("test_engine");
}
