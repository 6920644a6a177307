// The simulated world around MasterCore: scheduler, network, the master's
// glue, peers and faults (sim_master_world.h).
#include "tests/sim_master_world.h"

#include <algorithm>

#include "common/errors.h"

namespace pccl::sim {
namespace {

std::unique_ptr<MasterCore> make_core(std::mt19937_64& rng, InjectedDefect defect,
                                      const double* now) {
  MasterCoreConfig c;
  c.max_groups = kMaxGroupsSim;
  c.id_seed = rng() | 1;  // never 0: that would mean "from std::random_device"
  c.defect = defect;
  // Link ages on the simulated clock, and a ring search bounded by kicks,
  // not wall time: same seed, same rings, on any machine.
  c.clock = [now] { return *now; };
  c.link_max_age_s = kLinkMaxAge;
  c.solve_budget_s = 1e6;
  // Groups of 4 or more are beyond the loop's exact solver here, and its
  // search is short, so that their rings go to the background planner
  // (run_background_jobs), whose rings are often better.
  c.solve_max_kicks = 2;
  c.solve_exact_up_to = 3;
  c.background_solve_s = 1e6;
  return std::make_unique<MasterCore>(c);
}

uint16_t u16(MsgType t) { return static_cast<uint16_t>(t); }

}  // namespace

World::World(const Options& o) : opt_(o), rng_(o.seed) {
  core_ = make_core(rng_, opt_.defect, &now_);
  schedule(Event::kChaos, 0.0);
  schedule(Event::kHeartbeatCheck, kHeartbeatCheck);
}

std::string World::run() {
  while (stats_.events < opt_.events && !queue_.empty()) {
    Event e = queue_.top();
    queue_.pop();
    now_ = e.t;
    step(e);
    ++stats_.events;
    if (violation_.empty()) violation_ = check();
    if (!violation_.empty()) return violation_;
  }
  return "";
}

void World::schedule(Event::Kind kind, double t, size_t peer, uint64_t gen) {
  queue_.push({t, seq_++, kind, peer, gen});
}

void World::send_to_master(size_t p, uint16_t type, std::vector<uint8_t> payload, double react) {
  Peer& q = peers_[p];
  q.to_master_t = std::max(now_ + react + delay(kMaxDelay), q.to_master_t);
  q.to_master.push_back({type, std::move(payload)});
  schedule(Event::kToMaster, q.to_master_t, p, q.gen);
}

void World::send_to_peer(size_t p, uint16_t type, std::vector<uint8_t> payload) {
  Peer& q = peers_[p];
  q.to_peer_t = std::max(now_ + delay(kMaxDelay), q.to_peer_t);
  q.to_peer.push_back({type, std::move(payload)});
  schedule(Event::kToPeer, q.to_peer_t, p, q.gen);
}

void World::step(const Event& e) {
  switch (e.kind) {
    case Event::kToMaster:
      if (e.gen == peers_[e.peer].gen) master_receive(e.peer);
      return;
    case Event::kToPeer:
      if (e.gen == peers_[e.peer].gen) peer_receive(e.peer);
      return;
    case Event::kChaos:
      chaos();
      schedule(Event::kChaos, now_ + delay(0.2));
      return;
    case Event::kHeartbeatCheck:
      heartbeat_check();
      schedule(Event::kHeartbeatCheck, now_ + kHeartbeatCheck);
      return;
    case Event::kBackgroundPlan:
      deliver_background(e);
      return;
  }
}

// ---- The master's glue: what Master does around MasterCore. ----

void World::master_receive(size_t p) {
  Peer& q = peers_[p];
  Frame f = std::move(q.to_master.front());
  q.to_master.pop_front();
  if (f.type == 0) {  // EOF: reap() forgets the peer
    if (q.id != 0) lose(p, "closed by peer");
    return;
  }
  q.last_heard = now_;
  if (q.id == 0) {
    HelloMsg hello;
    try {
      hello = HelloMsg::decode(f.payload);
      q.id = core_->on_hello(f.payload, "10.0.0.1");
    } catch (const PcclError& e) {
      ++stats_.refused_hellos;
      std::string why = e.what();
      bool full = why.find("groups") != std::string::npos;
      // The known limit (MasterCore::learn_from_resume): a client may push a
      // group's epochs near kMaxEpoch; after a later restart its honest
      // members' claims are then beyond the bound.
      bool poisoned = poisoned_.count(q.group) != 0 && why.find("claims epoch") != std::string::npos;
      if (poisoned && !q.hostile) ++stats_.poisoned_refusals;
      if (!q.hostile && !full && !poisoned) violation_ = "honest HELLO refused: " + why;
      q.life = Peer::Life::kDead;
      ++q.gen;  // the glue closes the connection
      q.to_master.clear();
      q.to_peer.clear();
      return;
    }
    by_id_[q.id] = p;
    q.registered_at = now_;
    if (hello.resume_epoch > kMaxEpoch / 2) poisoned_.insert(hello.group);
    if (hello.has_resume_revision) {
      uint64_t& claimed = revision_claimed_[hello.group];
      claimed = std::max(claimed, hello.resume_revision);
    }
    route_outbox();
    if (violation_.empty() && opt_.learned_check && !q.hostile && hello.resume_peer_id != 0 &&
        hello.has_resume_revision) {
      violation_ = check_learned(hello);
    }
    return;
  }
  try {
    core_->on_frame(q.id, f.type, f.payload);
  } catch (const PcclError& e) {
    if (!q.hostile) violation_ = "honest peer dropped for: " + std::string(e.what());
    lose(p, e.what());  // the glue sends ERROR and drops the connection
    return;
  }
  route_outbox();
  if (f.type == u16(MsgType::kLinkReport) && violation_.empty()) {
    violation_ = check_links(q.group);
  }
}

void World::route_outbox() {
  std::map<uint64_t, LinkPlanMsg> link_plans;  // the master plans a group's probes at once
  for (Outgoing& o : core_->take_outbox()) {
    auto it = by_id_.find(o.peer);
    if (it == by_id_.end()) continue;  // the glue has no connection for it any more
    if (o.type == MsgType::kTopology) ++stats_.topologies;
    if (o.type == MsgType::kSyncPlan && violation_.empty()) {
      violation_ = check_plan(it->second, SyncPlanMsg::decode(o.payload));
    }
    if (o.type == MsgType::kLinkPlan) {
      ++stats_.link_plans;
      bool again = !link_plans.emplace(o.peer, LinkPlanMsg::decode(o.payload)).second;
      if (again && violation_.empty()) {
        violation_ = "peer " + std::to_string(o.peer) + " got two link plans at once";
      }
    }
    send_to_peer(it->second, u16(o.type), std::move(o.payload));
  }
  if (!link_plans.empty() && violation_.empty()) violation_ = check_link_plans(link_plans);
  run_background_jobs();
  // Members left out of every ring (no ring avoids their broken links): the
  // glue tells them and drops them, as Master::flush_outbox() does.
  for (auto& [id, why] : core_->take_evictions()) {
    auto it = by_id_.find(id);
    if (it == by_id_.end()) continue;
    ++stats_.evictions;
    lose(it->second, why);
  }
}

// What Master hands its BackgroundPlanner: solved now (bounded by kicks, so a
// seed replays; exact only up to 8 peers, to keep the run fast) and delivered
// to this master after a while, unless it restarted meanwhile: by then the
// group may have changed any way the chaos allows.
void World::run_background_jobs() {
  for (PlanJob& job : core_->take_plan_jobs()) {
    ++stats_.background_jobs;
    job.options.exact_up_to = std::min(job.options.exact_up_to, 8);
    job.options.max_kicks = kBackgroundKicks;
    size_t id = next_background_++;
    background_[id] = PlanResult{job.group, job.members, plan_ring(job.costs, job.options)};
    schedule(Event::kBackgroundPlan, now_ + delay(kMaxBackgroundDelay), id, life_);
  }
}

void World::deliver_background(const Event& e) {
  auto it = background_.find(e.peer);
  if (it == background_.end()) return;
  if (e.gen == life_) {
    ++stats_.background_results;
    core_->on_background_plan(std::move(it->second));
  }
  background_.erase(it);
}

void World::heartbeat_check() {
  for (size_t p = 0; p < peers_.size(); ++p) {
    Peer& q = peers_[p];
    if (q.id == 0 || q.life == Peer::Life::kDead) continue;
    if (q.life != Peer::Life::kFrozen) {
      q.last_heard = now_;  // a live peer heartbeats every second
    } else if (now_ - q.last_heard > kHeartbeatTimeout) {
      lose(p, "no heartbeat");  // evicted: MasterLink does not come back
    }
  }
}

void World::lose(size_t p, const std::string& reason) {
  Peer& q = peers_[p];
  uint64_t id = q.id;
  by_id_.erase(id);
  q.id = 0;
  q.life = Peer::Life::kDead;
  ++q.gen;
  q.to_master.clear();
  q.to_peer.clear();
  q.held.clear();
  core_->on_peer_lost(id, reason);
  route_outbox();
  if (violation_.empty()) violation_ = check_links(q.group);
}

void World::restart_master() {
  ++stats_.restarts;
  ++life_;
  core_ = make_core(rng_, opt_.defect, &now_);
  by_id_.clear();
  last_restart_ = now_;
  watch_.clear();
  revision_claimed_.clear();
  for (size_t p = 0; p < peers_.size(); ++p) {
    Peer& q = peers_[p];
    if (q.life == Peer::Life::kDead) continue;
    ++q.gen;  // every connection breaks; what was in flight is lost
    q.to_master.clear();
    q.to_peer.clear();
    q.held.clear();
    q.to_master_t = q.to_peer_t = now_;
    if (q.life == Peer::Life::kFrozen) {
      q.life = Peer::Life::kDead;  // frozen through a restart: counted as gone
      q.id = 0;
      continue;
    }
    if (q.id != 0) q.resume_id = q.id;
    q.id = 0;
    q.life = Peer::Life::kConnecting;
    q.in_ring = false;
    q.voted_epoch = ~0ull;
    q.optimize_epoch = ~0ull;
    q.sync_outstanding = false;
    // MasterLink::reconnect: our id, last epoch and the run's revision.
    HelloMsg h;
    h.group = q.group;
    h.listen_port = static_cast<uint16_t>(1000 + p);
    h.resume_peer_id = q.resume_id;
    h.resume_epoch = q.epoch;
    h.has_resume_revision = q.has_revision;
    h.resume_revision = q.revision;
    send_to_master(p, u16(MsgType::kHello), h.encode(), delay(0.5));
  }
}

// ---- Peers: what MasterLink and an honest training loop do. ----

void World::peer_receive(size_t p) {
  Peer& q = peers_[p];
  Frame f = std::move(q.to_peer.front());
  q.to_peer.pop_front();
  if (q.life == Peer::Life::kFrozen) {
    q.held.push_back(std::move(f));  // read once it wakes up
    return;
  }
  if (q.life == Peer::Life::kDead) return;
  handle(p, f);
}

void World::handle(size_t p, const Frame& f) {
  Peer& q = peers_[p];
  switch (static_cast<MsgType>(f.type)) {
    case MsgType::kWelcome:
      q.life = Peer::Life::kRegistered;
      return;
    case MsgType::kTopology: on_topology(p, f.payload); return;
    case MsgType::kPendingNotice:
    case MsgType::kPeerDropped:
      vote(p);  // update_topology(): admit the newcomer, or drop the dead
      return;
    case MsgType::kSyncPlan: on_plan(p, f.payload); return;
    case MsgType::kLinkPlan: on_link_plan(p, f.payload); return;
    case MsgType::kSyncComplete: {
      SyncCompleteMsg done = SyncCompleteMsg::decode(f.payload);
      if (done.ok && done.round == q.plan_round) {
        note_revision(q, q.plan_revision);
        ++stats_.completed_syncs;
      }
      if (done.round == q.plan_round) q.sync_outstanding = false;
      return;
    }
    default:
      return;
  }
}

void World::on_topology(size_t p, const std::vector<uint8_t>& payload) {
  Peer& q = peers_[p];
  TopologyMsg t = TopologyMsg::decode(payload);
  if (t.epoch <= q.epoch && violation_.empty()) {
    violation_ = "peer " + std::to_string(q.id) + " got epoch " + std::to_string(t.epoch) +
                 " after epoch " + std::to_string(q.epoch) + " (epochs must increase)";
  }
  q.epoch = t.epoch;
  q.in_ring = std::any_of(t.ring.begin(), t.ring.end(),
                          [&](const RingMember& m) { return m.peer_id == q.id; });
  if (t.more_pending) vote(p);
}

void World::on_plan(size_t p, const std::vector<uint8_t>& payload) {
  Peer& q = peers_[p];
  SyncPlanMsg plan = SyncPlanMsg::decode(payload);
  if (!q.sync_outstanding || plan.request_id != q.request_id) return;  // answers an older request
  if (!plan.failed) {
    q.plan_round = plan.round;
    q.plan_revision = plan.revision;
    if (plan.settled) note_revision(q, plan.revision);
  }
  bool refused = std::any_of(plan.refusals.begin(), plan.refusals.end(),
                             [&](const SyncRefusal& r) { return r.peer_id == q.id; });
  if (refused) ++stats_.buggy_refused;
  if (refused && !q.buggy && violation_.empty()) {
    violation_ = "honest peer " + std::to_string(q.id) + " refused: " + plan.refusals[0].message;
  }
  ++stats_.plans;
  q.awaiting_plan = false;
  if (plan.failed || refused || plan.settled) {
    q.sync_outstanding = false;
    if (plan.settled && !plan.failed) ++stats_.completed_syncs;
    return;
  }
  send_to_master(p, u16(MsgType::kSyncDone), SyncDoneMsg{plan.round, 1, ""}.encode(),
                 delay(kMaxReaction));
}

// Probes what the plan names (here: a random figure per link, now and then
// a failed probe) and reports, as Communicator::run_probes does. Hostile
// peers answer too: like their votes, their part of a collective is honest.
// Few distinct figures: rings tie, and the planner's threshold search takes
// few exact solves (with a figure per link, they were most of the run's time).
void World::on_link_plan(size_t p, const std::vector<uint8_t>& payload) {
  constexpr uint64_t kRoundTripsUs[] = {100, 10'000};
  LinkPlanMsg plan = LinkPlanMsg::decode(payload);
  LinkReportMsg report;
  report.epoch = plan.epoch;
  for (const ProbeRound& r : plan.rounds) {
    if (r.to == 0) continue;
    bool ok = !chance(0.1);
    // 10 MB/s to 1 GB/s in 100 steps: few ties, so rings differ in quality.
    uint64_t rate = 10'000'000 * (1 + pick(100));
    report.figures.push_back({r.to, ok ? rate : 0, ok ? kRoundTripsUs[pick(2)] : 0, ok});
  }
  ++stats_.link_reports;
  send_to_master(p, u16(MsgType::kLinkReport), report.encode(), delay(kMaxReaction));
}

void World::note_revision(Peer& q, uint64_t revision) {
  if (q.has_revision && revision <= q.revision) return;
  q.has_revision = true;
  q.revision = revision;
}

void World::vote(size_t p) {
  Peer& q = peers_[p];
  if (!q.in_ring || q.life != Peer::Life::kRegistered || q.voted_epoch == q.epoch) return;
  q.voted_epoch = q.epoch;
  send_to_master(p, u16(MsgType::kVote), VoteMsg{q.epoch, {}}.encode(), delay(kMaxReaction));
}

void World::request_sync(size_t p) {
  Peer& q = peers_[p];
  if (!q.in_ring || q.life != Peer::Life::kRegistered || q.sync_outstanding) return;
  SyncRequestMsg r;
  r.request_id = ++q.request_id;
  uint64_t base = q.has_revision ? q.revision : 0;
  r.revision = base + pick(2);  // the same state, or one step further
  if (q.buggy && chance(0.3)) r.revision = chance(0.2) ? ~0ull : base + 1000;
  r.strategy = static_cast<uint8_t>(chance(0.1) ? SyncStrategy::kReceiveOnly
                                                : SyncStrategy::kEnforcePopular);
  r.leaves.push_back({1 + pick(3), 4, 0, {1}});
  q.sync_outstanding = q.awaiting_plan = true;
  q.requested_at = now_;
  send_to_master(p, u16(MsgType::kSyncRequest), r.encode(), delay(kMaxReaction));
}

void World::request_optimize(size_t p) {
  Peer& q = peers_[p];
  if (!q.in_ring || q.life != Peer::Life::kRegistered) return;
  // Once per epoch, now and then again: the call after one that gave up
  // waiting for its plan (the master ignores the repeat). At any ring size:
  // Communicator skips rings under three, a client need not.
  if (q.optimize_epoch == q.epoch && !chance(0.1)) return;
  q.optimize_epoch = q.epoch;
  ++stats_.optimize_requests;
  send_to_master(p, u16(MsgType::kOptimize), OptimizeMsg{q.epoch}.encode(), delay(kMaxReaction));
}

// ---- Faults and workload. ----

size_t World::live_peers() const {
  return static_cast<size_t>(std::count_if(peers_.begin(), peers_.end(), [](const Peer& q) {
    return q.life != Peer::Life::kDead;
  }));
}

size_t World::new_slot() {
  // A dead slot is reused once the master has forgotten it; its generation
  // carries on, so events still scheduled for the old peer are ignored.
  for (size_t p = 0; p < peers_.size(); ++p) {
    Peer& q = peers_[p];
    if (q.life != Peer::Life::kDead || q.id != 0 || !q.to_master.empty()) continue;
    uint64_t gen = q.gen + 1;
    q = Peer{};
    q.gen = gen;
    return p;
  }
  peers_.emplace_back();
  return peers_.size() - 1;
}

HelloMsg World::hostile_hello() {
  HelloMsg h;
  h.group = chance(0.5) ? static_cast<uint32_t>(100 + pick(16)) : static_cast<uint32_t>(pick(kHonestGroups));
  h.listen_port = chance(0.05) ? 0 : 4000;
  h.resume_peer_id = chance(0.8) ? 1 + pick(1ull << 53) : 0;
  switch (pick(5)) {
    case 0: h.resume_epoch = pick(100); break;
    case 1: h.resume_epoch = pick(1ull << 40); break;
    case 2:
      // Near the bound: rarely in the honest groups, whose members could not
      // re-register after a restart any more (the known limit).
      h.resume_epoch = h.group >= 100 || chance(0.05) ? kMaxEpoch - pick(1000) : pick(1ull << 40);
      break;
    case 3: h.resume_epoch = kMaxEpoch + 1 + pick(1000); break;  // refused on decode
    default: h.resume_epoch = ~0ull; break;                     // refused on decode
  }
  if (chance(0.5)) {
    h.has_resume_revision = true;
    uint64_t choices[] = {pick(50), kMaxRevision, kMaxRevision + 1, ~0ull};
    h.resume_revision = choices[pick(4)];
  }
  return h;
}

void World::join(bool hostile) {
  size_t p = new_slot();
  Peer& q = peers_[p];
  q.hostile = hostile;
  q.buggy = !hostile && chance(0.15);
  q.life = Peer::Life::kConnecting;
  q.to_master_t = q.to_peer_t = now_;
  HelloMsg h;
  if (hostile) {
    ++stats_.hostile_hellos;
    h = hostile_hello();
  } else {
    ++stats_.joins;
    h.group = static_cast<uint32_t>(pick(kHonestGroups));
    h.listen_port = static_cast<uint16_t>(1000 + p);
  }
  q.group = h.group;
  send_to_master(p, u16(MsgType::kHello), h.encode());  // encode() writes any claim
}

void World::kill(size_t p) {
  Peer& q = peers_[p];
  ++stats_.deaths;
  q.life = Peer::Life::kDead;
  q.held.clear();
  send_to_master(p, 0, {});  // EOF, after whatever it had sent
}

void World::freeze(size_t p) {
  Peer& q = peers_[p];
  ++stats_.freezes;
  q.life = Peer::Life::kFrozen;
  q.frozen_at = now_;
  disturbed_at_[q.group] = now_;
}

void World::thaw(size_t p) {
  Peer& q = peers_[p];
  q.life = Peer::Life::kRegistered;  // only registered peers freeze
  std::deque<Frame> held;
  held.swap(q.held);
  for (const Frame& f : held) {
    if (q.life == Peer::Life::kDead) break;
    handle(p, f);
  }
}

void World::start_sync(uint32_t group) {
  // Every member calls sync_shared_state() (it is collective).
  for (size_t p = 0; p < peers_.size(); ++p) {
    if (peers_[p].group == group) request_sync(p);
  }
}

void World::start_optimize(uint32_t group) {
  // Every member calls optimize_topology() (it is collective). A member whose
  // epoch lags (its new topology is in flight) asks at a stale epoch, and the
  // others wait until a later call finds everyone at one epoch.
  for (size_t p = 0; p < peers_.size(); ++p) {
    if (peers_[p].group == group) request_optimize(p);
  }
}

// A registered client forging optimize_topology() messages: a request at an
// epoch near its own, or a report of made-up figures, about anyone (itself
// included, which the master refuses) at its epoch or another.
void World::hostile_optimize(size_t p) {
  Peer& q = peers_[p];
  if (chance(0.4)) {
    uint64_t epoch = q.epoch + pick(3) - 1;  // one behind, its own, or one ahead
    send_to_master(p, u16(MsgType::kOptimize), OptimizeMsg{epoch}.encode());
    return;
  }
  LinkReportMsg r;
  r.epoch = chance(0.7) ? q.epoch : pick(1ull << 40);
  for (uint64_t i = pick(4); i > 0; --i) {
    uint64_t to = 1 + pick(1ull << 53);
    if (chance(0.6) && !by_id_.empty()) to = std::next(by_id_.begin(), pick(by_id_.size()))->first;
    if (chance(0.1)) to = q.id;
    bool ok = chance(0.8);
    r.figures.push_back({to, ok ? pick(~0ull) : 0, pick(~0ull), ok});
  }
  send_to_master(p, u16(MsgType::kLinkReport), r.encode());
}

void World::give_up_waits() {
  for (size_t p = 0; p < peers_.size(); ++p) {
    Peer& q = peers_[p];
    if (!q.sync_outstanding || q.life != Peer::Life::kRegistered) continue;
    if (q.awaiting_plan && now_ - q.requested_at > kSyncWithdraw) {
      // Withdraw: the plan did not come (someone never asked).
      q.sync_outstanding = q.awaiting_plan = false;
      send_to_master(p, u16(MsgType::kSyncDone), SyncDoneMsg{0, 0, "gave up"}.encode());
    } else if (now_ - q.requested_at > 2 * kSyncWithdraw) {
      q.sync_outstanding = false;  // the outcome never came: fail locally
    }
  }
}

void World::chaos() {
  give_up_waits();
  std::vector<size_t> live, frozen, hostile;
  for (size_t p = 0; p < peers_.size(); ++p) {
    const Peer& q = peers_[p];
    if (q.life == Peer::Life::kFrozen) frozen.push_back(p);
    if (q.life == Peer::Life::kRegistered) live.push_back(p);
    if (q.life == Peer::Life::kRegistered && q.hostile && q.id != 0) hostile.push_back(p);
  }
  uint64_t roll = pick(1000);
  bool room = live_peers() < kMaxLivePeers;
  if (roll < 250) {
    if (room) join(false);
  } else if (roll < 300) {
    if (room) join(true);
  } else if (roll < 360) {
    if (!live.empty()) kill(live[pick(live.size())]);
  } else if (roll < 390) {
    if (!live.empty()) freeze(live[pick(live.size())]);
  } else if (roll < 430) {
    if (!frozen.empty()) thaw(frozen[pick(frozen.size())]);
  } else if (roll < 600) {
    start_sync(static_cast<uint32_t>(pick(kHonestGroups)));
  } else if (roll < 620) {
    if (!hostile.empty()) {
      // Garbage from a registered client: the master drops it, nobody else.
      size_t p = hostile[pick(hostile.size())];
      std::vector<uint8_t> junk(pick(24));
      for (auto& b : junk) b = static_cast<uint8_t>(rng_());
      uint16_t types[] = {u16(MsgType::kVote),     u16(MsgType::kSyncRequest),
                          u16(MsgType::kSyncDone), u16(MsgType::kHello),
                          u16(MsgType::kOptimize), u16(MsgType::kLinkReport), 77};
      send_to_master(p, types[pick(7)], std::move(junk));
    }
  } else if (roll < 625) {
    restart_master();
  } else if (roll < 655) {
    // Rarer than syncs: each round's ring planning costs a few exact solves.
    start_optimize(static_cast<uint32_t>(pick(kHonestGroups)));
  } else if (roll < 665) {
    if (!hostile.empty()) hostile_optimize(hostile[pick(hostile.size())]);
  }
}

}  // namespace pccl::sim
