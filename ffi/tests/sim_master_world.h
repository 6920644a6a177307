// A deterministic simulation of the master (FoundationDB style): MasterCore
// (master/master_core.h) driven from one seed by a discrete-event scheduler,
// with simulated peers, a simulated network (per-connection FIFO, random
// delays, so votes from different peers arrive in any order) and a
// simulated clock. Workload: votes, shared-state syncs and optimize_topology()
// (every member asks, answers its LINK_PLAN with a LINK_REPORT of random
// figures). Faults: peers join, die, freeze (the heartbeat bound drops
// them), the master restarts (peers re-register with their id, epoch and
// revision, as MasterLink does), hostile clients claim epochs, revisions,
// group ids out of any range and send garbage or forged optimize messages,
// and buggy peers claim revisions far ahead.
//
// After every event the invariants (sim_master_invariants.cc) are checked;
// the first violation stops the run. Same seed, same events: a failure
// replays exactly.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "master/master_core.h"

namespace pccl::sim {

// Simulated seconds. The master drops a peer silent for kHeartbeatTimeout
// (checked every kHeartbeatCheck); peers react within kMaxReaction and the
// network delivers within kMaxDelay. kLivenessBound is what every wait may
// take after the last fault that could explain it.
constexpr double kMaxDelay = 0.05;
constexpr double kMaxReaction = 0.1;
constexpr double kHeartbeatTimeout = 4.0;
constexpr double kHeartbeatCheck = 0.5;
constexpr double kSyncWithdraw = 8.0;  // a peer gives up waiting for a plan
constexpr double kLivenessBound = kHeartbeatTimeout + kHeartbeatCheck + 1.5;
constexpr size_t kMaxLivePeers = 24;
constexpr uint32_t kHonestGroups = 3;
constexpr uint32_t kMaxGroupsSim = 8;  // small, so hostile group ids reach the bound
// Link figures age out within a run (the master's default is 600 s), so that
// optimisations also re-probe some links, not only the first or none.
constexpr double kLinkMaxAge = 20.0;
// The background planner's results arrive within this (seconds of its search).
constexpr double kMaxBackgroundDelay = 6.0;
constexpr long kBackgroundKicks = 30;   // the loop's search: 2 (make_core)

struct Frame {
  uint16_t type = 0;  // 0: the connection closed (EOF)
  std::vector<uint8_t> payload;
};

struct Peer {
  enum class Life { kConnecting, kRegistered, kFrozen, kDead };
  Life life = Life::kConnecting;
  bool hostile = false;  // lies in HELLO (epochs, revisions, groups); votes honestly
  bool buggy = false;    // sometimes claims a revision far ahead of the run
  uint32_t group = 0;
  uint64_t id = 0;         // the id the current master gave; 0: none yet
  uint64_t resume_id = 0;  // the id of a previous master, claimed on re-registering
  uint64_t epoch = 0;      // of the last topology received
  bool in_ring = false;
  uint64_t voted_epoch = ~0ull;
  double registered_at = 0;  // when the current master took its HELLO
  double frozen_at = 0;
  double last_heard = 0;     // by the master
  // Shared state, as MasterLink tracks it.
  bool has_revision = false;
  uint64_t revision = 0;
  uint64_t plan_round = 0, plan_revision = 0;
  bool sync_outstanding = false;
  uint64_t request_id = 0;
  double requested_at = 0;
  // optimize_topology(): the epoch it last asked at (~0: never, this master).
  uint64_t optimize_epoch = ~0ull;
  // The connection: frames in flight each way, and when the last one lands.
  uint64_t gen = 0;  // bumped when the connection is replaced
  std::deque<Frame> to_master, to_peer;
  std::deque<Frame> held;  // arrived while frozen: read when it wakes up
  bool awaiting_plan = false;
  double to_master_t = 0, to_peer_t = 0;
};

struct Event {
  enum Kind { kToMaster, kToPeer, kChaos, kHeartbeatCheck, kBackgroundPlan };
  double t = 0;
  uint64_t seq = 0;
  Kind kind = kChaos;
  size_t peer = 0;
  uint64_t gen = 0;
  bool operator>(const Event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
};

struct Options {
  uint64_t seed = 1;
  uint64_t events = 1000000;
  InjectedDefect defect = InjectedDefect::kNone;
  // Off: the restarted master's revision is left to the election guard's
  // check alone (shows that one catches a forgotten revision too).
  bool learned_check = true;
};

struct Stats {
  uint64_t events = 0, joins = 0, deaths = 0, freezes = 0, restarts = 0, hostile_hellos = 0,
           refused_hellos = 0, poisoned_refusals = 0, topologies = 0, plans = 0, buggy_refused = 0, completed_syncs = 0;
  // optimize_topology(): honest requests, LINK_PLANs and LINK_REPORTs sent,
  // rings the master chose over measured links.
  uint64_t optimize_requests = 0, link_plans = 0, link_reports = 0, reorders = 0;
  // Members left out because no ring avoided their broken (failed) links.
  uint64_t evictions = 0;
  // Rings handed to the background planner, its results delivered to the
  // master that asked (not restarted since), and rings chosen from them.
  uint64_t background_jobs = 0, background_results = 0, background_rings = 0;
};

class World {
 public:
  explicit World(const Options& o);
  // Runs until the event budget is spent or an invariant fails; returns the
  // violation ("" if none).
  std::string run();
  const Stats& stats() const { return stats_; }
  double now() const { return now_; }

 private:
  // The scheduler and the network.
  void schedule(Event::Kind kind, double t, size_t peer = 0, uint64_t gen = 0);
  void send_to_master(size_t p, uint16_t type, std::vector<uint8_t> payload, double react = 0);
  void send_to_peer(size_t p, uint16_t type, std::vector<uint8_t> payload);
  double delay(double max) { return std::uniform_real_distribution<double>(0, max)(rng_); }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  uint64_t pick(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
  void step(const Event& e);
  // The master's glue: what Master does around MasterCore.
  void master_receive(size_t p);
  void route_outbox();
  void run_background_jobs();  // BackgroundPlanner's work, delivered later
  void deliver_background(const Event& e);
  void heartbeat_check();
  void lose(size_t p, const std::string& reason);  // the glue drops p's connection
  void restart_master();
  // Peers.
  void peer_receive(size_t p);
  void handle(size_t p, const Frame& f);
  void on_topology(size_t p, const std::vector<uint8_t>& payload);
  void on_plan(size_t p, const std::vector<uint8_t>& payload);
  void note_revision(Peer& q, uint64_t revision);
  void vote(size_t p);
  void request_sync(size_t p);
  void request_optimize(size_t p);
  void on_link_plan(size_t p, const std::vector<uint8_t>& payload);
  // Faults and workload.
  void chaos();
  size_t new_slot();
  HelloMsg hostile_hello();
  void join(bool hostile);
  void kill(size_t p);
  void freeze(size_t p);
  void thaw(size_t p);
  void start_sync(uint32_t group);
  void start_optimize(uint32_t group);
  void hostile_optimize(size_t p);
  void give_up_waits();
  size_t live_peers() const;
  // Invariants (sim_master_invariants.cc).
  std::string check();
  std::string check_group(uint32_t id, const MasterCore::Group& g);
  std::string check_peers();
  std::string check_plan(size_t p, const SyncPlanMsg& plan);
  std::string check_link_plans(const std::map<uint64_t, LinkPlanMsg>& plans);
  std::string check_links(uint32_t group);
  std::string check_optimize(uint32_t id, const MasterCore::Group& g, double since_fault);
  std::string check_learned(const HelloMsg& hello);
  double disturbed(uint32_t group) const;

  Options opt_;
  std::mt19937_64 rng_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> queue_;
  uint64_t seq_ = 0;
  double now_ = 0;
  std::unique_ptr<MasterCore> core_;
  uint64_t life_ = 0;  // master lifetimes (restarts)
  std::vector<Peer> peers_;
  std::map<uint64_t, size_t> by_id_;  // current master's ids -> peers_
  std::string violation_;              // set by a check made mid-event
  std::map<size_t, PlanResult> background_;  // by delivery event (Event::peer)
  size_t next_background_ = 0;
  Stats stats_;
  // What the invariants remember between events, per group of the current
  // master (forgotten with the group: a reclaimed group starts afresh).
  struct Watch {
    uint64_t epoch = 0;
    bool has_revision = false;
    uint64_t revision = 0;
    double vote_since = -1;  // some member voted at vote_epoch, since then
    uint64_t vote_epoch = 0;
    double round_since = -1;  // round `round` planned, not finished, since then
    uint64_t round = 0;
    double optimize_since = -1;  // an optimisation planned at optimize_epoch, since then
    uint64_t optimize_epoch = 0;
    bool seen = false;           // checked before; then ring is its ring after that event
    std::vector<uint64_t> ring;
  };
  std::map<uint32_t, Watch> watch_;
  std::map<uint32_t, uint64_t> revision_claimed_;  // highest HELLO claim, this master
  std::map<uint32_t, double> disturbed_at_;        // last freeze that may delay a group
  double last_restart_ = 0;
  std::set<uint32_t> poisoned_;  // groups a client started near kMaxEpoch
};

}  // namespace pccl::sim
