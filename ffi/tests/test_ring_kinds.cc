// The ring's other collectives over real loopback TCP: all-gather,
// broadcast (every root) and reduce-scatter, for 2 to 5 peers whose hops
// have different lane counts, sizes from empty to several chunks with
// uneven tails. Expected values are computed here from the inputs alone;
// every peer's output is compared with them byte for byte. A peer that
// closes its links mid-collective fails every other peer (no hang).
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "collectives/ring_all_gather.h"
#include "collectives/ring_broadcast.h"
#include "collectives/ring_reduce_scatter.h"
#include "tests/check.h"
#include "tests/loopback_pair.h"

using namespace pccl;

namespace {

struct Ring {
  std::vector<Socket> sockets;  // owns every fd below
  std::vector<RingPeers> peer;
};

// Peer p's right lanes are peer p+1's left lanes; peer p opens lanes[p] of them.
Ring make_ring(const std::vector<int>& lanes) {
  int n = static_cast<int>(lanes.size());
  Ring r;
  r.peer.resize(n);
  for (int p = 0; p < n; ++p) {
    r.peer[p].rank = p;
    r.peer[p].size = n;
  }
  for (int p = 0; p < n; ++p) {
    for (int i = 0; i < lanes[p]; ++i) {
      Socket server;
      Socket client = connected_pair(&server);
      r.peer[p].right.push_back(client.fd());
      r.peer[(p + 1) % n].left.push_back(server.fd());
      r.sockets.push_back(std::move(client));
      r.sockets.push_back(std::move(server));
    }
  }
  return r;
}

// Runs fn(p) on one thread per peer; returns each peer's error ("" if none).
std::vector<std::string> on_every_peer(int n, const std::function<void(int)>& fn) {
  std::vector<std::string> errors(n);
  std::vector<std::thread> threads;
  for (int p = 0; p < n; ++p) {
    threads.emplace_back([&, p] {
      try {
        fn(p);
      } catch (const std::exception& e) {
        errors[p] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

RingOptions options() {
  RingOptions opt;
  opt.stall_timeout_s = 10;
  return opt;
}

// Peer p's input: count int32 values that differ per peer and per element.
std::vector<int32_t> input_of(int p, size_t count) {
  std::vector<int32_t> v(count);
  for (size_t i = 0; i < count; ++i) v[i] = static_cast<int32_t>((i * 2654435761u + p * 97) % 100003) - 50000;
  return v;
}

void check_all_gather(const std::vector<int>& lanes, size_t count) {
  int n = static_cast<int>(lanes.size());
  Ring ring = make_ring(lanes);
  std::vector<std::vector<int32_t>> in(n), out(n);
  for (int p = 0; p < n; ++p) {
    in[p] = input_of(p, count);
    out[p].assign(count * n, -7);
  }
  auto errors = on_every_peer(n, [&](int p) {
    ring_all_gather(ring.peer[p], options(), in[p].data(), out[p].data(), count, DType::kInt32);
  });
  Tally t{"all_gather n=" + std::to_string(n) + " count=" + std::to_string(count)};
  for (int p = 0; p < n; ++p) {
    t.expect(errors[p].empty(), [&] { return "peer " + std::to_string(p) + ": " + errors[p]; });
    for (int src = 0; src < n; ++src) {
      bool same = count == 0 ||
                  std::memcmp(out[p].data() + src * count, in[src].data(), count * 4) == 0;
      t.expect(same, [&] {
        return "peer " + std::to_string(p) + " holds a wrong copy of rank " + std::to_string(src);
      });
    }
  }
  t.finish();
}

void check_broadcast(const std::vector<int>& lanes, size_t count, int root, bool in_place) {
  int n = static_cast<int>(lanes.size());
  Ring ring = make_ring(lanes);
  std::vector<std::vector<int32_t>> in(n), out(n);
  for (int p = 0; p < n; ++p) {
    in[p] = input_of(p, count);
    out[p].assign(count, -7);
  }
  auto errors = on_every_peer(n, [&](int p) {
    void* dst = in_place ? static_cast<void*>(in[p].data()) : out[p].data();
    ring_broadcast(ring.peer[p], options(), in[p].data(), dst, count, DType::kInt32, root);
  });
  std::vector<int32_t> expected = input_of(root, count);
  Tally t{"broadcast n=" + std::to_string(n) + " root=" + std::to_string(root) +
          " count=" + std::to_string(count) + (in_place ? " in place" : "")};
  for (int p = 0; p < n; ++p) {
    t.expect(errors[p].empty(), [&] { return "peer " + std::to_string(p) + ": " + errors[p]; });
    const auto& got = in_place ? in[p] : out[p];
    t.expect(got == expected, [&] { return "peer " + std::to_string(p) + " differs from the root"; });
  }
  t.finish();
}

// Exact references: integer sums wrap like the kernels do (computed in
// uint32), floats are small integers (sums exact in float32).
void check_reduce_scatter_int(const std::vector<int>& lanes, size_t slice, ReduceOp op) {
  int n = static_cast<int>(lanes.size());
  size_t count = slice * n;
  Ring ring = make_ring(lanes);
  std::vector<std::vector<int32_t>> in(n), out(n);
  for (int p = 0; p < n; ++p) {
    in[p] = input_of(p, count);
    out[p].assign(slice, -7);
  }
  auto errors = on_every_peer(n, [&](int p) {
    ring_reduce_scatter(ring.peer[p], options(), in[p].data(), out[p].data(), count,
                        DType::kInt32, op);
  });
  Tally t{std::string("reduce_scatter int32 ") + reduce_op_name(op) + " n=" + std::to_string(n) +
          " slice=" + std::to_string(slice)};
  for (int p = 0; p < n; ++p) {
    t.expect(errors[p].empty(), [&] { return "peer " + std::to_string(p) + ": " + errors[p]; });
    for (size_t i = 0; i < slice; ++i) {
      size_t at = p * slice + i;
      uint32_t sum = 0;
      int32_t hi = in[0][at];
      for (int q = 0; q < n; ++q) {
        sum += static_cast<uint32_t>(in[q][at]);
        hi = std::max(hi, in[q][at]);
      }
      int32_t want = op == ReduceOp::kMax ? hi : static_cast<int32_t>(sum);
      t.expect(out[p][i] == want, [&] {
        return "peer " + std::to_string(p) + " [" + std::to_string(i) + "] = " +
               std::to_string(out[p][i]) + ", expected " + std::to_string(want);
      });
    }
  }
  t.finish();
}

void check_reduce_scatter_float_avg(const std::vector<int>& lanes, size_t slice) {
  int n = static_cast<int>(lanes.size());
  size_t count = slice * n;
  Ring ring = make_ring(lanes);
  std::vector<std::vector<float>> in(n), out(n);
  for (int p = 0; p < n; ++p) {
    in[p].resize(count);
    for (size_t i = 0; i < count; ++i) in[p][i] = static_cast<float>((i * 31 + p * 7) % 2048);
    out[p].assign(slice, -1.0f);
  }
  auto errors = on_every_peer(n, [&](int p) {
    ring_reduce_scatter(ring.peer[p], options(), in[p].data(), out[p].data(), count,
                        DType::kFloat32, ReduceOp::kAvg);
  });
  Tally t{"reduce_scatter float32 avg n=" + std::to_string(n) + " slice=" + std::to_string(slice)};
  for (int p = 0; p < n; ++p) {
    t.expect(errors[p].empty(), [&] { return "peer " + std::to_string(p) + ": " + errors[p]; });
    for (size_t i = 0; i < slice; ++i) {
      float sum = 0;
      for (int q = 0; q < n; ++q) sum += in[q][p * slice + i];
      float want = sum / static_cast<float>(n);
      t.expect(out[p][i] == want, [&] {
        return "peer " + std::to_string(p) + " [" + std::to_string(i) + "] = " +
               std::to_string(out[p][i]) + ", expected " + std::to_string(want);
      });
    }
  }
  t.finish();
}

void test_all_gather() {
  for (size_t count : {size_t{0}, size_t{1}, size_t{1000}, (size_t{1} << 20) + 333}) {
    check_all_gather({1, 1}, count);
    check_all_gather({3, 1, 2}, count);
    check_all_gather({2, 4, 1, 3, 2}, count);
  }
}

void test_broadcast_from_every_root() {
  for (size_t count : {size_t{0}, size_t{5}, size_t{70000}, (size_t{3} << 20) + 17}) {
    for (int root = 0; root < 4; ++root) check_broadcast({2, 1, 3, 2}, count, root, false);
  }
  check_broadcast({1, 1}, (size_t{1} << 20) + 1, 1, false);
  for (int root = 0; root < 3; ++root) check_broadcast({2, 2, 1}, (size_t{2} << 20) + 9, root, true);
}

void test_reduce_scatter() {
  for (size_t slice : {size_t{0}, size_t{1}, size_t{777}, (size_t{1} << 19) + 5}) {
    check_reduce_scatter_int({1, 2}, slice, ReduceOp::kSum);
    check_reduce_scatter_int({2, 1, 3}, slice, ReduceOp::kSum);
    check_reduce_scatter_int({1, 3, 2, 2}, slice, ReduceOp::kMax);
    check_reduce_scatter_float_avg({2, 2, 1, 1, 3}, slice);
  }
}

void test_reduce_scatter_refuses_uneven_and_overlapping_buffers() {
  RingPeers alone;
  alone.size = 3;
  std::vector<int32_t> buf(12);
  std::string what;
  CHECK(throws_kind([&] { ring_reduce_scatter(alone, options(), buf.data(), buf.data() + 8, 10,
                                              DType::kInt32, ReduceOp::kSum); },
                    ErrorKind::kGeneric, &what));
  CHECK(what.find("do not split evenly over 3 peers") != std::string::npos);
  CHECK(throws_kind([&] { ring_reduce_scatter(alone, options(), buf.data(), buf.data() + 4, 9,
                                              DType::kInt32, ReduceOp::kSum); },
                    ErrorKind::kGeneric, &what));
  CHECK(what.find("overlaps") != std::string::npos);
}

// One peer resets all its links before taking part, as a killed process's
// kernel does: every other peer of each kind fails, none hangs (stall
// timeout 10 s). A peer that fails resets its links, as a communicator's
// broken ring does (RingLinks::break_links), so the failure travels round
// the ring at once. Upstream of the dead peer (ranks up to may_finish), a
// broadcast may legitimately finish: the root and peer 1 had only to
// receive from the root and send on, and what they sent may all have been
// taken before the reset. With shutdowns instead of resets, a sender whose
// bytes filled the window of a peer that stopped reading waited out the
// stall timeout (7 of 15 runs under load: 10.0 s).
void test_a_dead_peer_fails_everyone(const char* kind, int may_finish,
                                     const std::function<void(RingPeers&, size_t)>& run) {
  const int n = 4;
  Ring ring = make_ring({2, 2, 2, 2});
  const size_t count = size_t{2} << 20;
  auto start = std::chrono::steady_clock::now();
  auto errors = on_every_peer(n, [&](int p) {
    if (p == 2) {
      for (int fd : ring.peer[p].right) reset_connection(fd);
      for (int fd : ring.peer[p].left) reset_connection(fd);
      return;
    }
    try {
      run(ring.peer[p], count);
    } catch (...) {
      for (int fd : ring.peer[p].right) reset_connection(fd);
      for (int fd : ring.peer[p].left) reset_connection(fd);
      throw;
    }
  });
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int p = 0; p < n; ++p) {
    if (p == 2 || p <= may_finish) continue;
    if (!CHECK(!errors[p].empty())) std::fprintf(stderr, "  %s: peer %d finished\n", kind, p);
  }
  // Well under the stall timeout: EOF and resets travel the ring at once.
  if (!CHECK(took < 8.0)) std::fprintf(stderr, "  %s: took %.1f s\n", kind, took);
}

void test_dead_peers() {
  std::vector<int32_t> in(size_t{2} << 20, 1);
  test_a_dead_peer_fails_everyone("all_gather", -1, [&](RingPeers& r, size_t count) {
    std::vector<int32_t> out(count * r.size);
    ring_all_gather(r, options(), in.data(), out.data(), count, DType::kInt32);
  });
  test_a_dead_peer_fails_everyone("broadcast", 1, [&](RingPeers& r, size_t count) {
    std::vector<int32_t> out(count);
    ring_broadcast(r, options(), in.data(), out.data(), count, DType::kInt32, 0);
  });
  test_a_dead_peer_fails_everyone("reduce_scatter", -1, [&](RingPeers& r, size_t count) {
    std::vector<int32_t> out(count / r.size);
    ring_reduce_scatter(r, options(), in.data(), out.data(), count, DType::kInt32, ReduceOp::kSum);
  });
}

}  // namespace

int main() {
  test_all_gather();
  test_broadcast_from_every_root();
  test_reduce_scatter();
  test_reduce_scatter_refuses_uneven_and_overlapping_buffers();
  test_dead_peers();
  std::printf("element cases: %ld\n", g_bulk_cases.load());
  return check_summary("test_ring_kinds");
}
