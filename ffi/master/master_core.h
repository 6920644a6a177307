// The master's decisions, without sockets or threads: membership (HELLO,
// votes, drops, epochs) and shared-state sync rounds. A message from a
// registered peer goes in, frames addressed to peer ids come out (outbox).
// Master (master.h) is the I/O glue around it; the deterministic simulator
// (ffi/tests/sim_master.cc) drives it directly, from a seed.
//
// Peer lifecycle: HELLO -> registered (WELCOME with an id) -> accepted at
// once if its group is empty, else pending until every accepted peer of the
// group votes; the completed vote admits all pending peers, drops dead ones
// and broadcasts the new ring at epoch+1. The glue reports a lost peer
// (closed, silent past the heartbeat bound, or dropped for a protocol
// violation) with on_peer_lost().
//
// Every input is hostile: bytes are decoded here with their bounds, and a
// violation throws ProtocolViolation, leaving the state as it was; the glue
// then drops that client with the reason.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "master/link_table.h"
#include "master/plan_job.h"
#include "topology/ring_solver.h"
#include "master/shared_state_election.h"
#include "protocol/messages.h"
#include "protocol/shared_state_messages.h"

namespace pccl {

// Test only: re-introduces a defect that has been fixed, so that the
// simulator can show it finds it. Never set outside tests.
enum class InjectedDefect {
  kNone,
  kTrustResumeEpoch,     // A4: a claimed epoch becomes the current one at once
  kForgetRunRevision,    // A7: a restarted master ignores the revision peers report
  kStaleBackgroundRing,  // B1: a background ring is taken without checking its members
};

struct MasterCoreConfig {
  uint32_t max_groups = kMaxGroups;  // groups served at once (group ids are the client's)
  uint64_t id_seed = 0;              // peer ids; 0: from std::random_device
  InjectedDefect defect = InjectedDefect::kNone;
  // Once a peer re-registers (a restarted master), the group's next epoch is
  // at least this. The glue passes its start time in microseconds: a later
  // incarnation starts above every epoch an earlier one can have handed out
  // (at most one per microsecond it ran), even to rings whose members are
  // not back yet, when the first peer back is a straggler whose claim is
  // older (without it, both ran alone under one epoch). 0: claims only.
  uint64_t resume_epoch_base = 0;
  // optimize_topology(): link figures older than this are probed again; each
  // probe sends for probe_ms over probe_streams connections; the ring
  // planner may take solve_budget_s (it runs in the master's loop).
  double link_max_age_s = 600.0;
  uint32_t probe_ms = 1000;
  uint16_t probe_streams = 4;
  double solve_budget_s = 0.2;
  // A ring the loop's planner could not solve exactly gets this much more in
  // the background (BackgroundPlanner); 0: never.
  double background_solve_s = 5.0;
  // Kicks the planner's search may take beyond the exact solver's sizes
  // (SolverOptions::max_kicks; 0: only the budget stops it). The simulator
  // bounds the kicks instead of the time, so that a seed replays exactly.
  long solve_max_kicks = 0;
  // Rings of up to this many peers the loop's planner solves exactly
  // (SolverOptions::exact_up_to); the simulator lowers it so that the
  // background planner's path is taken by small groups too.
  int solve_exact_up_to = 12;
  // Seconds on a monotonic clock (link ages); empty: the steady clock. The
  // simulator passes its own.
  std::function<double()> clock;
};

// A frame for the glue to send to one registered peer.
struct Outgoing {
  uint64_t peer = 0;
  MsgType type = MsgType::kHeartbeat;
  std::vector<uint8_t> payload;
};

class MasterCore {
 public:
  enum class PeerState { kPending, kAccepted };
  struct PeerRecord {
    uint64_t id = 0;
    uint32_t group = 0;
    std::string host;
    uint16_t port = 0;
    PeerState state = PeerState::kPending;
    // Its last heartbeat's counters (PeerHeartbeatMsg) and when they came;
    // bytes_per_s: sent + received per second between its last two.
    PeerHeartbeatMsg counters;
    double counters_at_s = -1;  // -1: none yet
    double bytes_per_s = 0;
  };
  // One shared-state sync of a group: gathered until every member asked,
  // then planned (shared_state_election.h), then open until every
  // participant reported done or died. Requests arriving meanwhile queue for
  // the next round.
  struct SyncRound {
    uint64_t id = 0;
    bool planned = false;
    bool settled_by_plan = false;  // nothing to transfer: no SYNC_DONE / SYNC_COMPLETE
    std::map<uint64_t, SyncRequestMsg> requests;
    std::map<uint64_t, SyncRequestMsg> queued;
    std::set<uint64_t> participants;  // planned: told the plan, not refused
    std::set<uint64_t> waiting;       // participants that have not reported
    std::string failure;              // the first failure a participant reported
    uint64_t revision = 0;
  };
  // One optimize_topology() of a group: gathered until every member asked
  // at the group's epoch, then planned (LINK_PLAN to each), then open until
  // every member reported its probes or died; then the new ring goes out.
  struct OptimizeRound {
    bool planned = false;
    std::set<uint64_t> requested;
    std::set<uint64_t> waiting;                         // planned: not reported yet
    std::set<std::pair<uint64_t, uint64_t>> expected;   // planned links (from, to)
    int probes = 0;                                     // links planned in all
  };
  // The last ring the planner chose for a group (Master.status()).
  struct RingChoice {
    uint64_t epoch = 0;
    double bottleneck_s = 0;  // its slowest link's link_seconds (inf: none usable)
    bool exact = false;
    int probed_links = 0;  // by the optimisation that chose it
    bool background = false;  // the background planner's ring, not the loop's
  };
  struct Group {
    uint64_t epoch = 0;
    // The next epoch is at least this: re-registering peers' claims. A claim
    // never moves the current epoch, which is what the members vote on, so
    // no claim can make their votes stale (and freeze the group).
    uint64_t epoch_floor = 0;
    std::vector<uint64_t> ring;     // accepted, in ring order
    std::vector<uint64_t> pending;  // registered, waiting to be admitted
    std::set<uint64_t> votes;
    SyncRound sync;
    bool has_revision = false;  // the shared state's revision, once known
    uint64_t revision = 0;
    OptimizeRound optimize;
    LinkTable links;
    // Votes of this epoch naming a ring neighbour unreachable: the pair
    // (lower id, higher id) and who named it. Both ends: the link is broken.
    std::map<std::pair<uint64_t, uint64_t>, std::set<uint64_t>> unreachable;
    RingChoice choice;
    // The background planner's last ring (taken by the next optimisation if
    // it is of the same members and better on the figures of that moment).
    std::optional<PlanResult> improved;
  };

  explicit MasterCore(MasterCoreConfig config = {});

  // A HELLO on a connection that has none registered yet; `remote_host` is
  // the address the connection comes from. Returns the new peer's id.
  uint64_t on_hello(const std::vector<uint8_t>& payload, const std::string& remote_host);
  // Any later frame of a registered peer (votes, sync, heartbeats).
  void on_frame(uint64_t peer, uint16_t type, const std::vector<uint8_t>& payload);
  // The peer is gone (its connection closed or was dropped): forget it.
  void on_peer_lost(uint64_t peer, const std::string& reason);

  std::vector<Outgoing> take_outbox();
  // What happened lately (joins, epochs, drops with their reasons, syncs,
  // ring choices), oldest first, at most kMaxEvents: for `jax-pccl status`
  // and the master's status report. t_s is on now_s()'s clock.
  struct Event {
    double t_s;
    std::string text;
  };
  static constexpr size_t kMaxEvents = 100;
  const std::deque<Event>& events() const { return events_; }
  // Peers to drop with a reason (the glue tells them and closes their
  // connection, then reports them lost): left out of their group's new ring
  // because no ring without them avoids the broken links.
  std::vector<std::pair<uint64_t, std::string>> take_evictions();
  // Rings to improve in the background (the glue runs them on a
  // BackgroundPlanner), and what it found.
  std::vector<PlanJob> take_plan_jobs();
  void on_background_plan(PlanResult result);
  const std::map<uint64_t, PeerRecord>& peers() const { return peers_; }
  const std::map<uint32_t, Group>& groups() const { return groups_; }
  uint32_t total_world_size() const;
  double now_s() const;  // the clock of link ages

 private:
  Group& group_for(const HelloMsg& hello);  // throws when the master cannot take it
  void learn_from_resume(Group& g, const HelloMsg& hello);
  uint64_t new_peer_id();
  void handle_vote(PeerRecord& p, const std::vector<uint8_t>& payload);
  void try_complete_vote(uint32_t group_id);
  // Pairs named unreachable by both ends become broken links; a ring that
  // would use one is re-planned around it (master_core_topology.cc).
  std::vector<uint64_t> route_around_broken_links(uint32_t group_id, std::vector<uint64_t> ring);
  void advance_epoch(uint32_t group_id, std::vector<uint64_t> new_ring);
  void send(uint64_t peer, MsgType type, std::vector<uint8_t> payload);
  // Shared-state sync (master_core_sync.cc).
  void handle_sync_request(PeerRecord& p, const std::vector<uint8_t>& payload);
  void handle_sync_done(PeerRecord& p, const std::vector<uint8_t>& payload);
  void try_plan_sync(uint32_t group_id);   // plans once every member has asked
  void send_sync_plan(Group& g, const Election& e);
  void try_finish_sync(uint32_t group_id);  // completes once nobody is left to report
  void forget_sync_peer(uint32_t group_id, uint64_t peer_id);
  // optimize_topology() (master_core_topology.cc).
  void handle_optimize(PeerRecord& p, const std::vector<uint8_t>& payload);
  void handle_link_report(PeerRecord& p, const std::vector<uint8_t>& payload);
  void try_plan_optimize(uint32_t group_id);    // plans once every member asked
  void try_finish_optimize(uint32_t group_id);  // reorders once nobody is left to report
  static constexpr size_t kRingIdsInNote = 16;   // a longer ring's note gives no order
  static std::string ring_chosen_note(uint32_t group_id, const RingChoice& choice,
                                      const std::vector<uint64_t>& ring);
  void forget_optimize_peer(uint32_t group_id, uint64_t peer_id);
  // The loop's plan, or the background's if that one is still valid and better.
  RingPlan choose_plan(uint32_t group_id, bool* background);
  void queue_background_plan(uint32_t group_id, const std::vector<uint64_t>& ring);
  SolverOptions planner_options(const Group& g) const;  // the ring planner's budget and seed
  void note(std::string text);  // an event (bounded: the oldest goes)
  void note_counters(PeerRecord& p, const PeerHeartbeatMsg& counters);

  MasterCoreConfig config_;
  std::map<uint64_t, PeerRecord> peers_;
  std::map<uint32_t, Group> groups_;
  uint64_t next_sync_round_ = 1;
  std::mt19937_64 id_rng_;
  std::vector<Outgoing> outbox_;
  std::vector<std::pair<uint64_t, std::string>> evictions_;
  std::vector<PlanJob> plan_jobs_;
  std::deque<Event> events_;
};

}  // namespace pccl
