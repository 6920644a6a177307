// What a client claims to the master is bounded: no claim (a resumed epoch, a
// revision, a group id) can stop admission or eviction, wrap a counter, or
// lift the shared-state revision guard. Raw clients speak the protocol
// directly, so they can claim what no honest peer would. No Python, no JAX.
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "master/master.h"
#include "peer/communicator.h"
#include "protocol/shared_state_messages.h"
#include "security/handshake_io.h"
#include "tests/check.h"
#include "tests/engine_harness.h"
#include "transport/frame.h"

using namespace pccl;

namespace {

constexpr uint64_t kHugeClaim = ~0ull;
constexpr uint64_t kBoundClaim = 1ull << 62;  // within protocol/messages.h kMaxEpoch, kMaxRevision

Deadline soon() { return Deadline::after(3.0); }

// A client that registered by hand: what it claims is up to the test.
struct RawPeer {
  Socket sock;
  uint64_t id = 0;

  // Registers; id stays 0 when the master refused the HELLO.
  static RawPeer join(const Master& m, HelloMsg hello) {
    RawPeer p;
    p.sock = Socket::connect_to("127.0.0.1", m.port(), soon(), nullptr);
    client_handshake(p.sock, Secret(), kAuthContextMaster, soon(), nullptr);
    if (hello.listen_port == 0) hello.listen_port = 4000;
    p.send(MsgType::kHello, hello.encode());
    Frame f;
    if (p.next(MsgType::kWelcome, &f)) p.id = WelcomeMsg::decode(f.payload).peer_id;
    return p;
  }
  void send(MsgType type, const std::vector<uint8_t>& payload) {
    write_frame(sock, static_cast<uint16_t>(type), payload, soon(), nullptr);
  }
  // The next frame of `type`, skipping others; false on EOF or timeout.
  bool next(MsgType type, Frame* out, double seconds = 3.0) {
    Deadline d = Deadline::after(seconds);
    try {
      for (;;) {
        Frame f = read_frame(sock, kMaxControlPayload, d, nullptr);
        if (f.type == static_cast<uint16_t>(type)) { *out = std::move(f); return true; }
      }
    } catch (const PcclError&) {
      return false;
    }
  }
  bool topology(TopologyMsg* out, double seconds = 3.0) {
    Frame f;
    if (!next(MsgType::kTopology, &f, seconds)) return false;
    *out = TopologyMsg::decode(f.payload);
    return true;
  }
  bool plan(SyncPlanMsg* out) {
    Frame f;
    if (!next(MsgType::kSyncPlan, &f)) return false;
    *out = SyncPlanMsg::decode(f.payload);
    return true;
  }
};

HelloMsg hello_in(uint32_t group, uint64_t resume_id = 0, uint64_t resume_epoch = 0) {
  HelloMsg h;
  h.group = group;
  h.resume_peer_id = resume_id;
  h.resume_epoch = resume_epoch;
  return h;
}

bool in_ring(const TopologyMsg& t, uint64_t id) {
  for (const RingMember& m : t.ring) if (m.peer_id == id) return true;
  return false;
}

// Defect A4: HELLO(resume_epoch = 2^64-1) moved the group's epoch at once, so
// every member's vote was stale from then on: nobody could be admitted or
// dropped from the ring again.
void test_resume_claims_cannot_freeze_admission_or_eviction() {
  Master master(MasterConfig{});
  master.start();
  RawPeer a = RawPeer::join(master, hello_in(3));
  TopologyMsg t;
  CHECK(a.id != 0 && a.topology(&t));
  uint64_t epoch = t.epoch;
  // Beyond the bound: refused outright. Within it: taken, but only as a
  // floor for the next epoch.
  RawPeer huge = RawPeer::join(master, hello_in(3, 777, kHugeClaim));
  CHECK_EQ(huge.id, 0u);
  RawPeer bound = RawPeer::join(master, hello_in(3, 778, kBoundClaim));
  RawPeer c = RawPeer::join(master, hello_in(3));
  CHECK(bound.id != 0 && c.id != 0);
  a.send(MsgType::kVote, VoteMsg{epoch, {}}.encode());
  bool admitted = a.topology(&t);
  if (!CHECK(admitted)) std::fprintf(stderr, "  the vote at epoch %llu admitted nobody\n",
                                     static_cast<unsigned long long>(epoch));
  if (!admitted) { master.stop(); return; }
  CHECK(in_ring(t, c.id) && in_ring(t, bound.id));
  CHECK(t.epoch == kBoundClaim + 1);
  epoch = t.epoch;
  // Eviction still works: the claimant dies, the next vote drops it.
  bound.sock.close();
  for (RawPeer* p : {&a, &c}) p->send(MsgType::kVote, VoteMsg{epoch, {}}.encode());
  CHECK(a.topology(&t) && !in_ring(t, bound.id) && t.epoch == epoch + 1);
  master.stop();
}

// An epoch claimed alone in an empty group became its epoch + 1: 2^64-1
// wrapped to 0, below every epoch the peers had seen.
void test_epoch_claim_cannot_wrap() {
  Master master(MasterConfig{});
  master.start();
  RawPeer huge = RawPeer::join(master, hello_in(4, 999, kHugeClaim));
  TopologyMsg t;
  bool got = huge.topology(&t, 1.0);
  CHECK(!got);
  if (got) std::fprintf(stderr, "  admitted at epoch %llu\n",
                        static_cast<unsigned long long>(t.epoch));
  CHECK(master.status_json().find("\"group\":4,") == std::string::npos);
  master.stop();
}

// Group ids are the client's to choose: the number served at once is bounded,
// and a group nobody is in any more makes room again.
void test_group_count_is_bounded() {
  MasterConfig cfg;
  cfg.max_groups = 2;
  Master master(cfg);
  master.start();
  RawPeer g1 = RawPeer::join(master, hello_in(1));
  RawPeer g2 = RawPeer::join(master, hello_in(2));
  CHECK(g1.id != 0 && g2.id != 0);
  RawPeer g3 = RawPeer::join(master, hello_in(3));
  CHECK_EQ(g3.id, 0u);
  g1.sock.close();
  bool joined = false;
  for (int i = 0; i < 50 && !joined; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    joined = RawPeer::join(master, hello_in(3)).id != 0;
  }
  CHECK(joined);
  master.stop();
}

SyncRequestMsg request(uint64_t id, uint64_t revision, uint64_t hash) {
  SyncRequestMsg r;
  r.request_id = id;
  r.revision = revision;
  r.leaves.push_back({hash, 4, 0, {1}});
  return r;
}

bool refused(const SyncPlanMsg& p, uint64_t id) {
  for (const SyncRefusal& f : p.refusals) if (f.peer_id == id) return true;
  return false;
}

// A revision of 2^64-1 became the run's, and run + 1 wrapped to 0: every later
// honest request was refused as "not reached".
void test_revision_claim_is_bounded() {
  Master master(MasterConfig{});
  master.start();
  RawPeer a = RawPeer::join(master, hello_in(6));
  TopologyMsg t;
  CHECK(a.topology(&t));
  SyncPlanMsg plan;
  a.send(MsgType::kSyncRequest, request(1, kHugeClaim, 11).encode());
  CHECK(a.plan(&plan) && refused(plan, a.id));
  a.send(MsgType::kSyncRequest, request(2, 5, 11).encode());
  bool planned = a.plan(&plan);
  CHECK(planned && !plan.failed && !refused(plan, a.id) && plan.revision == 5u);
  if (planned && !plan.refusals.empty()) {
    std::fprintf(stderr, "  honest request refused: %s\n", plan.refusals[0].message.c_str());
  }
  master.stop();
}

std::vector<SharedStateLeaf> one_leaf(const std::vector<float>& v) {
  return {{v.data(), v.size() * 4, DType::kFloat32, {static_cast<int64_t>(v.size())}}};
}

bool wait_status(const Master& m, const std::string& needle, double seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (m.status_json().find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Defect A7: a restarted master knew no revision, so one buggy peer claiming a
// revision far ahead won the election and overwrote everyone's state. The
// peers now tell the new master the revision the old one announced.
void test_revision_guard_survives_a_master_restart() {
  auto master = std::make_unique<Master>(MasterConfig{});
  uint16_t port = master->port();
  master->start();
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int i = 0; i < 2; ++i) comms.push_back(make_peer(port, 10.0));
  std::vector<float> good(16, 1.0f), bad(16, 9.0f);
  with_ring_of(comms, [&](int, Communicator& c) {
    CHECK_EQ(c.sync_shared_state(one_leaf(good), 1, SyncStrategy::kEnforcePopular).revision, 1u);
  });
  master->stop();
  master.reset();
  MasterConfig cfg;
  cfg.port = port;
  Master restarted(cfg);
  restarted.start();
  CHECK(wait_status(restarted, "\"peers\":[{", 10.0));
  std::vector<std::string> errors(2);
  std::vector<SyncOutcome> outcomes(2);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      Communicator& c = *comms[i];
      try {
        // Both re-registered; the vote admits whoever is still pending.
        for (int k = 0; k < 500 && !wait_status(restarted, "\"world_size\":2,\"pending\":0", 0.02);
             ++k) {
          c.update_topology();
        }
        // Peer 1 is buggy: its revision is far ahead of the run's.
        outcomes[i] = c.sync_shared_state(one_leaf(i == 0 ? good : bad), i == 0 ? 2 : 1000,
                                          SyncStrategy::kEnforcePopular);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  if (!CHECK(errors[0].empty())) std::fprintf(stderr, "  honest peer: %s\n", errors[0].c_str());
  CHECK_EQ(outcomes[0].revision, 2u);
  CHECK(outcomes[0].received.empty());  // its state was not overwritten
  if (!CHECK(errors[1].find("has not been reached") != std::string::npos)) {
    std::fprintf(stderr, "  buggy peer: revision %llu, error '%s'\n",
                 static_cast<unsigned long long>(outcomes[1].revision), errors[1].c_str());
  }
  for (auto& c : comms) c->close();
  restarted.stop();
}

}  // namespace

int main() {
  test_resume_claims_cannot_freeze_admission_or_eviction();
  test_epoch_claim_cannot_wrap();
  test_group_count_is_bounded();
  test_revision_claim_is_bounded();
  test_revision_guard_survives_a_master_restart();
  return check_summary("test_master_claims");
}
