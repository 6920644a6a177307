// The shared-state fetcher against real StateServers over loopback sockets
// (no master, no handshake: the connect hook hands the server side of a fresh
// pair to the holder's server). Checks how work is spread over holders.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "common/content_hash.h"
#include "state/state_fetcher.h"
#include "state/state_server.h"
#include "tests/check.h"
#include "tests/loopback_pair.h"

using namespace pccl;

namespace {

constexpr uint64_t kFetcherId = 99;
constexpr uint64_t kChunk = 64 << 10;
constexpr size_t kLeafBytes = 16 * kChunk;  // 16 chunks: 8 dealt to each holder

struct Holder {
  uint64_t id;
  std::unique_ptr<StateServer> server;
  int connect_delay_ms = 0;
};

std::unique_ptr<StateServer> serving(const std::vector<uint8_t>& leaf, const char* delay_ms) {
  // The per-range delay is a test hook read when a server is built.
  if (delay_ms != nullptr) setenv("JAX_PCCL_TEST_SERVE_DELAY_MS", delay_ms, 1);
  auto server = std::make_unique<StateServer>(10.0);
  unsetenv("JAX_PCCL_TEST_SERVE_DELAY_MS");
  server->publish({{leaf.data(), leaf.size()}});
  return server;
}

// Holder 1 answers slowly (each range after 150 ms); holder 2's links open
// 20 ms late. Before a worker has received anything it must not take other
// holders' share: holder 1's idle second stream used to take holder 2's
// whole share at once, before holder 2's workers had started, so one slow
// holder served every byte (seen as "the killed holder served nothing" in
// test_shared_state.py). Now each holder serves at least its own share.
void test_a_late_holder_still_serves_its_share() {
  std::vector<uint8_t> leaf(kLeafBytes);
  for (size_t i = 0; i < leaf.size(); ++i) leaf[i] = static_cast<uint8_t>(i * 131 + (i >> 9));
  std::vector<Holder> holders;
  holders.push_back({1, serving(leaf, "150"), 0});
  holders.push_back({2, serving(leaf, nullptr), 20});

  std::vector<uint8_t> dest(kLeafBytes, 0);
  FetchTarget target;
  target.leaf = 0;
  target.dest = dest.data();
  target.nbytes = dest.size();
  target.expected_hash = xxh64(leaf.data(), leaf.size());
  for (const Holder& h : holders) target.holders.push_back({h.id, "127.0.0.1", 0});

  FetchSettings settings;
  settings.chunk_bytes = kChunk;
  settings.streams_per_holder = 2;
  settings.connect = [&](const RingMember& m, const Deadline&) {
    Holder& h = holders[m.peer_id - 1];
    if (h.connect_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(h.connect_delay_ms));
    Socket server;
    Socket client = connected_pair(&server);
    h.server->accept(std::move(server), kFetcherId);
    return client;
  };
  FetchReport report = fetch_shared_state({target}, settings);
  CHECK_EQ(report.rx_bytes, kLeafBytes);
  CHECK(std::memcmp(dest.data(), leaf.data(), leaf.size()) == 0);
  uint64_t slow = holders[0].server->unpublish(), late = holders[1].server->unpublish();
  CHECK_EQ(slow + late, kLeafBytes);
  if (!CHECK(late >= kLeafBytes / 2)) {
    std::fprintf(stderr, "  the late holder served %llu of %zu bytes (the slow one %llu)\n",
                 static_cast<unsigned long long>(late), kLeafBytes,
                 static_cast<unsigned long long>(slow));
  }
}

// A holder that fails outright (its links refused): its share goes to the
// other holder even though that one's workers had received nothing yet when
// the share came free, and the fetch completes.
void test_a_dead_holder_share_is_taken_over() {
  std::vector<uint8_t> leaf(kLeafBytes);
  for (size_t i = 0; i < leaf.size(); ++i) leaf[i] = static_cast<uint8_t>(i * 7 + 3);
  auto alive = serving(leaf, nullptr);
  std::vector<uint8_t> dest(kLeafBytes, 0);
  FetchTarget target;
  target.dest = dest.data();
  target.nbytes = dest.size();
  target.expected_hash = xxh64(leaf.data(), leaf.size());
  target.holders = {{1, "127.0.0.1", 0}, {2, "127.0.0.1", 0}};
  FetchSettings settings;
  settings.chunk_bytes = kChunk;
  settings.connect = [&](const RingMember& m, const Deadline&) -> Socket {
    if (m.peer_id == 2) throw PeerFailure("holder 2 is gone");
    Socket server;
    Socket client = connected_pair(&server);
    alive->accept(std::move(server), kFetcherId);
    return client;
  };
  FetchReport report = fetch_shared_state({target}, settings);
  CHECK_EQ(report.rx_bytes, kLeafBytes);
  CHECK(std::memcmp(dest.data(), leaf.data(), leaf.size()) == 0);
  CHECK_EQ(alive->unpublish(), kLeafBytes);
}

}  // namespace

int main() {
  test_a_late_holder_still_serves_its_share();
  test_a_dead_holder_share_is_taken_over();
  return check_summary("test_state_fetcher");
}
