// What must hold after every simulated event (sim_master_world.h). A wait is
// bounded from the last fault that could explain it: a member of the group
// freezing (the master drops it within the heartbeat bound) or a restart.
#include <algorithm>
#include <set>
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
  // A ring the optimiser chose in this event holds members of the ring before
  // it (less any lost meanwhile) and nobody else: it reorders, never admits.
  if (w.seen && g.epoch != w.epoch && g.choice.epoch == g.epoch) {
    ++stats_.reorders;
    if (g.choice.background) ++stats_.background_rings;
    for (uint64_t m : g.ring) {
      if (std::find(w.ring.begin(), w.ring.end(), m) == w.ring.end()) {
        return where + "the ring chosen over measured links at epoch " + n(g.epoch) +
               " holds peer " + n(m) + ", not a member before";
      }
    }
    // ... and every member before that is still here (a reorder drops nobody).
    for (uint64_t m : w.ring) {
      if (core_->peers().count(m) == 0) continue;  // lost in this event
      if (std::find(g.ring.begin(), g.ring.end(), m) == g.ring.end()) {
        return where + "the ring chosen over measured links at epoch " + n(g.epoch) +
               " leaves out peer " + n(m) + ", a member before and still registered";
      }
    }
  }
  w.seen = true;
  w.ring = g.ring;
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
  return check_optimize(id, g, since_fault);
}

// optimize_topology(). At once, after every event: the round's books
// (who asked, who has not reported) name members of the ring only; once
// every member has asked at the group's epoch the plan is out, and once
// nobody is left to report (each reported or was lost) the round is over.
//
// In time: a planned optimisation of a non-empty ring ends, i.e. the group's
// epoch advances (to the ring chosen over the figures, or by a completed
// vote, which voids the round), within kLivenessBound of the plan or of the
// group's last freeze or master restart, whichever is later. Why that holds
// here: every member, hostile ones included, answers its plan within
// kMaxDelay + kMaxReaction + kMaxDelay; a killed one's EOF follows its last
// frame within kMaxDelay and the master stops waiting for it at once, so a
// death needs no allowance; a frozen one is dropped within the heartbeat
// bound (hence the allowance). Not claimed: that gathering ends. A member
// whose request was stale (its new ring was in flight) asks again only at
// the next call, and until then the others wait, as real ones would (and
// then fail the call and update_topology()).
std::string World::check_optimize(uint32_t id, const MasterCore::Group& g, double since_fault) {
  Watch& w = watch_[id];
  const MasterCore::OptimizeRound& o = g.optimize;
  auto where = [&] { return "group " + n(id) + ": "; };  // built on failure only
  auto member = [&](uint64_t m) {
    return std::find(g.ring.begin(), g.ring.end(), m) != g.ring.end();
  };
  for (const auto* books : {&o.requested, &o.waiting}) {
    for (uint64_t m : *books) {
      if (!member(m)) {
        return where() + "the optimisation at epoch " + n(g.epoch) + " counts non-member " +
               n(m);
      }
    }
  }
  bool all_asked = !g.ring.empty() && std::all_of(g.ring.begin(), g.ring.end(), [&](uint64_t m) {
    return o.requested.count(m) != 0;
  });
  if (all_asked && !o.planned) {
    return where() + "every member asked to optimise at epoch " + n(g.epoch) + ", nothing planned";
  }
  if (o.planned && o.waiting.empty() && !g.ring.empty()) {
    return where() + "nobody is left to report probes at epoch " + n(g.epoch) + ", no ring chosen";
  }
  if (!o.planned || g.ring.empty()) {
    w.optimize_since = -1;
  } else if (w.optimize_since < 0 || w.optimize_epoch != g.epoch) {
    w.optimize_since = now_;
    w.optimize_epoch = g.epoch;
  } else if (now_ - std::max(w.optimize_since, since_fault) > kLivenessBound) {
    return where() + "an optimisation planned at epoch " + n(g.epoch) + " since t=" +
           std::to_string(w.optimize_since) + " never ended (" + n(o.waiting.size()) + " of " +
           n(g.ring.size()) + " members have not reported)";
  }
  return "";
}

// After a report or a loss: the master keeps figures only for links between
// current members of the group (a report about a stranger, or about a link
// it did not plan, is not taken; a member lost takes its figures with it).
std::string World::check_links(uint32_t group) {
  auto it = core_->groups().find(group);
  if (it == core_->groups().end()) return "";
  const MasterCore::Group& g = it->second;
  auto member = [&](uint64_t m) {
    return std::find(g.ring.begin(), g.ring.end(), m) != g.ring.end();
  };
  for (const auto& [link, record] : g.links.records()) {
    if (!member(link.first) || !member(link.second) || link.first == link.second) {
      return "group " + n(group) + ": a figure for the link " + n(link.first) + " -> " +
             n(link.second) + ", not between two members";
    }
  }
  return "";
}

// The LINK_PLANs the master sent at once, checked against its state at that
// moment: each group's plans go to exactly the members of its ring, at its
// epoch, in at most N - 1 rounds of the same count for all; a round names
// only other members, and "a probes b in round r" reads the same from both
// ends (so nobody sends or receives two probes in a round); every directed
// link is planned at most once, and exactly those without a fresh figure.
std::string World::check_link_plans(const std::map<uint64_t, LinkPlanMsg>& plans) {
  std::map<uint32_t, std::vector<uint64_t>> by_group;
  for (const auto& [peer, plan] : plans) by_group[core_->peers().at(peer).group].push_back(peer);
  for (const auto& [gid, receivers] : by_group) {
    const MasterCore::Group& g = core_->groups().at(gid);
    std::string where = "group " + n(gid) + " epoch " + n(g.epoch) + ": link plan ";
    std::set<uint64_t> ring(g.ring.begin(), g.ring.end());
    if (std::set<uint64_t>(receivers.begin(), receivers.end()) != ring) {
      return where + "sent to " + n(receivers.size()) + " peers, not to the " + n(ring.size()) +
             " members";
    }
    size_t rounds = plans.at(receivers[0]).rounds.size();
    if (rounds > g.ring.size() - 1) return where + "of " + n(rounds) + " rounds";
    for (uint64_t m : receivers) {
      if (plans.at(m).epoch != g.epoch) return where + "for epoch " + n(plans.at(m).epoch);
      if (plans.at(m).rounds.size() != rounds) return where + "with rounds of different counts";
    }
    std::set<std::pair<uint64_t, uint64_t>> planned;
    for (uint64_t m : receivers) {
      const LinkPlanMsg& plan = plans.at(m);
      for (size_t r = 0; r < rounds; ++r) {
        const ProbeRound& pr = plan.rounds[r];
        for (uint64_t other : {pr.to, pr.from}) {
          if (other != 0 && (other == m || !ring.count(other))) {
            return where + "to " + n(m) + " names " + n(other) + " in round " + n(r);
          }
        }
        if (pr.to != 0 && plans.at(pr.to).rounds[r].from != m) {
          return where + "has " + n(m) + " probe " + n(pr.to) + " in round " + n(r) +
                 ", which expects another";
        }
        if (pr.from != 0 && plans.at(pr.from).rounds[r].to != m) {
          return where + "has " + n(m) + " expect " + n(pr.from) + " in round " + n(r) +
                 ", which probes another";
        }
        if (pr.to != 0 && !planned.insert({m, pr.to}).second) {
          return where + "probes " + n(m) + " -> " + n(pr.to) + " twice";
        }
      }
    }
    for (uint64_t a : g.ring) {
      for (uint64_t b : g.ring) {
        if (a == b) continue;
        bool fresh = g.links.fresh({a, b}, now_, kLinkMaxAge);
        if (fresh == (planned.count({a, b}) != 0)) {
          return where + (fresh ? "probes the fresh link " : "leaves out the link ") + n(a) +
                 " -> " + n(b);
        }
      }
    }
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
