// The master's decision for one shared-state sync: which content every leaf
// must have afterwards, who holds it, and who is turned away. A pure function
// of the peers' requests and the run's revision, so it is tested alone.
//
// Rules (README "Shared state"):
// - A peer claiming a revision above kMaxRevision is refused.
// - After the run's first sync, a peer claiming a revision above run + 1 is
//   refused (the run has not reached it); the others go on without it.
// - The target revision is the highest any remaining peer holds, so a newer
//   revision is never overwritten by older content, not even on the first
//   sync and not even by a majority.
// - Voters: the send_only peers at the target revision if there are any (they
//   are the declared source), otherwise the enforce_popular peers at it.
//   receive_only peers never vote. No voter: the sync fails for everyone.
// - Per leaf the hash held by most voters wins; ties go to the smaller hash.
// - Holders of a leaf: every non-refused peer whose hash equals the winner,
//   whatever its revision or strategy. Everyone else receives that leaf,
//   except send_only peers, which are refused when they differ or lag.
// - Structure (leaf count, dtypes, shapes, pytree digest): the one most peers
//   hold is the run's; a peer holding another is refused (kMismatch) and the
//   others go on without it; a tie nobody wins fails the sync for everyone
//   (master/state_structure.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/errors.h"
#include "protocol/shared_state_messages.h"

namespace pccl {

struct SyncCandidate {
  uint64_t peer_id = 0;
  SyncRequestMsg request;
};

struct Election {
  bool failed = false;  // for everyone: `kind` and `message` say why
  ErrorKind kind = ErrorKind::kGeneric;
  std::string message;
  uint64_t revision = 0;
  std::vector<uint64_t> leaf_hash;                  // winner per leaf
  std::vector<std::vector<uint64_t>> leaf_holders;  // peer ids per leaf
  std::vector<SyncRefusal> refusals;
  std::vector<uint64_t> participants;  // not refused: they report when done
  bool transfers_needed = false;       // some participant lacks some elected leaf
};

// `run_revision` is meaningful only when `has_run_revision`.
Election elect_shared_state(const std::vector<SyncCandidate>& peers, bool has_run_revision,
                            uint64_t run_revision);

}  // namespace pccl
