// The communicator's collectives of every kind (peer/collective_kinds.h):
// all-gather, broadcast and reduce-scatter on the inline path (small
// inputs) and the ring, blocking and started/waited (results larger or
// smaller than inputs), alongside all-reduces in flight; the failures every
// peer raises alike (a group of another size than the output was sized for,
// a root outside the group, peers calling different kinds), after which the
// ring still works. A master and three communicators on threads of one
// process, over 127.0.0.1.
#include <cstdint>
#include <string>
#include <vector>

#include "common/errors.h"
#include "master/master.h"
#include "peer/communicator.h"
#include "tests/check.h"
#include "tests/engine_harness.h"

using namespace pccl;

namespace {

constexpr int kPeers = 3;

std::vector<int32_t> input_of(size_t count, int rank) {
  std::vector<int32_t> v(count);
  for (size_t i = 0; i < count; ++i) v[i] = static_cast<int32_t>(i * 3 + 1000 * rank);
  return v;
}

CollectiveCall call_of(CollectiveKind kind, const void* in, void* out, size_t count) {
  CollectiveCall c;
  c.kind = kind;
  c.in = in;
  c.out = out;
  c.count = count;
  c.dtype = DType::kInt32;
  c.world = kPeers;
  return c;
}

// Small (inline) and several-chunk (ring) sizes of each kind, blocking.
void check_kinds(Communicator& c, size_t count) {
  const int r = c.rank();
  std::vector<int32_t> in = input_of(count, r);
  std::vector<int32_t> gathered(count * kPeers, -1);
  CHECK_EQ(c.run(call_of(CollectiveKind::kAllGather, in.data(), gathered.data(), count)), kPeers);
  size_t wrong = 0;
  for (int p = 0; p < kPeers; ++p) wrong += input_of(count, p) !=
      std::vector<int32_t>(gathered.begin() + p * count, gathered.begin() + (p + 1) * count);
  CHECK_EQ(wrong, size_t{0});

  std::vector<int32_t> bcast(count, -1);
  CollectiveCall b = call_of(CollectiveKind::kBroadcast, in.data(), bcast.data(), count);
  b.root = 2;
  b.world = 0;  // any: a broadcast's output does not depend on it
  c.run(b);
  CHECK(bcast == input_of(count, 2));

  size_t total = count * kPeers;
  std::vector<int32_t> scatter_in = input_of(total, r), slice(count, -1);
  c.run(call_of(CollectiveKind::kReduceScatter, scatter_in.data(), slice.data(), total));
  wrong = 0;
  for (size_t i = 0; i < count; ++i) {
    size_t at = r * count + i;
    wrong += slice[i] != static_cast<int32_t>(3 * (at * 3) + 1000 * (0 + 1 + 2));
  }
  CHECK_EQ(wrong, size_t{0});
}

void test_every_kind_inline_and_on_the_ring() {
  Master master(MasterConfig{});
  master.start();
  with_ring(master, kPeers, [&](int, Communicator& c) {
    check_kinds(c, 10);               // 40 bytes: inline
    check_kinds(c, (1u << 20) + 7);   // 4 MiB: the ring, uneven chunk tails
  });
  master.stop();
}

// Started kinds whose results differ in size from their inputs, beside an
// all-reduce, in flight together on several slots.
void test_started_kinds_of_other_result_sizes() {
  Master master(MasterConfig{});
  master.start();
  with_ring(master, kPeers, [&](int, Communicator& c) {
    const int r = c.rank();
    const size_t count = 300000;
    std::vector<int32_t> in = input_of(count, r);
    CollectiveCall gather = call_of(CollectiveKind::kAllGather, in.data(), nullptr, count);
    CollectiveCall scatter = call_of(CollectiveKind::kReduceScatter, in.data(), nullptr, count);
    CollectiveCall sum = call_of(CollectiveKind::kAllReduce, in.data(), nullptr, count);
    sum.world = 0;
    uint64_t tg = c.start(gather), ts = c.start(scatter), tr = c.start(sum);
    std::vector<int32_t> g(count * kPeers), s(count / kPeers), a(count);
    CHECK_EQ(c.wait(tr, a.data(), a.size() * 4), kPeers);
    CHECK_EQ(c.wait(ts, s.data(), s.size() * 4), kPeers);
    std::string what;
    CHECK(throws_kind([&] { c.wait(tg, g.data(), count * 4); }, ErrorKind::kGeneric, &what));
    CHECK(what.find("the result has " + std::to_string(g.size() * 4) + " bytes") != std::string::npos);
    size_t wrong = 0;
    for (size_t i = 0; i < count; ++i) wrong += a[i] != static_cast<int32_t>(3 * (i * 3) + 3000);
    for (size_t i = 0; i < s.size(); ++i) {
      size_t at = r * s.size() + i;
      wrong += s[i] != static_cast<int32_t>(3 * (at * 3) + 3000);
    }
    CHECK_EQ(wrong, size_t{0});
  }, 10.0, "", {}, kConcurrentSlots);
  master.stop();
}

// Failures every peer raises alike, before data moves; the ring goes on.
void test_consistent_failures_leave_the_ring_usable() {
  Master master(MasterConfig{});
  master.start();
  with_ring(master, kPeers, [&](int, Communicator& c) {
    const int r = c.rank();
    std::vector<int32_t> in = input_of(2000, r), out(2000 * 4);
    std::string what;
    // Sized for 4 peers in a group of 3.
    CollectiveCall stale = call_of(CollectiveKind::kAllGather, in.data(), out.data(), 2000);
    stale.world = 4;
    CHECK(throws_kind([&] { c.run(stale); }, ErrorKind::kMismatch, &what));
    CHECK(what.find("sized for 4 peers, the group has 3") != std::string::npos);
    // A root that is no rank.
    CollectiveCall bad_root = call_of(CollectiveKind::kBroadcast, in.data(), out.data(), 2000);
    bad_root.root = 3;
    CHECK(throws_kind([&] { c.run(bad_root); }, ErrorKind::kGeneric, &what));
    CHECK(what.find("root 3 is not a rank of this group (3 peers)") != std::string::npos);
    // Rank 1 gathers while the others broadcast: "operation" on every peer.
    CollectiveCall odd = call_of(r == 1 ? CollectiveKind::kAllGather : CollectiveKind::kBroadcast,
                                 in.data(), out.data(), 2000);
    CHECK(throws_kind([&] { c.run(odd); }, ErrorKind::kMismatch, &what));
    CHECK(what.find("(operation)") != std::string::npos);
    // The world size an all_gather is sized for is required (refused here, nothing sent).
    CollectiveCall unsized = call_of(CollectiveKind::kAllGather, in.data(), out.data(), 2000);
    unsized.world = 0;
    CHECK(throws_kind([&] { c.run(unsized); }, ErrorKind::kGeneric, &what));
    CHECK(what.find("(world) is required") != std::string::npos);
    check_kinds(c, 2000);
  });
  master.stop();
}

}  // namespace

int main() {
  test_every_kind_inline_and_on_the_ring();
  test_started_kinds_of_other_result_sizes();
  test_consistent_failures_leave_the_ring_usable();
  return check_summary("test_collective_kinds");
}
