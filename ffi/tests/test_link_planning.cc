// What optimize_topology() plans, without the protocol around it: which links
// the master has probed (master/link_table.h: rounds, freshness, costs) and
// which ring it picks from their figures (topology/ring_planner.h: the
// smallest bottleneck, then the least total), against brute force over every
// ring. The protocol itself is test_master_optimize.cc.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/errors.h"
#include "master/link_table.h"
#include "peer/probe_rate.h"
#include "protocol/topology_messages.h"
#include "protocol/wire.h"
#include "tests/check.h"
#include "tests/ring_instances.h"
#include "topology/ring_planner.h"

using namespace pccl;
using ring_instances::kInf;

namespace {

using Rounds = std::map<uint64_t, std::vector<ProbeRound>>;
using Pair = LinkTable::Pair;

constexpr double kMaxAge = 600.0;

std::vector<uint64_t> members_of(int n) {
  std::vector<uint64_t> m;
  for (int i = 0; i < n; ++i) m.push_back(100 + 7 * static_cast<uint64_t>(i));  // not 0..n-1
  return m;
}

LinkFigure fast(uint64_t to) { return {to, 1'000'000'000, 50, true}; }
LinkFigure failed(uint64_t to) { return {to, 0, 0, false}; }

// The rounds are a schedule every member can run in lockstep: everyone has
// the same number of rounds; in each, a member sends at most one probe and
// receives at most one, and "a probes b in round r" reads the same from both
// ends; nobody probes itself or a non-member. Returns the planned links in
// order of appearance (the caller checks which and how often).
std::vector<Pair> schedule(const std::vector<uint64_t>& members, const Rounds& rounds,
                           const char* what) {
  Tally t{what};
  std::vector<Pair> links;
  std::set<uint64_t> in(members.begin(), members.end());
  t.expect(rounds.size() == members.size(),
           [&] { return "rounds for " + std::to_string(rounds.size()) + " members"; });
  size_t count = rounds.empty() ? 0 : rounds.begin()->second.size();
  for (uint64_t m : members) {
    auto it = rounds.find(m);
    t.expect(it != rounds.end() && it->second.size() == count, [&] {
      return "member " + std::to_string(m) + " has another number of rounds";
    });
    if (it == rounds.end() || it->second.size() != count) continue;
    for (size_t r = 0; r < count; ++r) {
      const ProbeRound& pr = it->second[r];
      for (uint64_t other : {pr.to, pr.from}) {
        t.expect(other == 0 || (other != m && in.count(other)), [&] {
          return "member " + std::to_string(m) + " round " + std::to_string(r) + " names " +
                 std::to_string(other);
        });
      }
      if (pr.to != 0 && rounds.count(pr.to) && rounds.at(pr.to).size() == count) {
        t.expect(rounds.at(pr.to)[r].from == m,
                 [] { return std::string("probe not expected by its target"); });
        links.push_back({m, pr.to});
      }
      if (pr.from != 0 && rounds.count(pr.from) && rounds.at(pr.from).size() == count) {
        t.expect(rounds.at(pr.from)[r].to == m,
                 [] { return std::string("probe expected but not sent"); });
      }
    }
  }
  t.finish();
  return links;
}

// Every ordered pair of distinct members, except `skip`.
std::set<Pair> all_pairs(const std::vector<uint64_t>& members, const std::set<Pair>& skip = {}) {
  std::set<Pair> pairs;
  for (uint64_t a : members) {
    for (uint64_t b : members) {
      if (a != b && !skip.count({a, b})) pairs.insert({a, b});
    }
  }
  return pairs;
}

bool each_once(const std::vector<Pair>& links, const std::set<Pair>& want) {
  std::set<Pair> got(links.begin(), links.end());
  return got.size() == links.size() && got == want;
}

// ---- LinkTable ----

// Nothing measured yet: the whole matrix in N - 1 rounds, each directed
// link once, every member busy (sending and receiving) in every round.
void test_plan_without_figures_covers_every_link_in_n_minus_1_rounds() {
  for (int n = 1; n <= 9; ++n) {
    std::vector<uint64_t> members = members_of(n);
    Rounds rounds = LinkTable().plan(members, 0, kMaxAge);
    std::vector<Pair> links = schedule(members, rounds, "plan without figures");
    CHECK_EQ(rounds.at(members[0]).size(), static_cast<size_t>(n - 1));
    CHECK(each_once(links, all_pairs(members)));
    bool busy = true;
    for (const auto& [m, rs] : rounds) {
      for (const ProbeRound& r : rs) busy = busy && r.to != 0 && r.from != 0;
    }
    CHECK(busy);
  }
}

// Fresh figures are not probed again; a round left with nothing to probe is
// dropped; when everything is fresh there are no rounds at all.
void test_plan_skips_fresh_figures() {
  std::vector<uint64_t> m = members_of(5);
  LinkTable table;
  std::set<Pair> known;
  // Everything at distance 1 and 3 in ring order: rounds 1 and 3 vanish.
  for (size_t i = 0; i < m.size(); ++i) {
    for (size_t shift : {1u, 3u}) {
      uint64_t to = m[(i + shift) % m.size()];
      table.record(m[i], fast(to), 10.0);
      known.insert({m[i], to});
    }
  }
  // And one link of round 2: that round stays, with a hole in it.
  table.record(m[0], fast(m[2]), 10.0);
  known.insert({m[0], m[2]});
  Rounds rounds = table.plan(m, 20.0, kMaxAge);
  std::vector<Pair> links = schedule(m, rounds, "plan with fresh figures");
  CHECK_EQ(rounds.at(m[0]).size(), 2u);
  CHECK(each_once(links, all_pairs(m, known)));
  CHECK_EQ(rounds.at(m[0])[0].to, 0u);  // its round-2 link is fresh
  CHECK_EQ(rounds.at(m[2])[0].from, 0u);

  for (const Pair& p : all_pairs(m)) table.record(p.first, fast(p.second), 30.0);
  Rounds none = table.plan(m, 40.0, kMaxAge);
  CHECK_EQ(none.size(), m.size());
  CHECK(std::all_of(none.begin(), none.end(), [](const auto& kv) { return kv.second.empty(); }));
}

// A failed probe is never fresh (the link is probed again, so a repaired link
// comes back), and a figure older than the maximum age is probed again.
void test_failed_and_aged_figures_are_planned_again() {
  std::vector<uint64_t> m = members_of(4);
  LinkTable table;
  for (const Pair& p : all_pairs(m)) table.record(p.first, fast(p.second), 100.0);
  table.record(m[1], failed(m[3]), 100.0);
  CHECK(!table.fresh({m[1], m[3]}, 100.0, kMaxAge));
  CHECK(table.fresh({m[1], m[2]}, 100.0, kMaxAge));
  CHECK(!table.fresh({m[2], 999}, 100.0, kMaxAge));  // never measured
  std::vector<Pair> links = schedule(m, table.plan(m, 100.0, kMaxAge), "plan after a failure");
  CHECK(links == (std::vector<Pair>{{m[1], m[3]}}));

  // The boundary: exactly max age old is still fresh, a moment later it is not.
  CHECK(table.fresh({m[0], m[1]}, 100.0 + kMaxAge, kMaxAge));
  CHECK(!table.fresh({m[0], m[1]}, 100.0 + kMaxAge + 0.001, kMaxAge));
  table.record(m[0], fast(m[1]), 200.0);  // re-measured: younger than the rest
  links = schedule(m, table.plan(m, 100.0 + kMaxAge + 1, kMaxAge), "plan after ageing");
  CHECK(each_once(links, all_pairs(m, {{m[0], m[1]}})));
}

// A member that leaves takes its figures with it, both directions; a new
// figure for a link replaces the old one.
void test_forget_peer_and_record() {
  LinkTable table;
  table.record(1, fast(2), 0);
  table.record(2, fast(1), 0);
  table.record(2, fast(3), 0);
  table.record(3, fast(1), 0);
  table.record(3, failed(2), 0);
  table.forget_peer(2);
  CHECK_EQ(table.records().size(), 1u);
  CHECK(table.records().count({3, 1}) == 1);
  table.record(3, {1, 5, 7, true}, 9.0);
  const LinkRecord& r = table.records().at({3, 1});
  CHECK(r.bytes_per_s == 5u && r.rtt_us == 7u && r.ok && r.measured_at_s == 9.0);
  table.record(3, failed(1), 10.0);
  CHECK(!table.records().at({3, 1}).ok);
  CHECK_EQ(table.records().size(), 1u);
}

// costs(): link_seconds of the figure, infinity for a link never measured
// or whose probe failed, 0 on the diagonal; rows follow the members' order.
void test_costs() {
  LinkTable table;
  table.record(5, {9, 8 << 20, 250'000, true}, 0);  // 8 MiB/s, 0.25 s
  table.record(9, failed(5), 0);
  table.record(9, {4, 1 << 20, 0, true}, 0);
  CostMatrix c = table.costs({9, 5, 4});
  CHECK_EQ(c.size(), 3u);
  CHECK_EQ(c[1][0], 1.25);
  CHECK_EQ(c[0][2], link_seconds(1 << 20, 0));
  CHECK(std::isinf(c[0][1]));  // failed
  CHECK(std::isinf(c[1][2]) && std::isinf(c[2][0]) && std::isinf(c[2][1]));  // never measured
  CHECK(c[0][0] == 0 && c[1][1] == 0 && c[2][2] == 0);
}

// ---- ring_planner ----

struct Best {
  double bottleneck = kInf;
  double total = kInf;  // least total among the rings of that bottleneck
};

double dearest(const CostMatrix& c, const std::vector<int>& order) {
  double worst = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    worst = std::max(worst, c[order[i]][order[(i + 1) % order.size()]]);
  }
  return worst;
}

// Every ring, peer 0 first.
Best brute_force(const CostMatrix& c) {
  std::vector<int> order(c.size());
  std::iota(order.begin(), order.end(), 0);
  Best best;
  do {
    double b = dearest(c, order), t = ring_cost(c, order);
    if (b < best.bottleneck || (b == best.bottleneck && t < best.total)) best = {b, t};
  } while (std::next_permutation(order.begin() + 1, order.end()));
  return best;
}

bool same(double a, double b) {
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(a - b) <= 1e-9 * std::max(std::fabs(a), std::fabs(b));
}

// The plan describes its own order: a rotation of 0..N-1 from 0, and the
// bottleneck and total are that order's.
bool consistent(const CostMatrix& c, const RingPlan& p) {
  std::vector<int> sorted = p.order, all(c.size());
  std::sort(sorted.begin(), sorted.end());
  std::iota(all.begin(), all.end(), 0);
  return sorted == all && p.order[0] == 0 && p.bottleneck == dearest(c, p.order) &&
         same(p.total, ring_cost(c, p.order)) && p.solves >= 1;
}

// Random asymmetric matrices, N = 4..8: the planner's bottleneck is the
// smallest over all (N-1)! rings, and its total the least among the rings
// with that bottleneck. Integer costs in a narrow range make many ties (of
// the bottleneck, and of totals), real ones make none.
void test_plan_ring_matches_brute_force() {
  for (bool integers : {false, true}) {
    Tally bottleneck{integers ? "bottleneck, integer costs" : "bottleneck, real costs"};
    Tally total{integers ? "total, integer costs" : "total, real costs"};
    Tally shape{"plan consistent with its order"};
    for (int n = 4; n <= 8; ++n) {
      int seeds = n == 8 ? 40 : 120;
      for (int seed = 1; seed <= seeds; ++seed) {
        ring_instances::Random rng(1000 * n + seed + (integers ? 500 : 0));
        CostMatrix c = ring_instances::matrix(n, 0);
        for (int i = 0; i < n; ++i) {
          for (int j = 0; j < n; ++j) {
            if (i != j) c[i][j] = integers ? 1 + rng.below(6) : rng.uniform(0.001, 2.0);
          }
        }
        RingPlan p = plan_ring(c);
        Best want = brute_force(c);
        auto where = [&] { return "n " + std::to_string(n) + " seed " + std::to_string(seed); };
        shape.expect(consistent(c, p) && p.exact, where);
        bottleneck.expect(same(p.bottleneck, want.bottleneck), [&] {
          return where() + ": " + std::to_string(p.bottleneck) + " vs " +
                 std::to_string(want.bottleneck);
        });
        total.expect(same(p.total, want.total), [&] {
          return where() + ": " + std::to_string(p.total) + " vs " + std::to_string(want.total);
        });
      }
    }
    bottleneck.finish();
    total.finish();
    shape.finish();
  }
}

// The ring of least total has one slow link; a ring of moderate links is
// slower in total but faster per step: the planner picks the latter.
void test_bottleneck_beats_total() {
  CostMatrix c = ring_instances::matrix(4, 100);
  for (int i = 0; i < 4; ++i) c[i][i] = 0;
  c[0][1] = c[1][2] = c[2][3] = 1;  // 0 -> 1 -> 2 -> 3 -> 0: total 13, slowest 10
  c[3][0] = 10;
  c[0][3] = c[3][2] = c[2][1] = c[1][0] = 5;  // 0 -> 3 -> 2 -> 1 -> 0: total 20, slowest 5
  SolverOptions exact;
  exact.exact_up_to = 4;
  // What minimising the sum picks:
  CHECK(solve_ring(c, exact).order == (std::vector<int>{0, 1, 2, 3}));
  RingPlan p = plan_ring(c);
  CHECK(p.order == (std::vector<int>{0, 3, 2, 1}));
  CHECK_EQ(p.bottleneck, 5.0);
  CHECK_EQ(p.total, 20.0);
  CHECK(p.exact);
}

// Links without a usable figure cost infinity: avoided whenever some ring
// does without them, used (and reported as an infinite bottleneck) only when
// none does.
void test_infinite_links() {
  const int n = 7;
  for (int seed = 1; seed <= 20; ++seed) {
    ring_instances::Random rng(seed);
    CostMatrix c = ring_instances::matrix(n, kInf);
    std::vector<int> hidden(n);
    std::iota(hidden.begin(), hidden.end(), 0);
    for (int i = n - 1; i > 1; --i) std::swap(hidden[i], hidden[1 + rng.below(i)]);
    for (int i = 0; i < n; ++i) {
      c[i][i] = 0;
      c[hidden[i]][hidden[(i + 1) % n]] = rng.uniform(5, 10);  // the one usable ring
    }
    // Cheap links off that ring, where a sum-minimiser might look.
    for (int k = 0; k < n; ++k) c[rng.below(n)][rng.below(n)] = rng.uniform(0.1, 1);
    for (int i = 0; i < n; ++i) c[i][i] = 0;
    RingPlan p = plan_ring(c);
    Best want = brute_force(c);
    CHECK(std::isfinite(p.bottleneck) && same(p.bottleneck, want.bottleneck));
  }
  CostMatrix none = ring_instances::matrix(5, kInf);
  for (int i = 0; i < 5; ++i) none[i][i] = 0;
  none[0][1] = none[1][2] = 1;  // no ring without an infinite link
  RingPlan p = plan_ring(none);
  CHECK(consistent(none, p) && std::isinf(p.bottleneck));
  none[0][1] = none[1][2] = kInf;
  p = plan_ring(none);  // nothing usable at all: still a ring
  CHECK(consistent(none, p) && std::isinf(p.bottleneck));
}

// Rings the master can meet: one member (no link), two (one ring).
void test_tiny_rings() {
  RingPlan one = plan_ring({{0}});
  CHECK(one.order == std::vector<int>{0} && one.bottleneck == 0 && one.total == 0);
  RingPlan two = plan_ring({{0, 3}, {kInf, 0}});
  CHECK(two.order == (std::vector<int>{0, 1}) && std::isinf(two.bottleneck));
  RingPlan three = plan_ring({{0, 1, 9}, {9, 0, 1}, {1, 9, 0}});
  CHECK(three.order == (std::vector<int>{0, 1, 2}) && three.bottleneck == 1);
}

// The cost of a link: its round trip plus the 8 MiB reference chunk at its
// rate; infinity without a usable rate or round trip.
void test_link_seconds() {
  const double mib8 = 8.0 * (1 << 20);
  CHECK_EQ(link_seconds(mib8, 0), 1.0);
  CHECK_EQ(link_seconds(mib8, 0.5), 1.5);
  CHECK_EQ(link_seconds(2 * mib8, 0.25), 0.75);
  CHECK(link_seconds(1e9, 0) < link_seconds(1e8, 0));  // faster is cheaper
  CHECK(link_seconds(1e9, 0.001) < link_seconds(1e9, 0.002));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (double rate : {0.0, -1.0, nan}) CHECK(std::isinf(link_seconds(rate, 0.001)));
  for (double rtt : {kInf, nan, -0.001}) CHECK(std::isinf(link_seconds(1e9, rtt)));
  CHECK_EQ(link_seconds(kInf, 0.002), 0.002);  // no time for the bytes, the round trip remains
}

// A probe's rate (peer/probe_rate.h): the whole window's, or the streams'
// summed rates in their last quarters when higher (slow start on a long path).
ProbeResultMsg counted(uint64_t bytes, uint64_t first, uint64_t last, uint64_t tail_bytes,
                       uint64_t tail_from) {
  ProbeResultMsg m;
  m.bytes = bytes;
  m.first_us = first;
  m.last_us = last;
  m.tail_bytes = tail_bytes;
  m.tail_from_us = tail_from;
  return m;
}

void test_probe_rate() {
  const uint64_t min_tail = 125'000;
  CHECK_EQ(probe_rate({}, min_tail), 0u);
  CHECK_EQ(probe_rate({counted(0, 0, 0, 0, 0)}, min_tail), 0u);
  // A path its first bytes fill: the tail says what the whole says.
  CHECK_EQ(probe_rate({counted(1'000'000, 0, 1'000'000, 250'000, 750'000)}, min_tail), 1'000'000u);
  // Slow start: 40 % of the bytes in the last quarter, 1.6 MB/s there.
  CHECK_EQ(probe_rate({counted(1'000'000, 0, 1'000'000, 400'000, 750'000)}, min_tail), 1'600'000u);
  // Streams' tails add up over the span they arrived in (the earliest tail's
  // start to the latest last byte), on the probed peer's clock.
  std::vector<ProbeResultMsg> four;
  for (uint64_t k = 0; k < 4; ++k) {
    four.push_back(counted(500'000, 10 * k, 10 * k + 1'000'000, 250'000, 10 * k + 750'000));
  }
  CHECK_EQ(probe_rate(four, min_tail), static_cast<uint64_t>(1e6 / 0.25003));  // whole: 2 MB in 1 s
  // Staggered windows: the late stream gets what the early one left when its
  // window ended. The sum of the two tail rates (1 + 1.6 MB/s) would claim
  // more than arrived; the span holds every tail byte: 650 kB in 0.35 s.
  CHECK_EQ(probe_rate({counted(500'000, 0, 1'000'000, 250'000, 750'000),
                       counted(600'000, 100'000, 1'100'000, 400'000, 850'000)}, min_tail),
           static_cast<uint64_t>(650'000 / 0.35));
  // A tail slower than the whole (a queue the first bytes filled, then the
  // path's rate): the whole's figure stands.
  CHECK_EQ(probe_rate({counted(1'000'000, 0, 1'000'000, 100'000, 750'000)}, min_tail), 1'000'000u);
  // A sender that stopped just after the tail began: its tail is too short to count.
  CHECK_EQ(probe_rate({counted(800'000, 0, 760'000, 300'000, 750'000)}, min_tail),
           static_cast<uint64_t>(800'000 / 0.76));
  // Ended before the tail (tail_from after the last byte, no tail bytes).
  CHECK_EQ(probe_rate({counted(500'000, 0, 500'000, 0, 750'000)}, min_tail), 1'000'000u);
  // One byte, one instant: no division by zero.
  CHECK(probe_rate({counted(1, 5, 5, 1, 5)}, 0) > 0);
}

// PROBE_RESULT on the wire (v7): the tail travels, and a tail that cannot be
// (more bytes than all, or outside the window) is a protocol violation.
void test_probe_result_wire() {
  ProbeResultMsg m = counted(1 << 26, 1000, 251'000, 1 << 24, 188'000);
  ProbeResultMsg back = ProbeResultMsg::decode(m.encode());
  CHECK(back.bytes == m.bytes && back.first_us == m.first_us && back.last_us == m.last_us &&
        back.tail_bytes == m.tail_bytes && back.tail_from_us == m.tail_from_us);
  for (const ProbeResultMsg& bad : {counted(10, 0, 5, 11, 3), counted(10, 100, 200, 5, 50),
                                     counted(10, 100, 200, 5, 201), counted(10, 200, 100, 0, 0)}) {
    bool refused = false;
    try {
      ProbeResultMsg::decode(bad.encode());
    } catch (const PcclError& e) {
      refused = e.kind() == ErrorKind::kProtocol;
    }
    CHECK(refused);
  }
  // The tail of a window that ended early: no tail bytes, its start past the last byte.
  CHECK_EQ(ProbeResultMsg::decode(counted(10, 100, 200, 0, 900).encode()).tail_from_us, 900u);
  std::vector<uint8_t> v6 = WireWriter().u64(10).u64(100).u64(200).take();  // before v7
  bool short_refused = false;
  try {
    ProbeResultMsg::decode(v6);
  } catch (const PcclError& e) {
    short_refused = e.kind() == ErrorKind::kProtocol;
  }
  CHECK(short_refused);
}

}  // namespace

int main() {
  test_plan_without_figures_covers_every_link_in_n_minus_1_rounds();
  test_plan_skips_fresh_figures();
  test_failed_and_aged_figures_are_planned_again();
  test_forget_peer_and_record();
  test_costs();
  test_plan_ring_matches_brute_force();
  test_bottleneck_beats_total();
  test_infinite_links();
  test_tiny_rings();
  test_link_seconds();
  test_probe_rate();
  test_probe_result_wire();
  return check_summary("test_link_planning");
}
