// Membership: registration, votes, drops and epochs (master_core.h).
#include "master/master_core.h"

#include <algorithm>

#include "common/errors.h"
#include "common/log.h"

namespace pccl {

MasterCore::MasterCore(MasterCoreConfig config)
    : config_(config),
      id_rng_(config.id_seed != 0 ? config.id_seed : std::random_device{}()) {}

std::vector<Outgoing> MasterCore::take_outbox() {
  std::vector<Outgoing> out;
  out.swap(outbox_);
  return out;
}

std::vector<std::pair<uint64_t, std::string>> MasterCore::take_evictions() {
  std::vector<std::pair<uint64_t, std::string>> out;
  out.swap(evictions_);
  return out;
}

void MasterCore::send(uint64_t peer, MsgType type, std::vector<uint8_t> payload) {
  outbox_.push_back({peer, type, std::move(payload)});
}

uint64_t MasterCore::on_hello(const std::vector<uint8_t>& payload, const std::string& remote_host) {
  HelloMsg hello = HelloMsg::decode(payload);
  if (hello.listen_port == 0) throw ProtocolViolation("HELLO without a listen port");
  Group& g = group_for(hello);
  PeerRecord p;
  bool resumed = hello.resume_peer_id != 0 && peers_.count(hello.resume_peer_id) == 0;
  p.id = resumed ? hello.resume_peer_id : new_peer_id();
  p.group = hello.group;
  p.host = hello.advertise_host.empty() ? remote_host : hello.advertise_host;
  p.port = hello.listen_port;
  peers_[p.id] = p;
  if (resumed) learn_from_resume(g, hello);
  // What the group reached, as far as this master knows: a peer that stays
  // pending here and re-registers with the next master claims it, so that
  // master does not hand out an epoch some ring already ran under (two
  // restarts in a row: the first peer back at each runs alone, and without
  // this both got the same epoch).
  WelcomeMsg welcome{p.id, std::max(g.epoch, g.epoch_floor > 0 ? g.epoch_floor - 1 : 0)};
  send(p.id, MsgType::kWelcome, welcome.encode());
  PCCL_LOG(kInfo, "master: peer " << p.id << (resumed ? " re-registered" : " registered")
                                  << " from " << p.host << ":" << p.port << " in group "
                                  << hello.group);
  note("peer " + std::to_string(p.id) + (resumed ? " re-registered" : " registered") + " from " +
       p.host + ":" + std::to_string(p.port) + " in group " + std::to_string(hello.group));
  if (g.ring.empty()) {
    // The first peer of a group has nobody to vote it in: accept at once.
    std::vector<uint64_t> ring = g.pending;
    ring.push_back(p.id);
    g.pending.clear();
    advance_epoch(hello.group, ring);
    return p.id;
  }
  g.pending.push_back(p.id);
  for (uint64_t member : g.ring) send(member, MsgType::kPendingNotice, {});
  return p.id;
}

MasterCore::Group& MasterCore::group_for(const HelloMsg& hello) {
  auto it = groups_.find(hello.group);
  if (it == groups_.end()) {
    // Group ids are the client's to choose: bound how many exist at once,
    // reclaiming an abandoned one first (nobody in it, no sync in flight).
    if (groups_.size() >= config_.max_groups) {
      auto empty = std::find_if(groups_.begin(), groups_.end(), [](const auto& kv) {
        const Group& g = kv.second;
        return g.ring.empty() && g.pending.empty() && !g.sync.planned;
      });
      if (empty == groups_.end()) {
        throw ProtocolViolation("the master already serves " +
                                std::to_string(config_.max_groups) + " groups");
      }
      groups_.erase(empty);
    }
    it = groups_.emplace(hello.group, Group{}).first;
  }
  Group& g = it->second;
  if (g.ring.size() + g.pending.size() >= kMaxRingMembers) {
    throw ProtocolViolation("group " + std::to_string(hello.group) + " is full (" +
                            std::to_string(kMaxRingMembers) + " peers)");
  }
  return g;
}

void MasterCore::learn_from_resume(Group& g, const HelloMsg& hello) {
  // Links are keyed by epoch: after a restart, epochs must keep increasing.
  // The claim is bounded (HelloMsg::decode), so epochs never wrap, and it
  // only raises the next epoch. Known limit, without a secret: a client may
  // push a group's epochs near kMaxEpoch; its members then run on, but after
  // a later master restart their (honest) claims exceed the bound and are
  // refused with that reason. Cap-based alternatives stall honest peers
  // instead (the simulator found both).
  if (config_.defect == InjectedDefect::kTrustResumeEpoch) {
    g.epoch = std::max(g.epoch, hello.resume_epoch);
  } else {
    g.epoch_floor = std::max({g.epoch_floor, hello.resume_epoch + 1,
                              std::min(config_.resume_epoch_base, kMaxEpoch)});
  }
  // The revision guard must survive a restart: learn the run's revision back.
  // Only the highest claim counts, so a lagging (or lying) peer can loosen
  // the guard up to what some peer claims but never get honest peers refused.
  if (config_.defect == InjectedDefect::kForgetRunRevision) return;
  if (hello.has_resume_revision && (!g.has_revision || hello.resume_revision > g.revision)) {
    g.has_revision = true;
    g.revision = hello.resume_revision;
  }
}

uint64_t MasterCore::new_peer_id() {
  // Random, so a restarted master cannot hand out an id that a peer of the
  // previous master still holds and will resume with. 53 bits: exact in JSON.
  for (;;) {
    uint64_t id = id_rng_() & ((1ull << 53) - 1);
    if (id != 0 && peers_.count(id) == 0) return id;
  }
}

void MasterCore::on_frame(uint64_t peer, uint16_t type, const std::vector<uint8_t>& payload) {
  auto it = peers_.find(peer);
  if (it == peers_.end()) return;  // already forgotten: its last frames mean nothing
  switch (static_cast<MsgType>(type)) {
    case MsgType::kVote: handle_vote(it->second, payload); return;
    case MsgType::kSyncRequest: handle_sync_request(it->second, payload); return;
    case MsgType::kSyncDone: handle_sync_done(it->second, payload); return;
    case MsgType::kOptimize: handle_optimize(it->second, payload); return;
    case MsgType::kLinkReport: handle_link_report(it->second, payload); return;
    case MsgType::kHeartbeat:  // the glue keeps the time of the last frame
      if (!payload.empty()) note_counters(it->second, PeerHeartbeatMsg::decode(payload));
      return;
    default:
      throw ProtocolViolation("unexpected message type " + std::to_string(type) + " from peer " +
                              std::to_string(peer));
  }
}

void MasterCore::handle_vote(PeerRecord& p, const std::vector<uint8_t>& payload) {
  VoteMsg vote = VoteMsg::decode(payload);
  if (p.state != PeerState::kAccepted) throw ProtocolViolation("vote from a peer not yet accepted");
  Group& g = groups_[p.group];
  if (vote.epoch != g.epoch) {
    // A vote for an epoch that is already over: the newer topology is already
    // on its way to this peer (or it was dropped and its wait times out).
    PCCL_LOG(kInfo, "master: stale vote from peer " << p.id << " (epoch " << vote.epoch
                                                    << ", current " << g.epoch << ")");
    return;
  }
  g.votes.insert(p.id);
  for (uint64_t other : vote.unreachable) {
    if (other == p.id) throw ProtocolViolation("vote names the voter itself unreachable");
    // Members only: what a vote can add stays bounded by the ring's pairs.
    if (std::find(g.ring.begin(), g.ring.end(), other) == g.ring.end()) continue;
    g.unreachable[{std::min(p.id, other), std::max(p.id, other)}].insert(p.id);
  }
  try_complete_vote(p.group);
}

void MasterCore::try_complete_vote(uint32_t group_id) {
  Group& g = groups_[group_id];
  if (g.votes.empty()) return;
  for (uint64_t member : g.ring) {
    if (g.votes.count(member) == 0) return;
  }
  std::vector<uint64_t> ring = g.ring;
  ring.insert(ring.end(), g.pending.begin(), g.pending.end());
  g.pending.clear();
  advance_epoch(group_id, route_around_broken_links(group_id, std::move(ring)));
}

void MasterCore::advance_epoch(uint32_t group_id, std::vector<uint64_t> new_ring) {
  Group& g = groups_[group_id];
  g.ring = std::move(new_ring);
  g.votes.clear();
  g.optimize = OptimizeRound{};  // an optimisation of the old ring is void
  g.unreachable.clear();
  g.epoch = std::max(g.epoch + 1, g.epoch_floor);
  TopologyMsg topo;
  topo.group = group_id;
  topo.epoch = g.epoch;
  topo.more_pending = g.pending.empty() ? 0 : 1;
  for (uint64_t id : g.ring) {
    PeerRecord& p = peers_[id];
    p.state = PeerState::kAccepted;
    topo.ring.push_back({p.id, p.host, p.port});
  }
  topo.total_world_size = total_world_size();
  std::vector<uint8_t> bytes = topo.encode();
  PCCL_LOG(kInfo, "master: group " << group_id << " epoch " << g.epoch << " ring size "
                                   << g.ring.size());
  note("group " + std::to_string(group_id) + " epoch " + std::to_string(g.epoch) + ": ring of " +
       std::to_string(g.ring.size()));
  for (uint64_t id : g.ring) send(id, MsgType::kTopology, bytes);
}

void MasterCore::note_counters(PeerRecord& p, const PeerHeartbeatMsg& c) {
  double now = now_s();
  uint64_t before = p.counters.bytes_sent + p.counters.bytes_received;
  uint64_t after = c.bytes_sent + c.bytes_received;
  if (p.counters_at_s >= 0 && now > p.counters_at_s && after >= before) {
    p.bytes_per_s = static_cast<double>(after - before) / (now - p.counters_at_s);
  }
  p.counters = c;
  p.counters_at_s = now;
}

void MasterCore::note(std::string text) {
  if (events_.size() >= kMaxEvents) events_.pop_front();
  events_.push_back({now_s(), std::move(text)});
}

uint32_t MasterCore::total_world_size() const {
  uint32_t n = 0;
  for (const auto& [id, g] : groups_) n += static_cast<uint32_t>(g.ring.size());
  return n;
}

void MasterCore::on_peer_lost(uint64_t peer_id, const std::string& reason) {
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;
  uint32_t group_id = it->second.group;
  peers_.erase(it);
  note("peer " + std::to_string(peer_id) + " left group " + std::to_string(group_id) + ": " + reason);
  Group& g = groups_[group_id];
  auto erase_id = [peer_id](std::vector<uint64_t>& v) {
    v.erase(std::remove(v.begin(), v.end(), peer_id), v.end());
  };
  bool was_member = std::find(g.ring.begin(), g.ring.end(), peer_id) != g.ring.end();
  erase_id(g.ring);
  erase_id(g.pending);
  g.votes.erase(peer_id);
  g.links.forget_peer(peer_id);
  const SyncRound& round = g.sync;
  bool in_sync = round.requests.count(peer_id) || round.queued.count(peer_id) ||
                 round.participants.count(peer_id) || round.waiting.count(peer_id);
  if (!was_member) {
    // A member left out of the ring (route_around_broken_links) may still
    // be in the group's sync round: nobody may wait for it.
    if (in_sync) forget_sync_peer(group_id, peer_id);
    return;
  }
  forget_sync_peer(group_id, peer_id);
  // Members may be mid-collective with the lost peer: tell them now, so they
  // fail fast instead of waiting for a stalled link to time out.
  std::vector<uint8_t> notice = PeerDroppedMsg{peer_id, reason}.encode();
  for (uint64_t member : g.ring) send(member, MsgType::kPeerDropped, notice);
  if (g.ring.empty() && !g.pending.empty()) {
    // Nobody is left to vote the waiting peers in: admit them directly.
    std::vector<uint64_t> ring = g.pending;
    g.pending.clear();
    advance_epoch(group_id, ring);
    return;
  }
  try_complete_vote(group_id);  // the dead peer no longer blocks a vote
  forget_optimize_peer(group_id, peer_id);  // nor an optimisation (if the vote left one)
}

}  // namespace pccl
