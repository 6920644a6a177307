#include "master/shared_state_election.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "master/state_structure.h"

namespace pccl {
namespace {

SyncStrategy strategy_of(const SyncCandidate& p) {
  return static_cast<SyncStrategy>(p.request.strategy);
}

void refuse(Election& e, uint64_t peer, const std::string& why) {
  e.refusals.push_back({peer, static_cast<uint8_t>(ErrorKind::kGeneric), why});
}

std::vector<const SyncCandidate*> voters_at(const std::vector<const SyncCandidate*>& peers,
                                            uint64_t revision) {
  std::vector<const SyncCandidate*> senders, popular;
  for (const SyncCandidate* p : peers) {
    if (p->request.revision != revision) continue;
    if (strategy_of(*p) == SyncStrategy::kSendOnly) senders.push_back(p);
    if (strategy_of(*p) == SyncStrategy::kEnforcePopular) popular.push_back(p);
  }
  return senders.empty() ? popular : senders;
}

uint64_t most_popular(const std::vector<const SyncCandidate*>& voters, size_t leaf) {
  std::map<uint64_t, size_t> votes;  // ordered: the first maximum is the smallest hash
  for (const SyncCandidate* v : voters) ++votes[v->request.leaves[leaf].hash];
  auto best = votes.begin();
  for (auto it = votes.begin(); it != votes.end(); ++it) {
    if (it->second > best->second) best = it;
  }
  return best->first;
}

// send_only peers never receive: one that lags or differs is turned away.
std::set<uint64_t> refuse_unwilling_senders(Election& e,
                                            const std::vector<const SyncCandidate*>& peers) {
  std::set<uint64_t> refused;
  for (const SyncCandidate* p : peers) {
    if (strategy_of(*p) != SyncStrategy::kSendOnly) continue;
    std::ostringstream why;
    if (p->request.revision != e.revision) {
      why << "send_only peer is at revision " << p->request.revision << " but the run is at "
          << e.revision << ": it would have to receive";
    } else {
      for (size_t i = 0; i < e.leaf_hash.size(); ++i) {
        if (p->request.leaves[i].hash == e.leaf_hash[i]) continue;
        why << "send_only peer holds content that lost the election (leaf " << i
            << " differs from the other send_only peers' majority)";
        break;
      }
    }
    if (why.str().empty()) continue;
    refuse(e, p->peer_id, why.str());
    refused.insert(p->peer_id);
  }
  return refused;
}

}  // namespace

Election elect_shared_state(const std::vector<SyncCandidate>& peers, bool has_run_revision,
                            uint64_t run_revision) {
  Election e;
  std::vector<const SyncCandidate*> remaining;
  for (const SyncCandidate& p : peers) {
    if (p.request.revision > kMaxRevision) {
      // Keeps run_revision + 1 from wrapping, whatever a client claims.
      refuse(e, p.peer_id,
             "revision " + std::to_string(p.request.revision) + " is above the bound " +
             std::to_string(kMaxRevision));
    } else if (has_run_revision && p.request.revision > run_revision + 1) {
      refuse(e, p.peer_id,
             "revision " + std::to_string(p.request.revision) + " has not been reached: the run "
             "is at revision " + std::to_string(run_revision) + ", so this sync may claim at "
             "most " + std::to_string(run_revision + 1));
    } else {
      remaining.push_back(&p);
    }
  }
  if (remaining.empty()) return e;
  StructureVote structure = vote_structure(remaining);
  if (!structure.tie.empty()) {
    e.failed = true;
    e.kind = ErrorKind::kMismatch;
    e.message = "shared state structure differs between peers: " + structure.tie;
    return e;
  }
  e.refusals.insert(e.refusals.end(), structure.refusals.begin(), structure.refusals.end());
  remaining = structure.kept;
  for (const SyncCandidate* p : remaining) e.revision = std::max(e.revision, p->request.revision);
  std::vector<const SyncCandidate*> voters = voters_at(remaining, e.revision);
  if (voters.empty()) {
    e.failed = true;
    e.message = "no peer offers the shared state at revision " + std::to_string(e.revision) +
                ": only receive_only peers hold it";
    return e;
  }
  size_t leaves = remaining.front()->request.leaves.size();
  for (size_t i = 0; i < leaves; ++i) e.leaf_hash.push_back(most_popular(voters, i));
  std::set<uint64_t> refused = refuse_unwilling_senders(e, remaining);
  e.leaf_holders.resize(leaves);
  for (const SyncCandidate* p : remaining) {
    if (refused.count(p->peer_id) != 0) continue;
    e.participants.push_back(p->peer_id);
    for (size_t i = 0; i < leaves; ++i) {
      if (p->request.leaves[i].hash == e.leaf_hash[i]) {
        e.leaf_holders[i].push_back(p->peer_id);
      } else {
        e.transfers_needed = true;
      }
    }
  }
  for (size_t i = 0; i < leaves; ++i) {
    if (!e.leaf_holders[i].empty()) continue;
    // Only when disagreeing send_only peers refused each other: nobody left
    // holds the winner, so there is nothing consistent to hand out.
    e.failed = true;
    e.message = "the send_only peers disagree: no peer is left holding the elected leaf " +
                std::to_string(i);
    e.participants.clear();
    return e;
  }
  return e;
}

}  // namespace pccl
