// optimize_topology() at the master (master_core.h): gather, plan the probes,
// collect the figures, choose the ring (topology/ring_planner.h).
#include <algorithm>
#include <chrono>
#include <utility>

#include "common/errors.h"
#include "common/log.h"
#include "master/master_core.h"
#include "topology/ring_planner.h"

namespace pccl {

namespace {

constexpr double kUnmeasuredLinkSeconds = 1.0;

uint64_t most_broken_member(const LinkTable& links, const std::vector<uint64_t>& ring) {
  uint64_t victim = ring.back();
  int worst = -1;
  for (uint64_t a : ring) {
    int count = 0;
    for (uint64_t b : ring) count += a != b && links.broken({a, b}) ? 1 : 0;
    if (count >= worst) {  // >=: the last in ring order wins ties
      worst = count;
      victim = a;
    }
  }
  return victim;
}

std::vector<uint64_t> in_order(const std::vector<uint64_t>& members, const std::vector<int>& order) {
  std::vector<uint64_t> ring;
  for (int i : order) ring.push_back(members[i]);
  return ring;
}

bool is_ring_order(const std::vector<int>& order, size_t n) {
  std::vector<int> all(n);
  for (size_t i = 0; i < n; ++i) all[i] = static_cast<int>(i);
  return order.size() == n && std::is_permutation(order.begin(), order.end(), all.begin());
}

// Whether `a` is a better ring than `b` over the same figures: a faster
// slowest link, or the same one and a smaller total (beyond rounding: the two
// sums add the same links in other orders).
bool better_plan(const RingPlan& a, const RingPlan& b) {
  if (a.bottleneck != b.bottleneck) return a.bottleneck < b.bottleneck;
  return a.total < b.total * (1 - 1e-9);
}

}  // namespace

double MasterCore::now_s() const {
  if (config_.clock) return config_.clock();
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

SolverOptions MasterCore::planner_options(const Group& g) const {
  SolverOptions opts;
  opts.time_budget_s = config_.solve_budget_s;
  opts.max_kicks = config_.solve_max_kicks;
  opts.exact_up_to = config_.solve_exact_up_to;
  opts.seed = g.epoch + 1;  // one ring per input and epoch (when kicks bound it)
  return opts;
}

void MasterCore::handle_optimize(PeerRecord& p, const std::vector<uint8_t>& payload) {
  OptimizeMsg msg = OptimizeMsg::decode(payload);
  if (p.state != PeerState::kAccepted) {
    throw ProtocolViolation("optimize_topology from a peer not yet accepted");
  }
  Group& g = groups_[p.group];
  if (msg.epoch != g.epoch) {
    // Its ring is already replaced: the new topology is on its way to it.
    PCCL_LOG(kInfo, "master: stale optimize_topology from peer " << p.id << " (epoch "
                                                                 << msg.epoch << ", current "
                                                                 << g.epoch << ")");
    return;
  }
  if (g.optimize.planned) {
    // It gave up waiting for its plan and asked again: the plan it missed
    // is in its mailbox, and its report is what this round waits for.
    PCCL_LOG(kInfo, "master: optimize_topology again from peer " << p.id << " while probing");
    return;
  }
  g.optimize.requested.insert(p.id);
  try_plan_optimize(p.group);
}

void MasterCore::try_plan_optimize(uint32_t group_id) {
  Group& g = groups_[group_id];
  OptimizeRound& o = g.optimize;
  if (o.planned || o.requested.empty()) return;
  for (uint64_t member : g.ring) {
    if (o.requested.count(member) == 0) return;
  }
  double now = now_s();
  auto rounds = g.links.plan(g.ring, now, config_.link_max_age_s);
  o.planned = true;
  for (uint64_t member : g.ring) {
    LinkPlanMsg plan;
    plan.epoch = g.epoch;
    plan.probe_ms = std::clamp<uint32_t>(config_.probe_ms, 1, kMaxProbeMillis);
    plan.streams = std::clamp<uint16_t>(config_.probe_streams, 1, kMaxRingConnections);
    plan.rounds = rounds[member];
    for (const ProbeRound& r : plan.rounds) {
      if (r.to != 0) o.expected.insert({member, r.to});
    }
    o.waiting.insert(member);
    o.probes += static_cast<int>(std::count_if(plan.rounds.begin(), plan.rounds.end(),
                                               [](const ProbeRound& r) { return r.to != 0; }));
    send(member, MsgType::kLinkPlan, plan.encode());
  }
  PCCL_LOG(kInfo, "master: group " << group_id << " epoch " << g.epoch << ": probing "
                                   << o.expected.size() << " links in "
                                   << (rounds.empty() ? 0 : rounds.begin()->second.size())
                                   << " rounds");
}

void MasterCore::handle_link_report(PeerRecord& p, const std::vector<uint8_t>& payload) {
  LinkReportMsg report = LinkReportMsg::decode(payload);
  Group& g = groups_[p.group];
  OptimizeRound& o = g.optimize;
  if (report.epoch != g.epoch || !o.planned || o.waiting.count(p.id) == 0) {
    // Late (the ring changed meanwhile) or repeated: nothing waits for it.
    PCCL_LOG(kInfo, "master: ignoring a link report of peer " << p.id << " for epoch "
                                                             << report.epoch);
    return;
  }
  // Refused before anything is taken: a violation leaves the state as it was
  // (master_core.h), so no figure of a report that is refused gets recorded.
  for (const LinkFigure& f : report.figures) {
    if (f.to == p.id) throw ProtocolViolation("link report about a link to itself");
  }
  double now = now_s();
  for (const LinkFigure& f : report.figures) {
    // Only the links it was told to probe: a peer cannot fill in others' figures.
    if (o.expected.erase({p.id, f.to}) == 1) g.links.record(p.id, f, now);
  }
  o.waiting.erase(p.id);
  try_finish_optimize(p.group);
}

void MasterCore::try_finish_optimize(uint32_t group_id) {
  Group& g = groups_[group_id];
  OptimizeRound& o = g.optimize;
  if (!o.planned || !o.waiting.empty() || g.ring.empty()) return;
  bool background = false;
  RingPlan plan = choose_plan(group_id, &background);
  std::vector<uint64_t> ring = in_order(background ? g.improved->members : g.ring, plan.order);
  g.improved.reset();
  g.choice = {0, plan.bottleneck, plan.exact, o.probes, background};
  PCCL_LOG(kInfo, "master: group " << group_id << " ring chosen over measured links (slowest "
                                   << plan.bottleneck << " s per reference chunk"
                                   << (plan.exact ? ", exact" : "")
                                   << (background ? ", the background planner's" : "") << ")");
  if (!plan.exact && config_.background_solve_s > 0) queue_background_plan(group_id, ring);
  advance_epoch(group_id, ring);  // resets the round
  g.choice.epoch = g.epoch;
  note(ring_chosen_note(group_id, g.choice, ring));
}

RingPlan MasterCore::choose_plan(uint32_t group_id, bool* background) {
  Group& g = groups_[group_id];
  RingPlan plan = plan_ring(g.links.costs(g.ring), planner_options(g));
  *background = false;
  if (!g.improved) return plan;
  const PlanResult& r = *g.improved;
  // A ring of other members (a join or a departure since) is no ring now.
  bool same_members = r.members.size() == g.ring.size() &&
                      std::is_permutation(r.members.begin(), r.members.end(), g.ring.begin());
  if (config_.defect == InjectedDefect::kStaleBackgroundRing) same_members = true;
  if (!same_members || !is_ring_order(r.plan.order, r.members.size())) {
    PCCL_LOG(kInfo, "master: group " << group_id << ": the background ring is of other members");
    return plan;
  }
  // Judged on today's figures (some may have been measured again since),
  // not on what the worker said of its ring.
  RingPlan found = evaluate_ring(g.links.costs(r.members), r.plan.order);
  found.exact = r.plan.exact;
  if (!better_plan(found, plan)) return plan;
  *background = true;
  return found;
}

// The loop's planner had a fraction of a second; the same figures get
// background_solve_s more (exact up to kMaxExactRing peers), from another seed.
void MasterCore::queue_background_plan(uint32_t group_id, const std::vector<uint64_t>& ring) {
  Group& g = groups_[group_id];
  PlanJob job;
  job.group = group_id;
  job.members = ring;
  job.costs = g.links.costs(ring);
  job.options = planner_options(g);
  job.options.time_budget_s = config_.background_solve_s;
  job.options.exact_up_to = kMaxExactRing;
  job.options.seed = ~job.options.seed;
  auto same_group = [group_id](const PlanJob& j) { return j.group == group_id; };
  plan_jobs_.erase(std::remove_if(plan_jobs_.begin(), plan_jobs_.end(), same_group),
                   plan_jobs_.end());
  plan_jobs_.push_back(std::move(job));
}

std::vector<PlanJob> MasterCore::take_plan_jobs() { return std::exchange(plan_jobs_, {}); }

void MasterCore::on_background_plan(PlanResult result) {
  auto it = groups_.find(result.group);
  if (it == groups_.end()) return;  // the group is gone
  PCCL_LOG(kInfo, "master: group " << result.group << ": background ring ready (slowest "
                                   << result.plan.bottleneck << " s per reference chunk"
                                   << (result.plan.exact ? ", exact" : "") << ")");
  it->second.improved = std::move(result);
}

// The durable record of a choice (the status's "optimized" holds only the last
// one): which epoch, over how many new figures, and the order while it is short
// enough to read.
std::string MasterCore::ring_chosen_note(uint32_t group_id, const RingChoice& c,
                                         const std::vector<uint64_t>& ring) {
  std::string text = "group " + std::to_string(group_id) + " epoch " + std::to_string(c.epoch) +
                     ": ring chosen over " + std::to_string(c.probed_links) + " measured links";
  if (c.background) text += " (background planner)";
  if (ring.size() > kRingIdsInNote) return text;
  text += ", order";
  for (uint64_t id : ring) text += " " + std::to_string(id);
  return text;
}

std::vector<uint64_t> MasterCore::route_around_broken_links(uint32_t group_id,
                                                            std::vector<uint64_t> ring) {
  Group& g = groups_[group_id];
  double now = now_s();
  for (const auto& [pair, named_by] : g.unreachable) {
    // Both ends, both still here: one end alone may be a dying peer's
    // neighbour (its death is the heartbeat's to find) or a liar.
    if (named_by.count(pair.first) == 0 || named_by.count(pair.second) == 0) continue;
    if (peers_.count(pair.first) == 0 || peers_.count(pair.second) == 0) continue;
    PCCL_LOG(kWarn, "master: group " << group_id << ": the link between peers " << pair.first
                                     << " and " << pair.second
                                     << " is broken (both ends say so); routing around it");
    g.links.mark_broken(pair.first, pair.second, now);
    note("group " + std::to_string(group_id) + ": link between peers " + std::to_string(pair.first) +
         " and " + std::to_string(pair.second) + " broken; routing around it");
  }
  while (ring.size() >= 3 && g.links.ring_uses_broken(ring)) {
    // Unmeasured links count as ordinary ones (a second, far above any
    // measured reference chunk), broken ones as unusable.
    RingPlan plan = plan_ring(g.links.costs(ring, kUnmeasuredLinkSeconds), planner_options(g));
    std::vector<uint64_t> routed;
    for (int i : plan.order) routed.push_back(ring[i]);
    if (!g.links.ring_uses_broken(routed)) return routed;
    // No ring of them all avoids the broken links: leave out the member
    // with the most of them (the last in ring order among equals: newcomers come last), and try again.
    uint64_t victim = most_broken_member(g.links, ring);
    PCCL_LOG(kWarn, "master: group " << group_id << ": no ring avoids every broken link; "
                                     << "leaving out peer " << victim);
    evictions_.push_back({victim, "no ring of its group avoids its broken links"});
    ring.erase(std::find(ring.begin(), ring.end(), victim));
    g.links.forget_peer(victim);  // figures are kept between members only
  }
  return ring;
}

void MasterCore::forget_optimize_peer(uint32_t group_id, uint64_t peer_id) {
  auto it = groups_.find(group_id);
  if (it == groups_.end()) return;
  OptimizeRound& o = it->second.optimize;
  o.requested.erase(peer_id);
  o.waiting.erase(peer_id);
  for (auto e = o.expected.begin(); e != o.expected.end();) {
    e = e->first == peer_id || e->second == peer_id ? o.expected.erase(e) : std::next(e);
  }
  if (o.planned) {
    try_finish_optimize(group_id);
  } else {
    try_plan_optimize(group_id);
  }
}

}  // namespace pccl
