// Shared state, engine side alone: the content hash against XXH64's published
// reference values and its speed, the sync messages' round trips and hostile
// decodes, and the master's election rules.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "common/content_hash.h"
#include "common/dtype.h"
#include "common/errors.h"
#include "master/shared_state_election.h"
#include "protocol/shared_state_messages.h"
#include "tests/check.h"

using namespace pccl;

namespace {

std::vector<uint8_t> pattern(size_t n) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i * 31 + 7);
  return b;
}

void test_hash_reference_values() {
  // Values of the reference implementation (python-xxhash 3.x, xxh64_intdigest)
  // for the byte pattern (i*31+7) mod 256: every code path (<4, <8, <32
  // bytes, stripes plus each tail) and a nonzero seed.
  std::vector<uint8_t> b = pattern(1000);
  CHECK_EQ(xxh64(nullptr, 0), 0xEF46DB3751D8E999ull);
  CHECK_EQ(xxh64("abc", 3), 0x44BC2CF5AD770999ull);
  struct Case { size_t len; uint64_t seed0; uint64_t seed12345; };
  const Case cases[] = {
#include "tests/xxh64_vectors.inc"
  };
  for (const Case& c : cases) {
    if (!CHECK_EQ(xxh64(b.data(), c.len), c.seed0)) std::fprintf(stderr, "  len %zu\n", c.len);
    if (!CHECK_EQ(xxh64(b.data(), c.len, 12345), c.seed12345)) std::fprintf(stderr, "  len %zu seed\n", c.len);
  }
}

void test_hash_sees_every_byte() {
  std::vector<uint8_t> b = pattern(4099);
  uint64_t h = xxh64(b.data(), b.size());
  Tally t{"single-bit flips change the hash"};
  for (size_t i = 0; i < b.size(); i += 7) {
    b[i] ^= 0x10;
    t.expect(xxh64(b.data(), b.size()) != h, [&] { return "byte " + std::to_string(i); });
    b[i] ^= 0x10;
  }
  t.finish();
}

void report_hash_speed() {
  std::vector<uint8_t> big(64u << 20, 3);
  auto t0 = std::chrono::steady_clock::now();
  uint64_t acc = 0;
  for (int i = 0; i < 4; ++i) acc ^= xxh64(big.data(), big.size());
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("xxh64 single-threaded: %.2f GB/s (checksum %llx)\n", 4.0 * big.size() / s / 1e9,
              static_cast<unsigned long long>(acc));
}

SyncRequestMsg request(uint64_t revision, SyncStrategy s, std::vector<uint64_t> hashes) {
  SyncRequestMsg r;
  r.request_id = 1;
  r.revision = revision;
  r.strategy = static_cast<uint8_t>(s);
  for (uint64_t h : hashes) r.leaves.push_back({h, 16, 0, {4}});
  return r;
}

void test_messages_round_trip() {
  SyncRequestMsg r = request(9, SyncStrategy::kSendOnly, {1, 2, 3});
  r.leaves[1].dims = {2, 2};
  SyncRequestMsg r2 = SyncRequestMsg::decode(r.encode());
  CHECK_EQ(r2.revision, 9u);
  CHECK_EQ(r2.strategy, 2);
  CHECK_EQ(r2.leaves.size(), 3u);
  CHECK(r2.leaves[1].same_layout(r.leaves[1]));
  CHECK_EQ(r2.leaves[2].hash, 3u);
  CHECK_EQ(r2.structure, 0u);
  r.structure = 0xFEEDFACECAFEBEEFull;
  CHECK_EQ(SyncRequestMsg::decode(r.encode()).structure, 0xFEEDFACECAFEBEEFull);

  SyncPlanMsg p;
  p.request_id = 4;
  p.round = 5;
  p.revision = 6;
  p.holders = {{11, "127.0.0.1", 1000}, {12, "127.0.0.1", 1001}};
  p.holder_sets = {{0}, {0, 1}};
  p.leaf_hash = {7, 8};
  p.leaf_holder_set = {1, 0};
  p.refusals = {{13, static_cast<uint8_t>(ErrorKind::kGeneric), "ahead"}};
  SyncPlanMsg q = SyncPlanMsg::decode(p.encode());
  CHECK_EQ(q.request_id, 4u);
  CHECK_EQ(q.holder_sets[1].size(), 2u);
  CHECK_EQ(q.leaf_holder_set[0], 1u);
  CHECK_EQ(q.refusals[0].message, std::string("ahead"));

  StateFetchMsg f;
  f.ranges = {{1, 2, 3}, {4, 5, 6}};
  CHECK_EQ(StateFetchMsg::decode(f.encode()).ranges[1].length, 6u);
}

void test_messages_reject_hostile_input() {
  SyncPlanMsg p;
  p.holders = {{11, "h", 1}};
  p.holder_sets = {{0}};
  p.leaf_hash = {7};
  p.leaf_holder_set = {0};
  std::vector<uint8_t> good = p.encode();
  // Every truncation is refused, never read past.
  Tally t{"truncated plans are refused"};
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + n);
    t.expect(throws_kind([&] { SyncPlanMsg::decode(cut); }, ErrorKind::kProtocol),
             [&] { return "length " + std::to_string(n); });
  }
  t.finish();
  SyncPlanMsg bad_set = p;
  bad_set.leaf_holder_set = {3};  // no such holder set
  CHECK(throws_kind([&] { SyncPlanMsg::decode(bad_set.encode()); }, ErrorKind::kProtocol));
  SyncPlanMsg bad_holder = p;
  bad_holder.holder_sets = {{5}};  // no such holder
  CHECK(throws_kind([&] { SyncPlanMsg::decode(bad_holder.encode()); }, ErrorKind::kProtocol));
  StateFetchMsg many;
  many.ranges.resize(kMaxFetchRanges + 1);
  CHECK(throws_kind([&] { StateFetchMsg::decode(many.encode()); }, ErrorKind::kProtocol));
  SyncRequestMsg strategy = request(1, SyncStrategy::kEnforcePopular, {1});
  strategy.strategy = 9;
  CHECK(throws_kind([&] { SyncRequestMsg::decode(strategy.encode()); }, ErrorKind::kProtocol));
}

const SyncRefusal* refusal_of(const Election& e, uint64_t peer) {
  for (const auto& f : e.refusals) {
    if (f.peer_id == peer) return &f;
  }
  return nullptr;
}

void test_election_popular_content_wins() {
  auto e = elect_shared_state({{1, request(3, SyncStrategy::kEnforcePopular, {10, 20})},
                               {2, request(3, SyncStrategy::kEnforcePopular, {10, 21})},
                               {3, request(3, SyncStrategy::kEnforcePopular, {11, 21})}},
                              false, 0);
  CHECK(!e.failed);
  CHECK_EQ(e.revision, 3u);
  CHECK_EQ(e.leaf_hash[0], 10u);
  CHECK_EQ(e.leaf_hash[1], 21u);
  CHECK((e.leaf_holders[0] == std::vector<uint64_t>{1, 2}));
  CHECK((e.leaf_holders[1] == std::vector<uint64_t>{2, 3}));
  CHECK_EQ(e.participants.size(), 3u);
  CHECK(e.transfers_needed);
  auto same = elect_shared_state({{1, request(4, SyncStrategy::kEnforcePopular, {10, 20})},
                                  {2, request(4, SyncStrategy::kEnforcePopular, {10, 20})}},
                                 true, 3);
  CHECK(!same.transfers_needed);  // the plan alone settles the round
}

void test_election_ties_go_to_the_smaller_hash() {
  auto e = elect_shared_state({{1, request(1, SyncStrategy::kEnforcePopular, {50})},
                               {2, request(1, SyncStrategy::kEnforcePopular, {40})}},
                              false, 0);
  CHECK_EQ(e.leaf_hash[0], 40u);
}

void test_election_newer_revision_is_never_overwritten() {
  // A single peer at a newer revision beats a majority at an older one, on the
  // first sync too (PCCL 1.0 lets the majority win there).
  auto e = elect_shared_state({{1, request(7, SyncStrategy::kEnforcePopular, {99})},
                               {2, request(5, SyncStrategy::kEnforcePopular, {1})},
                               {3, request(5, SyncStrategy::kEnforcePopular, {1})}},
                              false, 0);
  CHECK_EQ(e.revision, 7u);
  CHECK_EQ(e.leaf_hash[0], 99u);
  CHECK((e.leaf_holders[0] == std::vector<uint64_t>{1}));
}

void test_election_refuses_revisions_the_run_has_not_reached() {
  auto e = elect_shared_state({{1, request(11, SyncStrategy::kEnforcePopular, {1})},
                               {2, request(13, SyncStrategy::kEnforcePopular, {2})},
                               {3, request(4, SyncStrategy::kEnforcePopular, {3})}},
                              true, 10);
  CHECK(!e.failed);
  CHECK(refusal_of(e, 2) != nullptr);
  CHECK_EQ(e.revision, 11u);  // the behind peer (3) is updated
  CHECK_EQ(e.leaf_hash[0], 1u);
  CHECK((e.participants == std::vector<uint64_t>{1, 3}));
}

void test_election_strategies() {
  // receive_only peers do not vote: without peer 3 the vote is a tie.
  auto r = elect_shared_state({{1, request(2, SyncStrategy::kEnforcePopular, {8})},
                               {2, request(2, SyncStrategy::kEnforcePopular, {9})},
                               {3, request(2, SyncStrategy::kReceiveOnly, {9})}},
                              false, 0);
  CHECK_EQ(r.leaf_hash[0], 8u);
  // A send_only peer is the declared source, even against a majority.
  auto s = elect_shared_state({{1, request(2, SyncStrategy::kSendOnly, {5})},
                               {2, request(2, SyncStrategy::kEnforcePopular, {6})},
                               {3, request(2, SyncStrategy::kEnforcePopular, {6})}},
                              false, 0);
  CHECK_EQ(s.leaf_hash[0], 5u);
  CHECK(s.refusals.empty());
  // A send_only peer that lags would have to receive: refused.
  auto lag = elect_shared_state({{1, request(1, SyncStrategy::kSendOnly, {5})},
                                 {2, request(2, SyncStrategy::kEnforcePopular, {6})}},
                                false, 0);
  CHECK(refusal_of(lag, 1) != nullptr);
  CHECK_EQ(lag.leaf_hash[0], 6u);
  // Only receive_only peers hold the newest revision: nobody can offer it.
  auto none = elect_shared_state({{1, request(3, SyncStrategy::kReceiveOnly, {5})},
                                  {2, request(2, SyncStrategy::kEnforcePopular, {6})}},
                                 false, 0);
  CHECK(none.failed);
}

bool mentions(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return true;
  std::fprintf(stderr, "    %s\n    does not mention: %s\n", text.c_str(), part.c_str());
  return false;
}

SyncRequestMsg with_structure(SyncRequestMsg r, uint64_t structure) {
  r.structure = structure;
  return r;
}

// The odd peer alone is refused (it keeps its state); the others go on.
void expect_only_refused(const Election& e, uint64_t odd, const std::string& why) {
  CHECK(!e.failed);
  CHECK_EQ(e.refusals.size(), 1u);
  const SyncRefusal* f = refusal_of(e, odd);
  if (!CHECK(f != nullptr)) return;
  CHECK(f->kind == static_cast<uint8_t>(ErrorKind::kMismatch));
  CHECK(mentions(f->message, "differs from the run's (held by 2 of 3 peers)"));
  CHECK(mentions(f->message, why));
  CHECK(std::find(e.participants.begin(), e.participants.end(), odd) == e.participants.end());
  CHECK_EQ(e.participants.size(), 2u);
}

void test_election_refuses_the_odd_structure_only() {
  auto peer = [](uint64_t structure) {
    return with_structure(request(1, SyncStrategy::kEnforcePopular, {1, 2}), structure);
  };
  SyncRequestMsg shape = peer(7);
  shape.leaves[1].dims = {2, 2};
  expect_only_refused(elect_shared_state({{1, peer(7)}, {2, shape}, {3, peer(7)}}, false, 0), 2,
                      "leaf 1 is float32(2,2) in this peer's state, float32(4,) in the run's state");
  SyncRequestMsg dtype = peer(7);
  dtype.leaves[0].dtype = static_cast<uint8_t>(DType::kInt32);
  expect_only_refused(elect_shared_state({{1, dtype}, {2, peer(7)}, {3, peer(7)}}, false, 0), 1,
                      "leaf 0 is int32(4,) in this peer's state, float32(4,) in the run's state");
  SyncRequestMsg count = with_structure(request(1, SyncStrategy::kEnforcePopular, {1}), 7);
  expect_only_refused(elect_shared_state({{1, peer(7)}, {2, peer(7)}, {3, count}}, false, 0), 3,
                      "this peer's state has 1 leaves, the run's state has 2 leaves");
  // Same leaves, other key names: only the digest differs.
  auto names = elect_shared_state({{1, peer(7)}, {2, peer(7)}, {3, peer(8)}}, false, 0);
  expect_only_refused(names, 3, "key names, container types or numpy dtypes");
  CHECK_EQ(names.leaf_hash.size(), 2u);
}

void test_election_structure_ties() {
  auto peer = [](uint64_t revision, uint64_t structure) {
    return with_structure(request(revision, SyncStrategy::kEnforcePopular, {1}), structure);
  };
  // One peer each at one revision: nobody can tell which is odd.
  auto tie = elect_shared_state({{1, peer(1, 7)}, {2, peer(1, 8)}}, false, 0);
  CHECK(tie.failed);
  CHECK(tie.kind == ErrorKind::kMismatch);
  CHECK(mentions(tie.message, "none is held by more peers"));
  CHECK(mentions(tie.message, "key names"));
  // The run's content (highest revision) keeps its structure against a joiner.
  auto joiner = elect_shared_state({{1, peer(5, 7)}, {2, peer(0, 8)}}, false, 0);
  CHECK(!joiner.failed);
  CHECK(refusal_of(joiner, 2) != nullptr);
  CHECK_EQ(joiner.revision, 5u);
  // A plurality wins: 2 against 1 and 1; both others are refused.
  auto most = elect_shared_state(
      {{1, peer(1, 7)}, {2, peer(1, 8)}, {3, peer(1, 7)}, {4, peer(1, 9)}}, false, 0);
  CHECK(!most.failed);
  CHECK(refusal_of(most, 2) != nullptr && refusal_of(most, 4) != nullptr);
  CHECK_EQ(most.refusals.size(), 2u);
}

}  // namespace

int main() {
  test_hash_reference_values();
  test_hash_sees_every_byte();
  report_hash_speed();
  test_messages_round_trip();
  test_messages_reject_hostile_input();
  test_election_popular_content_wins();
  test_election_ties_go_to_the_smaller_hash();
  test_election_newer_revision_is_never_overwritten();
  test_election_refuses_revisions_the_run_has_not_reached();
  test_election_strategies();
  test_election_refuses_the_odd_structure_only();
  test_election_structure_ties();
  return check_summary("test_shared_state");
}
