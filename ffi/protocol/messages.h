// The versioned messages exchanged between peers and the master, and between
// ring neighbours. One struct per message; encode()/decode() are exact
// inverses and decode() rejects anything malformed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pccl {

enum class MsgType : uint16_t {
  kHello = 1,          // peer -> master: register
  kWelcome = 2,        // master -> peer: your id
  kTopology = 3,       // master -> peers: the ring of a group at a new epoch
  kVote = 4,           // peer -> master: ready to change topology at this epoch
  kPendingNotice = 5,  // master -> accepted peers: someone waits to be admitted
  kError = 6,          // either way: a reason, then the connection closes
  kPeerHello = 7,      // peer -> ring neighbour: which link this connection is
  kCollective = 8,     // ring neighbours: collective header (all-gathered)
  kHeartbeat = 9,      // either way over the master link: I am alive
  kPeerDropped = 10,   // master -> ring members: a member left or was dropped
  // The shared-secret handshake that opens every connection, before any other
  // frame (security/handshake.h; payloads have fixed sizes, checked on receipt).
  kAuthChallenge = 11,  // accepting side -> connecting side: M1
  kAuthResponse = 12,   // connecting side -> accepting side: M2
  kAuthResult = 13,     // accepting side -> connecting side: M3 (accepted or refused)
  // Shared-state sync (protocol/shared_state_messages.h).
  kSyncRequest = 14,   // peer -> master: my revision, strategy and leaf hashes
  kSyncPlan = 15,      // master -> participants: elected hashes and their holders
  kSyncDone = 16,      // peer -> master: my transfers ended (or I withdraw)
  kSyncComplete = 17,  // master -> participants: everyone ended; the outcome
  kStateFetch = 18,    // peer -> holder: send me these byte ranges
  kStateData = 19,     // holder -> peer: one range's header; its raw bytes follow
  kCollectiveInline = 20,  // ring neighbours: a collective header with its data attached
  // optimize_topology() (protocol/topology_messages.h).
  kOptimize = 21,     // peer -> master: reorder our ring (a collective)
  kLinkPlan = 22,     // master -> members: which links to probe, round by round
  kLinkReport = 23,   // peer -> master: what our probes measured
  kProbeStart = 24,   // probe connection, prober -> probed: round and pings
  kProbePing = 25,    // probe connection, either way: a round trip (echoed)
  kProbeResult = 26,  // probe connection, probed -> prober: bytes and their times
  // `jax-pccl status`: an authenticated client instead of a peer.
  kStatusRequest = 27,  // client -> master, in place of HELLO: nothing
  kStatusReply = 28,    // master -> client: the status (JSON), then the master closes
};

constexpr uint32_t kMaxRingMembers = 4096;
// The most a STATUS_REPLY may carry (the master leaves out the link figures
// to fit: a matrix of 1024 peers' links is about 100 MB).
constexpr uint32_t kMaxStatusReply = 8u << 20;
constexpr uint32_t kMaxDims = 8;
// Collectives that may be in flight at once (peer/collective_slots.h): slot
// 0 stripes large ones over a hop's K bulk connections, and each other slot
// owns one connection of its own for small ones. Both ends of a hop must agree.
constexpr uint16_t kConcurrentSlots = 4;
// Bulk connections (K) a peer may open per ring hop.
constexpr uint16_t kMaxRingConnections = 32;
// A ring hop is at most this many TCP connections: K bulk plus one per small slot.
constexpr uint16_t kMaxRingStreams = kMaxRingConnections + kConcurrentSlots - 1;

// Bounds on what a client may claim about the run (decoders refuse more).
// Far above what any run reaches, yet far enough below 2^64 that the
// master's epoch + 1 and revision + 1 never wrap, whatever a client claims.
constexpr uint64_t kMaxEpoch = 1ull << 63;
constexpr uint64_t kMaxRevision = 1ull << 62;
// Distinct groups one master serves at once.
constexpr uint32_t kMaxGroups = 1024;

struct HelloMsg {
  uint32_t group = 0;
  uint16_t listen_port = 0;
  std::string advertise_host;  // empty: the master uses the address it sees
  // Re-registration after the master restarted: our id and last epoch, so a
  // fresh master keeps ids stable and starts epochs above the old ones.
  uint64_t resume_peer_id = 0;  // 0: a new peer
  uint64_t resume_epoch = 0;    // <= kMaxEpoch
  // Optional trailer (absent from older peers' HELLO): the run's shared-state
  // revision as the previous master last announced it, so that a restarted
  // master keeps refusing revisions the run has not reached.
  bool has_resume_revision = false;
  uint64_t resume_revision = 0;  // <= kMaxRevision
  std::vector<uint8_t> encode() const;
  static HelloMsg decode(const std::vector<uint8_t>& b);
};

struct WelcomeMsg {
  uint64_t peer_id = 0;
  // The highest epoch this master knows its group reached (its own, or
  // claimed by re-registering peers). A peer that is only pending here
  // claims it after a later master restart, so that the next master never
  // reuses an epoch that some ring already ran under (protocol v4).
  uint64_t group_epoch = 0;
  std::vector<uint8_t> encode() const;
  static WelcomeMsg decode(const std::vector<uint8_t>& b);
};

struct RingMember {
  uint64_t peer_id = 0;
  std::string host;
  uint16_t port = 0;
};

struct TopologyMsg {
  uint32_t group = 0;
  uint64_t epoch = 0;
  uint8_t more_pending = 0;      // identical for every receiver: safe to branch on
  uint32_t total_world_size = 0;  // accepted peers over all groups
  std::vector<RingMember> ring;   // ring order of this group
  std::vector<uint8_t> encode() const;
  static TopologyMsg decode(const std::vector<uint8_t>& b);
};

// A vote may name ring neighbours this peer could not reach although the
// master still hears from them (a link broken between two live peers): the
// master marks the pair unusable once both ends name each other.
constexpr uint32_t kMaxUnreachableNeighbours = 2;

struct VoteMsg {
  uint64_t epoch = 0;
  std::vector<uint64_t> unreachable;  // at most kMaxUnreachableNeighbours peer ids
  std::vector<uint8_t> encode() const;
  static VoteMsg decode(const std::vector<uint8_t>& b);
};

// The master's heartbeat carries the run's size (accepted peers over all
// groups), so that a peer's world_size follows other groups' changes, which
// send it no topology. An empty payload (a peer's heartbeat) is allowed.
struct HeartbeatMsg {
  uint32_t total_world_size = 0;
  std::vector<uint8_t> encode() const;
  static HeartbeatMsg decode(const std::vector<uint8_t>& b);
};

// Peer -> master heartbeat: this peer's counters (CommunicatorStats), for
// the master's status report and metrics. Informational only: a peer can lie
// about nothing but itself. An empty heartbeat (no counters) is valid too.
struct PeerHeartbeatMsg {
  uint64_t collectives_done = 0;
  uint64_t collectives_failed = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t shared_state_syncs = 0;
  std::vector<uint8_t> encode() const;
  static PeerHeartbeatMsg decode(const std::vector<uint8_t>& b);
};

struct ErrorMsg {
  std::string message;
  std::vector<uint8_t> encode() const;
  static ErrorMsg decode(const std::vector<uint8_t>& b);
};

struct PeerDroppedMsg {
  uint64_t peer_id = 0;
  std::string reason;
  std::vector<uint8_t> encode() const;
  static PeerDroppedMsg decode(const std::vector<uint8_t>& b);
};

// What a peer-to-peer connection is for: one of the two ring links of an
// epoch, fetching shared state from a holder, or probing the link's speed.
enum class LinkPurpose : uint8_t { kRing = 0, kStateFetch = 1, kLinkProbe = 2 };

struct PeerHelloMsg {
  uint64_t peer_id = 0;
  uint64_t epoch = 0;
  uint32_t group = 0;
  uint8_t purpose = 0;  // LinkPurpose
  // A ring hop is `streams` connections; this is number `stream` of them.
  // Checked on decode: 1 <= streams <= kMaxRingStreams, stream < streams.
  uint16_t stream = 0;
  uint16_t streams = 1;
  // Collective slots the sender runs (its `concurrency`, see
  // peer/collective_slots.h): 1..kConcurrentSlots, at most `streams`. Both
  // ends of a hop must agree, so the receiver checks it.
  uint8_t slots = 1;
  std::vector<uint8_t> encode() const;
  static PeerHelloMsg decode(const std::vector<uint8_t>& b);
};

// What one peer is about to reduce. Every peer all-gathers these before any
// data moves, so a mismatch is reported identically everywhere, and the
// pending flags are OR-ed into an answer all peers share.
// The kinds of data collective are described in peer/collective_kinds.h.
enum class CollectiveKind : uint8_t {
  kAllReduce = 0, kTopologyCheck = 1, kAllGather = 2, kBroadcast = 3, kReduceScatter = 4,
};

struct CollectiveHeader {
  uint8_t kind = 0;  // CollectiveKind
  uint64_t seq = 0;
  uint64_t epoch = 0;
  uint64_t peer_id = 0;
  uint64_t count = 0;
  uint8_t dtype = 0;
  uint8_t op = 0;
  uint8_t quantization = 0;
  uint8_t pending = 0;
  uint32_t leaf_index = 0;
  uint32_t leaf_count = 1;
  uint32_t root = 0;   // broadcast: the rank whose input everyone gets
  uint32_t world = 0;  // the group size the caller's output is sized for (0: any)
  std::vector<int64_t> dims;
  std::vector<uint8_t> encode() const;
  static CollectiveHeader decode(const std::vector<uint8_t>& b);
};

// The largest input that travels inside the header exchange itself (see
// collectives/inline_allreduce.h). Far below any socket buffer, so a peer's
// blocking write of it never waits for its neighbour to read.
constexpr uint32_t kMaxInlineCollectiveData = 64 << 10;

// A collective header with the sender's whole input attached (small
// messages): u32 header length, the header, then the raw data.
struct InlineCollective {
  CollectiveHeader header;
  std::vector<uint8_t> data;
  static std::vector<uint8_t> encode(const CollectiveHeader& header, const void* data,
                                     size_t bytes);
  static InlineCollective decode(const std::vector<uint8_t>& b);
};

}  // namespace pccl
