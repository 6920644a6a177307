// What must hold after every simulated event (sim_master_world.h). A wait is
// bounded from the last fault that could explain it: a member of the group
// freezing (the master drops it within the heartbeat bound) or a restart.
#include <algorithm>
#include <string>

#include "tests/sim_master_world.h"

namespace pccl::sim {
namespace {

std::string n(uint64_t v) { return std::to_string(v); }

template <typename Map, typename Groups>
void forget_absent(Map& m, const Groups& groups) {
  for (auto it = m.begin(); it != m.end();) {
    it = groups.count(it->first) == 0 ? m.erase(it) : std::next(it);
  }
}

}  // namespace

double World::disturbed(uint32_t group) const {
  auto it = disturbed_at_.find(group);
  return std::max(it == disturbed_at_.end() ? 0.0 : it->second, last_restart_);
}

std::string World::check() {
  const auto& groups = core_->groups();
  forget_absent(watch_, groups);
  forget_absent(revision_claimed_, groups);
  for (const auto& [id, g] : groups) {
    std::string v = check_group(id, g);
    if (!v.empty()) return v;
  }
  return check_peers();
}

std::string World::check_group(uint32_t id, const MasterCore::Group& g) {
  Watch& w = watch_[id];
  std::string where = "group " + n(id) + ": ";
  // Epochs: monotone, and bounded whatever was claimed (no wrap).
  if (g.epoch < w.epoch) return where + "epoch went back from " + n(w.epoch) + " to " + n(g.epoch);
  if (g.epoch > kMaxEpoch + stats_.topologies + 1) return where + "epoch " + n(g.epoch) + " beyond bound";
  w.epoch = g.epoch;
  // The run's revision never goes backwards, nor is it forgotten.
  if (w.has_revision && (!g.has_revision || g.revision < w.revision)) {
    return where + "run revision went back from " + n(w.revision) +
           (g.has_revision ? " to " + n(g.revision) : " to none");
  }
  w.has_revision = g.has_revision;
  w.revision = g.revision;
  double since_fault = disturbed(id);
  // No vote waits forever.
  if (g.votes.empty()) {
    w.vote_since = -1;
  } else if (w.vote_since < 0 || w.vote_epoch != g.epoch) {
    w.vote_since = now_;
    w.vote_epoch = g.epoch;
  } else if (now_ - std::max(w.vote_since, since_fault) > kLivenessBound) {
    return where + "a vote at epoch " + n(g.epoch) + " is open since t=" +
           std::to_string(w.vote_since) + " (" + n(g.votes.size()) + " of " +
           n(g.ring.size()) + " members voted)";
  }
  // Every registered peer is admitted (or dropped) within the bound.
  for (uint64_t pid : g.pending) {
    auto it = by_id_.find(pid);
    if (it == by_id_.end()) continue;
    const Peer& q = peers_[it->second];
    if (q.life == Peer::Life::kFrozen) continue;
    if (now_ - std::max(q.registered_at, since_fault) > kLivenessBound) {
      return where + "peer " + n(pid) + " pending since t=" + std::to_string(q.registered_at) +
             ", never admitted (epoch " + n(g.epoch) + ", " + n(g.votes.size()) + " of " +
             n(g.ring.size()) + " members voted)";
    }
  }
  // Every planned sync round ends.
  if (!g.sync.planned) {
    w.round_since = -1;
  } else if (w.round_since < 0 || w.round != g.sync.id) {
    w.round_since = now_;
    w.round = g.sync.id;
  } else if (now_ - std::max(w.round_since, since_fault) > kLivenessBound) {
    return where + "sync round " + n(g.sync.id) + " open since t=" +
           std::to_string(w.round_since) + ", " + n(g.sync.waiting.size()) + " not reported";
  }
  return "";
}

std::string World::check_peers() {
  // The master's own books agree: a peer is accepted iff it is in its group's
  // ring, pending iff in the pending list, and it has a live connection.
  const auto& peers = core_->peers();
  size_t listed = 0;
  for (const auto& [gid, g] : core_->groups()) {
    listed += g.ring.size() + g.pending.size();
    for (uint64_t id : g.ring) {
      auto it = peers.find(id);
      if (it == peers.end() || it->second.group != gid ||
          it->second.state != MasterCore::PeerState::kAccepted) {
        return "group " + n(gid) + ": ring member " + n(id) + " is not an accepted peer";
      }
    }
    for (uint64_t id : g.pending) {
      auto it = peers.find(id);
      if (it == peers.end() || it->second.state != MasterCore::PeerState::kPending) {
        return "group " + n(gid) + ": pending " + n(id) + " is not a pending peer";
      }
    }
  }
  if (listed != peers.size()) return "the master knows peers that are in no ring and not pending";
  if (by_id_.size() != peers.size()) return "the master remembers a peer whose connection is gone";
  for (const Peer& q : peers_) {
    if (q.id == 0 || q.life != Peer::Life::kFrozen) continue;
    if (now_ - q.last_heard > kHeartbeatTimeout + kHeartbeatCheck + 0.01) {
      return "frozen peer " + n(q.id) + " still a member after the heartbeat bound";
    }
  }
  return "";
}

std::string World::check_plan(size_t p, const SyncPlanMsg& plan) {
  if (plan.failed) return "";
  // The guard: nobody may jump past what the run (as the master knows it, or
  // as any peer told it) has reached + 1.
  uint32_t group = peers_[p].group;
  const MasterCore::Group& g = core_->groups().at(group);
  bool known = g.has_revision;
  uint64_t run = g.has_revision ? g.revision : 0;
  auto claim = revision_claimed_.find(group);
  if (claim != revision_claimed_.end()) {
    known = true;
    run = std::max(run, claim->second);
  }
  if (known && plan.revision > run + 1) {
    return "group " + n(group) + ": revision guard lapsed: plan round " + n(plan.round) +
           " elects revision " + n(plan.revision) + " but the run is at " + n(run);
  }
  return "";
}

std::string World::check_learned(const HelloMsg& hello) {
  // A re-registering peer told the master the run's revision: a restarted
  // master must know it (or a later one) from now on.
  const MasterCore::Group& g = core_->groups().at(hello.group);
  if (g.has_revision && g.revision >= hello.resume_revision) return "";
  return "group " + n(hello.group) + ": a peer re-registered at revision " +
         n(hello.resume_revision) + " but the master's run revision is " +
         (g.has_revision ? n(g.revision) : "unknown");
}

}  // namespace pccl::sim
