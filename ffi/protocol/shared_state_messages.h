// Messages of a shared-state sync. Control messages go through the master
// (request -> plan -> done -> complete); leaf bytes move peer to peer over a
// link opened with LinkPurpose::kStateFetch (fetch -> data headers + bytes).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "protocol/messages.h"

namespace pccl {

enum class SyncStrategy : uint8_t { kEnforcePopular = 0, kReceiveOnly = 1, kSendOnly = 2 };
const char* sync_strategy_name(SyncStrategy s);

// The bounds every decoder enforces (the frame limit bounds them as well).
constexpr uint32_t kMaxSharedStateLeaves = 1u << 16;
constexpr uint32_t kMaxFetchRanges = 1024;

struct LeafInfo {
  uint64_t hash = 0;    // xxh64 of the leaf's bytes
  uint64_t nbytes = 0;
  uint8_t dtype = 0;
  std::vector<int64_t> dims;
  bool same_layout(const LeafInfo& o) const {
    return nbytes == o.nbytes && dtype == o.dtype && dims == o.dims;
  }
};

struct SyncRequestMsg {
  uint64_t request_id = 0;  // per peer, increasing: names the plan that answers it
  uint64_t revision = 0;
  uint8_t strategy = 0;  // SyncStrategy
  // The caller's digest of what the leaves alone do not say: the pytree's
  // structure (key names, container types) and its numpy dtypes (bool travels
  // as uint8). Opaque to the engine: peers must simply agree on it
  // (master/state_structure.h). Protocol v3.
  uint64_t structure = 0;
  std::vector<LeafInfo> leaves;
  std::vector<uint8_t> encode() const;
  static SyncRequestMsg decode(const std::vector<uint8_t>& b);
};

// A peer the election turned away, and why (it alone gets this error).
struct SyncRefusal {
  uint64_t peer_id = 0;
  uint8_t kind = 0;  // ErrorKind
  std::string message;
};

// The election's outcome, identical for every participant. Each peer fetches
// the leaves whose elected hash differs from its own, from that leaf's holders.
struct SyncPlanMsg {
  uint64_t request_id = 0;  // the recipient's request this plan answers
  uint64_t round = 0;
  uint64_t revision = 0;  // the run's revision after this sync
  uint8_t failed = 0;     // nonzero: the sync fails for everyone with `message`
  uint8_t settled = 0;    // nonzero: nobody has to fetch anything; the round is over
  uint8_t error_kind = 0;
  std::string message;
  std::vector<RingMember> holders;                // everyone who may serve
  std::vector<std::vector<uint16_t>> holder_sets;  // indices into `holders`
  std::vector<uint64_t> leaf_hash;                // elected hash per leaf
  std::vector<uint32_t> leaf_holder_set;          // index into holder_sets per leaf
  std::vector<SyncRefusal> refusals;
  std::vector<uint8_t> encode() const;
  static SyncPlanMsg decode(const std::vector<uint8_t>& b);
};

struct SyncDoneMsg {
  uint64_t round = 0;  // 0: withdraw my request (I gave up waiting for the plan)
  uint8_t ok = 1;
  std::string message;
  std::vector<uint8_t> encode() const;
  static SyncDoneMsg decode(const std::vector<uint8_t>& b);
};

struct SyncCompleteMsg {
  uint64_t round = 0;
  uint8_t ok = 1;
  std::string message;  // why not ok: a participant's failure
  std::vector<uint8_t> encode() const;
  static SyncCompleteMsg decode(const std::vector<uint8_t>& b);
};

struct StateRange {
  uint32_t leaf = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct StateFetchMsg {
  std::vector<StateRange> ranges;
  std::vector<uint8_t> encode() const;
  static StateFetchMsg decode(const std::vector<uint8_t>& b);
};

// Precedes `range.length` raw bytes when ok; a refusal carries no bytes.
struct StateDataMsg {
  StateRange range;
  uint8_t ok = 1;
  std::vector<uint8_t> encode() const;
  static StateDataMsg decode(const std::vector<uint8_t>& b);
};

}  // namespace pccl
