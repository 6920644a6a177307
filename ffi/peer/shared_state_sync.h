// One peer's side of a shared-state sync (Communicator::sync_shared_state):
//   hash every leaf -> publish the leaves for others to fetch -> send the
//   request to the master -> wait for the plan -> fetch and verify the leaves
//   whose hash lost the election -> report done -> wait until every
//   participant is done (others may still be fetching from us) -> unpublish.
// When every participant already holds every elected leaf, the plan says so
// and the sync ends there: hashing plus one master round trip.
// The waits are bounded: the plan by 2 x timeout (then the request is
// withdrawn), transfers by the stall timeout per chunk, the final barrier by
// the master, which settles it once every participant reported or died.
// Every wait on the master also ends with the master: silent for timeout or
// its connection lost (MasterUnreachable), or restarted, which loses the
// round (PeerFailure: update_topology() rejoins), and with close().
#pragma once
#include <cstdint>
#include <vector>

#include "common/canceller.h"
#include "common/dtype.h"
#include "common/host_buffer.h"
#include "peer/master_link.h"
#include "peer/ring_links.h"
#include "protocol/shared_state_messages.h"
#include "state/state_server.h"

namespace pccl {

struct SharedStateLeaf {
  const void* data = nullptr;
  uint64_t nbytes = 0;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> dims;
};

struct ReceivedLeaf {
  uint32_t index = 0;
  HostBuffer bytes;
};

struct SyncOutcome {
  uint64_t revision = 0;
  uint64_t tx_bytes = 0;  // leaf bytes this peer served to others
  uint64_t rx_bytes = 0;  // leaf bytes this peer received (refetches included)
  uint32_t refetched_leaves = 0;
  // Peers the master turned away from this sync (e.g. another pytree
  // structure, a revision the run has not reached); the others went on.
  uint32_t refused_peers = 0;
  std::vector<ReceivedLeaf> received;  // the leaves that changed, in new buffers
  // Where the time went, in seconds: hashing our leaves, waiting for the
  // plan (the slowest peer's arrival plus a master round trip), fetching,
  // verifying what arrived, and the final barrier (others still fetching).
  double hash_s = 0, plan_s = 0, fetch_s = 0, verify_s = 0, finish_s = 0;
};

struct SyncContext {
  MasterLink* master = nullptr;
  RingLinks* links = nullptr;
  StateServer* server = nullptr;
  uint64_t peer_id = 0;
  double timeout_s = 30.0;
  const Canceller* cancel = nullptr;
  uint64_t request_id = 0;  // unique per peer and sync
  // The master registration the sync runs under (MasterLink::registrations()):
  // a restarted master knows nothing of our round, so every send and wait
  // fails once the link re-registered.
  uint64_t registration = 1;
};

// `structure`: the caller's digest of its pytree (SyncRequestMsg::structure).
SyncOutcome run_shared_state_sync(const SyncContext& ctx, const std::vector<SharedStateLeaf>& leaves,
                                  uint64_t revision, SyncStrategy strategy, uint64_t structure);

}  // namespace pccl
