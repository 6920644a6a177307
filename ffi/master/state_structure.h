// Which pytree structure a shared-state sync runs with, and who is turned
// away for holding another one. A pure function, called by the election
// (master/shared_state_election.h) and tested alone.
//
// A peer's structure is its request's digest (SyncRequestMsg::structure: key
// names, container types, numpy dtypes) plus every leaf's layout (count, wire
// dtype, dims, bytes). Like PCCL, which drops the peer whose state mask
// differs, one misconfigured peer must not stop the run:
// - The structure held by most peers is the run's; the peers holding another
//   one are refused (kMismatch) with what differs, and keep their state.
// - Ties go to the structure of the peer at the highest revision: the run's
//   content, not a fresh joiner's.
// - Still tied (e.g. two peers at one revision, one structure each): nobody
//   can tell which side is odd, so the sync fails for everyone, naming the
//   difference.
#pragma once
#include <string>
#include <vector>

#include "protocol/shared_state_messages.h"

namespace pccl {

struct SyncCandidate;

struct StructureVote {
  std::vector<const SyncCandidate*> kept;  // hold the run's structure
  std::vector<SyncRefusal> refusals;       // hold another one: what differs
  std::string tie;  // nonempty: no structure won (why); kept and refusals are empty
};

StructureVote vote_structure(const std::vector<const SyncCandidate*>& peers);

// What differs between two structures, in words, naming them `a_name` and
// `b_name`; "" when they are the same.
std::string structure_difference(const SyncRequestMsg& a, const std::string& a_name,
                                 const SyncRequestMsg& b, const std::string& b_name);

}  // namespace pccl
