// Shared-state sync end to end in one process: a master and communicators on
// threads, so that the sanitizer builds check the serving and fetching
// threads too. No Python, no JAX.
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "common/content_hash.h"
#include "common/errors.h"
#include "master/master.h"
#include "peer/communicator.h"
#include "tests/check.h"
#include "tests/engine_harness.h"

using namespace pccl;

namespace {

constexpr size_t kLeafFloats = 3 << 20;  // 12 MiB: three chunks per leaf

struct PeerState {
  std::vector<float> big, small;
  std::vector<SharedStateLeaf> leaves() const {
    return {{big.data(), big.size() * 4, DType::kFloat32, {static_cast<int64_t>(big.size())}},
            {small.data(), small.size() * 4, DType::kFloat32, {static_cast<int64_t>(small.size())}}};
  }
};

PeerState make_state(float seed) {
  PeerState s;
  s.big.resize(kLeafFloats);
  for (size_t i = 0; i < s.big.size(); ++i) s.big[i] = seed + static_cast<float>(i % 977);
  s.small = {1.0f, 2.0f, 3.0f};  // the same everywhere: never moves
  return s;
}

struct Result {
  SyncOutcome out;
  bool ok = false;
  std::string error;
};

// Peers below `holders` hold revision 2 (seed 1), the others are stale
// (revision 1, seed 2).
std::vector<Result> sync_round(std::vector<std::unique_ptr<Communicator>>& comms, int holders) {
  std::vector<Result> results(comms.size());
  std::mutex mu;
  with_ring_of(comms, [&](int i, Communicator& c) {
    bool holder = i < holders;
    PeerState s = make_state(holder ? 1.0f : 2.0f);
    Result r;
    try {
      r.out = c.sync_shared_state(s.leaves(), holder ? 2 : 1, SyncStrategy::kEnforcePopular);
      r.ok = true;
    } catch (const PcclError& e) {
      r.error = e.what();
    }
    std::lock_guard<std::mutex> lock(mu);
    results[i] = std::move(r);
  });
  return results;
}

// What peer `i` received is seed 1's big leaf, and the byte counts add up.
void check_received_seed_one(const std::vector<Result>& results, size_t i, uint64_t served) {
  PeerState want = make_state(1.0f);
  const Result& stale = results[i];
  if (!CHECK(stale.ok)) {
    std::fprintf(stderr, "  stale peer: %s\n", stale.error.c_str());
    return;
  }
  CHECK_EQ(stale.out.revision, 2u);
  CHECK_EQ(stale.out.received.size(), 1u);  // only the big leaf differed
  if (stale.out.received.size() != 1) return;
  const HostBuffer& got = stale.out.received[0].bytes;
  CHECK_EQ(stale.out.received[0].index, 0u);
  CHECK_EQ(got.size, want.big.size() * 4);
  CHECK(std::memcmp(got.data.get(), want.big.data(), got.size) == 0);
  // A leaf that arrived corrupted is fetched again whole.
  uint64_t expected_rx = got.size * (1 + stale.out.refetched_leaves);
  CHECK_EQ(stale.out.rx_bytes, expected_rx);
  CHECK_EQ(served, expected_rx);
}

void test_stale_peer_catches_up_from_two_holders() {
  MasterConfig mc;
  Master master(mc);
  master.start();
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int i = 0; i < 3; ++i) comms.push_back(make_peer(master.port()));
  std::vector<Result> results = sync_round(comms, 2);
  for (const Result& r : results) CHECK(r.ok);
  check_received_seed_one(results, 2, results[0].out.tx_bytes + results[1].out.tx_bytes);
  CHECK_EQ(results[2].out.refetched_leaves, 0u);
}

void test_corrupted_range_is_refetched() {
  MasterConfig mc;
  Master master(mc);
  master.start();
  // The hook is read when a communicator is built: the only holder (peer 0)
  // spoils the first range it serves, so exactly one of the two stale peers
  // gets a corrupted leaf and must fetch it again.
  std::vector<std::unique_ptr<Communicator>> comms;
  setenv("JAX_PCCL_TEST_CORRUPT_SERVED_RANGES", "1", 1);
  comms.push_back(make_peer(master.port()));
  unsetenv("JAX_PCCL_TEST_CORRUPT_SERVED_RANGES");
  for (int i = 1; i < 3; ++i) comms.push_back(make_peer(master.port()));
  std::vector<Result> results = sync_round(comms, 1);
  for (const Result& r : results) CHECK(r.ok);
  uint64_t received = results[1].out.rx_bytes + results[2].out.rx_bytes;
  CHECK_EQ(results[0].out.tx_bytes, received);
  check_received_seed_one(results, 1, results[1].out.rx_bytes);
  check_received_seed_one(results, 2, results[2].out.rx_bytes);
  CHECK_EQ(results[1].out.refetched_leaves + results[2].out.refetched_leaves, 1u);
}

}  // namespace

int main() {
  test_stale_peer_catches_up_from_two_holders();
  test_corrupted_range_is_refetched();
  return check_summary("test_shared_state_sync");
}
