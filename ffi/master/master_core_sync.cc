// The master's side of shared-state sync: gather every member's request,
// elect (shared_state_election.h), tell everyone the plan, wait until every
// participant reported or died, tell everyone the outcome. The master never
// sees leaf bytes, only hashes.
#include <algorithm>
#include <map>

#include "common/errors.h"
#include "common/log.h"
#include "master/master_core.h"
#include "protocol/wire.h"
#include "transport/frame.h"

namespace pccl {
namespace {

// Wire strings are bounded; reasons from peers and elections may be longer.
std::string clip(const std::string& s) {
  return s.size() <= kMaxWireString ? s : s.substr(0, kMaxWireString - 3) + "...";
}

}  // namespace

void MasterCore::handle_sync_request(PeerRecord& p, const std::vector<uint8_t>& payload) {
  SyncRequestMsg req = SyncRequestMsg::decode(payload);
  if (p.state != PeerState::kAccepted) {
    throw ProtocolViolation("shared-state sync from a peer not yet accepted");
  }
  SyncRound& round = groups_[p.group].sync;
  (round.planned ? round.queued : round.requests)[p.id] = std::move(req);
  try_plan_sync(p.group);
}

void MasterCore::handle_sync_done(PeerRecord& p, const std::vector<uint8_t>& payload) {
  SyncDoneMsg done = SyncDoneMsg::decode(payload);
  Group& g = groups_[p.group];
  SyncRound& round = g.sync;
  if (done.round == 0) {
    // Withdrawn: the peer gave up waiting for the plan. If the plan crossed
    // the withdrawal, the others cannot count on this peer any more.
    round.requests.erase(p.id);
    round.queued.erase(p.id);
    if (round.planned && round.waiting.erase(p.id) != 0 && round.failure.empty()) {
      round.failure = "peer " + std::to_string(p.id) + " gave up waiting for the sync plan";
    }
    try_finish_sync(p.group);
    return;
  }
  if (!round.planned || done.round != round.id || round.waiting.erase(p.id) == 0) {
    // E.g. a report meant for a master that has since restarted: harmless,
    // and dropping the peer for it would turn a restart into an eviction.
    PCCL_LOG(kInfo, "master: ignoring SYNC_DONE for round " << done.round << " from peer " << p.id);
    return;
  }
  if (!done.ok && round.failure.empty()) {
    round.failure = "peer " + std::to_string(p.id) + ": " + done.message;
  }
  try_finish_sync(p.group);
}

void MasterCore::try_plan_sync(uint32_t group_id) {
  Group& g = groups_[group_id];
  SyncRound& round = g.sync;
  if (round.planned || round.requests.empty()) return;
  for (uint64_t member : g.ring) {
    if (round.requests.count(member) == 0) return;  // not everyone asked yet
  }
  std::vector<SyncCandidate> candidates;
  for (auto& [id, req] : round.requests) candidates.push_back({id, req});
  Election e = elect_shared_state(candidates, g.has_revision, g.revision);
  round.id = next_sync_round_++;
  round.planned = true;
  round.revision = e.revision;
  round.participants.clear();
  if (!e.failed) round.participants.insert(e.participants.begin(), e.participants.end());
  // Nothing to move: the plan itself ends the round (one round trip in all).
  round.settled_by_plan = !e.transfers_needed;
  round.waiting = e.transfers_needed ? round.participants : std::set<uint64_t>{};
  round.failure.clear();
  PCCL_LOG(kInfo, "master: group " << group_id << " shared-state sync round " << round.id
                                   << (e.failed ? " failed: " + e.message
                                                : " at revision " + std::to_string(e.revision))
                                   << " (" << round.participants.size() << " participants, "
                                   << e.refusals.size() << " refused)");
  send_sync_plan(g, e);
  try_finish_sync(group_id);
}

void MasterCore::send_sync_plan(Group& g, const Election& e) {
  SyncPlanMsg plan;
  plan.round = g.sync.id;
  plan.revision = e.revision;
  plan.failed = e.failed ? 1 : 0;
  plan.settled = !e.failed && !e.transfers_needed ? 1 : 0;
  plan.error_kind = static_cast<uint8_t>(e.kind);
  plan.message = clip(e.message);
  std::map<uint64_t, uint16_t> holder_index;
  std::map<std::vector<uint16_t>, uint32_t> set_index;
  for (const auto& holders : e.leaf_holders) {
    std::vector<uint16_t> set;
    for (uint64_t id : holders) {
      auto [it, fresh] = holder_index.emplace(id, static_cast<uint16_t>(plan.holders.size()));
      if (fresh) {
        const PeerRecord& p = peers_.at(id);
        plan.holders.push_back({id, p.host, p.port});
      }
      set.push_back(it->second);
    }
    auto [it, fresh] = set_index.emplace(set, static_cast<uint32_t>(plan.holder_sets.size()));
    if (fresh) plan.holder_sets.push_back(set);
    plan.leaf_holder_set.push_back(it->second);
  }
  plan.leaf_hash = e.leaf_hash;
  for (SyncRefusal f : e.refusals) {
    f.message = clip(f.message);
    plan.refusals.push_back(f);
  }
  for (auto& [id, req] : g.sync.requests) {
    plan.request_id = req.request_id;
    std::vector<uint8_t> bytes = plan.encode();
    if (bytes.size() > kMaxControlPayload) {
      // Cannot happen within the request bounds unless holder sets explode;
      // fail the round rather than send a frame the peer must reject.
      SyncPlanMsg small;
      small.request_id = req.request_id;
      small.round = plan.round;
      small.failed = 1;
      small.message = "shared-state plan too large for one frame (too many distinct holder sets)";
      bytes = small.encode();
      g.sync.waiting.erase(id);
    }
    send(id, MsgType::kSyncPlan, std::move(bytes));
  }
  g.sync.requests.clear();
}

void MasterCore::try_finish_sync(uint32_t group_id) {
  Group& g = groups_[group_id];
  SyncRound& round = g.sync;
  if (!round.planned || !round.waiting.empty()) return;
  bool ok = round.failure.empty();
  SyncCompleteMsg done{round.id, static_cast<uint8_t>(ok ? 1 : 0), clip(round.failure)};
  std::vector<uint8_t> bytes = done.encode();
  if (!round.settled_by_plan) {
    for (uint64_t id : round.participants) send(id, MsgType::kSyncComplete, bytes);
  }
  if (ok && !round.participants.empty()) {
    // The run's revision never goes backwards, even when only peers that
    // lag behind it are left to sync (they elect their own, older one).
    g.revision = g.has_revision ? std::max(g.revision, round.revision) : round.revision;
    g.has_revision = true;
  }
  PCCL_LOG(kInfo, "master: group " << group_id << " shared-state sync round " << round.id
                                   << (ok ? " complete" : " failed: " + round.failure));
  note("group " + std::to_string(group_id) + " shared-state sync " +
       (ok ? "complete at revision " + std::to_string(g.revision) : "failed: " + round.failure));
  round.planned = false;
  round.participants.clear();
  round.requests = std::move(round.queued);
  round.queued.clear();
  try_plan_sync(group_id);
}

void MasterCore::forget_sync_peer(uint32_t group_id, uint64_t peer_id) {
  SyncRound& round = groups_[group_id].sync;
  round.requests.erase(peer_id);
  round.queued.erase(peer_id);
  round.participants.erase(peer_id);
  // A dead participant is no failure of the others: what it held, other
  // holders serve; what it needed, nobody needs any more.
  round.waiting.erase(peer_id);
  if (round.planned) {
    try_finish_sync(group_id);
  } else {
    try_plan_sync(group_id);
  }
}

}  // namespace pccl
