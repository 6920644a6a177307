// Fetches shared-state leaves from the peers that hold them, into buffers the
// caller owns, and verifies every leaf against its elected hash.
//
// Leaves are cut into chunks; one worker per (holder, stream) pulls chunks it
// can serve from a shared pool, a couple of requests ahead, and receives each
// straight into its place in the destination. Fast holders therefore serve
// more; a holder that fails hands its chunks back to the pool for the others.
// A leaf whose bytes do not hash to the elected value is fetched again whole,
// from one holder at a time, until one delivers it intact.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "common/canceller.h"
#include "common/deadline.h"
#include "protocol/messages.h"
#include "transport/socket.h"

namespace pccl {

struct FetchTarget {
  uint32_t leaf = 0;  // index in the holders' published leaves
  uint8_t* dest = nullptr;
  uint64_t nbytes = 0;
  uint64_t expected_hash = 0;
  std::vector<RingMember> holders;
};

struct FetchSettings {
  // Opens an authenticated fetch link to a holder.
  std::function<Socket(const RingMember&, const Deadline&)> connect;
  double stall_timeout_s = 30.0;
  const Canceller* cancel = nullptr;
  uint64_t chunk_bytes = 4u << 20;
  int streams_per_holder = 2;
};

struct FetchReport {
  uint64_t rx_bytes = 0;          // payload received, refetches included
  uint32_t refetched_leaves = 0;  // leaves that arrived corrupted and were fetched again
  double fetch_s = 0;             // the parallel pass
  double verify_s = 0;            // hashing what arrived, and any refetches
};

// Throws PeerFailure when some leaf has no holder left that answers,
// ProtocolViolation when every holder delivered a leaf corrupted, Cancelled.
FetchReport fetch_shared_state(const std::vector<FetchTarget>& targets, const FetchSettings& settings);

}  // namespace pccl
