// One peer's membership in a run: its master link, its ring links, and the
// collectives it runs over them. Thread-safe: collectives run concurrently
// (up to kConcurrentSlots, see peer/collective_slots.h), topology changes and
// shared-state syncs alone; close() from any thread cancels whatever is in flight.
#pragma once
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/canceller.h"
#include "common/dtype.h"
#include "collectives/quantization.h"
#include "collectives/ring_allreduce.h"
#include "common/errors.h"
#include "peer/async_collectives.h"
#include "peer/collective_kinds.h"
#include "peer/collective_slots.h"
#include "peer/link_prober.h"
#include "peer/master_link.h"
#include "peer/ring_links.h"
#include "protocol/messages.h"
#include "protocol/shared_state_messages.h"
#include "peer/shared_state_sync.h"
#include "state/state_server.h"

namespace pccl {

// Enough windows for 1 Gbit/s at 80 ms RTT with 4 MiB socket buffers, and
// costless on loopback, where messages under a chunk use one connection.
constexpr int kDefaultRingConnections = 8;
// How long a ring neighbour may take to answer the link check after a
// failure (capped at half the communicator's timeout).
constexpr double kLinkCheckSeconds = 5.0;

struct CommunicatorConfig {
  std::string master_host = "127.0.0.1";
  uint16_t master_port = 0;
  uint32_t group = 0;
  double timeout_s = 30.0;     // bounds every network wait
  std::string advertise_host;  // how others reach us; empty: as the master sees us
  // Shared secret for the master and ring handshakes; empty: no authentication
  // (the master and every peer must then have none).
  std::string secret;
  // Bulk TCP connections per ring hop that this peer opens to its right
  // neighbour (1..kMaxRingConnections). One window cannot fill a long fat
  // pipe; several can, and they also ride out random loss better. Neighbours
  // may differ. The hop also gets one connection per small slot.
  int connections = kDefaultRingConnections;
  // Collectives in flight at once (1..kConcurrentSlots; see
  // peer/collective_slots.h). 1: one at a time, in start order. Every peer
  // of a group must use the same value (checked when ring links open).
  int concurrency = 1;
};

// Of two errors of a pytree's leaves, the one to report: a mismatch or a
// peer failure names its cause; "a previous collective of this epoch
// failed" or a cancellation is only a consequence. Either may be null.
std::exception_ptr more_telling(std::exception_ptr kept, std::exception_ptr next);

// The error for a topology operation refused because started all-reduces
// are not waited for yet.
PcclError unwaited_start_error(const char* what = "update_topology()");

struct CommunicatorStats {
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t collectives_done = 0;
  uint64_t collectives_failed = 0;
  uint64_t topology_updates = 0;
  uint64_t shared_state_syncs = 0;
  uint64_t shared_state_bytes_sent = 0;      // also counted in bytes_sent
  uint64_t shared_state_bytes_received = 0;  // also counted in bytes_received
  uint64_t shared_state_refetches = 0;       // leaves that arrived corrupted, fetched again
  uint64_t epoch = 0;  // ring epoch; (epoch, seq) names one collective run-wide
  uint64_t seq = 0;    // collectives started in this epoch
};

class Communicator {
 public:
  explicit Communicator(CommunicatorConfig config);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  // Registers and waits until admitted (admit_timeout_s < 0: no limit).
  // On failure the communicator is closed (create a new one to retry).
  void connect(double admit_timeout_s);
  // Collective over the accepted peers of our group: admits pending peers,
  // drops dead ones, rebuilds the ring. Returns at once when there is nothing
  // to do (same answer on every peer, see are_peers_pending()).
  void update_topology();
  bool are_peers_pending() const { return consistent_pending_.load(); }
  // Collective over the accepted peers of our group: the links without fresh
  // figures are probed (rounds planned by the master), the master chooses the
  // ring order, and every member moves to it (communicator_optimize.cc).
  // Pending peers stay pending. A group of fewer than 3 has one ring only:
  // returns at once. Throws PeerFailure after a failure in this epoch (call
  // update_topology() first) or when the new ring does not come in time.
  void optimize_topology();

  // The run's size: the master's latest word on it (topologies of our group,
  // heartbeats for changes in other groups, at most a heartbeat interval late).
  int world_size() const {
    int heard = master_.run_world_size();
    return heard >= 0 ? heard : total_world_.load();
  }
  int group_world_size() const { return group_size_.load(); }
  int rank() const { return rank_.load(); }
  uint64_t peer_id() const { return peer_id_; }
  bool connected() const { return connected_.load(); }

  // Runs one collective (peer/collective_kinds.h) over the caller's buffers
  // and returns the number of peers that took part.
  int run(const CollectiveCall& call);
  // An all-reduce; `quantization` applies to floating dtypes only (the wire
  // format; results stay in `dtype`).
  int all_reduce(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                 const LeafDescriptor& leaf, Quantization quantization = Quantization::kNone);

  // Starts every call (they run up to kConcurrentSlots at once), waits for
  // all of them and rethrows the most telling error: a mismatch or a peer
  // failure rather than the failures it caused. No copies: the buffers must
  // merely stay valid until it returns. The leaves of a pytree.
  int run_all(const std::vector<CollectiveCall>& calls);

  // start / wait: the collective runs on an engine thread of its slot; see
  // async_collectives.h. The input (call.in) is copied; call.out is unused:
  // the result goes where the wait says, output_bytes(call) of it.
  uint64_t start(const CollectiveCall& call);
  int wait(uint64_t ticket, void* out, size_t bytes);
  // wait() without blocking the caller (see AsyncCollectives::wait_then).
  void wait_then(uint64_t ticket, void* out, size_t bytes, AsyncCollectives::Then then);
  // Tests only: see AsyncCollectives::set_next_ticket_for_testing.
  void set_next_ticket_for_testing(uint64_t next) { async_.set_next_ticket_for_testing(next); }

  // Makes every peer's copy of the shared state identical (see
  // peer/shared_state_sync.h and master/shared_state_election.h). Returns
  // the leaves that changed, in new buffers; the caller's are only read.
  // `structure`: the caller's digest of its pytree (SyncRequestMsg::structure).
  SyncOutcome sync_shared_state(const std::vector<SharedStateLeaf>& leaves, uint64_t revision,
                                SyncStrategy strategy, uint64_t structure = 0);

  CommunicatorStats stats() const;
  void close();

 private:
  // A collective's place in the run, fixed when it is started (program
  // order): its (epoch, seq), checked by the header exchange, and its slot.
  struct Placement {
    uint64_t epoch = 0;
    uint64_t seq = 0;
    int slot = 0;
  };
  Placement place(int slot);  // the next seq, on `slot`; submit_mu_ held
  // run_all's calls: those on the first one's slot run on
  // the calling thread (a third fewer hand-overs between threads, which cost
  // small leaves more than their round trips on busy cores), the others on
  // their slots' threads.
  struct Batch {
    struct Here {
      size_t call;
      Placement at;
      AsyncCollectives::Claim claim;
    };
    std::vector<Here> here;
    std::vector<std::pair<size_t, uint64_t>> queued;  // (call, ticket)
  };
  // Places and queues every call, in order. On a throw, `batch` holds what was queued.
  void submit(const std::vector<CollectiveCall>& calls, Batch& batch);
  void register_and_wait(double admit_timeout_s);
  // Refuses a call whose arguments cannot describe a collective (before it
  // is placed: nothing of it reaches the ring).
  static void check_call(const CollectiveCall& call);
  // Throws Mismatch when the group is not the size the call was sized for.
  void check_group(const CollectiveCall& call, int n) const;
  // Runs `call` (over in/out) as placed; the engine threads and callers run these.
  int run_placed(const Placement& at, const CollectiveCall& call, const void* in, void* out);
  bool master_restarted() const { return master_.registrations() != registrations_seen_; }
  void rejoin();  // after a master restart: wait to be re-admitted
  void require_accepted() const;
  void apply_topology(const ReceivedTopology& received);
  // Applies `received`, then votes again while peers are still pending.
  void settle(ReceivedTopology received);
  ReceivedTopology await_vote(const char* what);
  void check_master() const;
  // Why the interrupt fired, as the error the caller should see.
  PcclError interruption() const;
  [[noreturn]] void rethrow_typed(const PcclError& e) const;
  CollectiveHeader make_header(CollectiveKind kind, const Placement& at) const;
  // All-gathers headers around the ring on the first lane of slot `slot`
  // and checks that everyone agrees. Updates consistent_pending_. Throws
  // Mismatch, or PeerFailure (ring broken). `attached` (bytes of it) rides
  // along with our header: the inline path of small all-reduces. The
  // others' attachments come back in `inputs`.
  std::vector<CollectiveHeader> agree(const CollectiveHeader& mine, int slot,
                                      const void* attached = nullptr, size_t bytes = 0,
                                      std::vector<std::vector<uint8_t>>* inputs = nullptr);
  std::vector<CollectiveHeader> exchange_headers(const CollectiveHeader& mine, int slot,
                                                 const void* attached, size_t bytes,
                                                 std::vector<std::vector<uint8_t>>* inputs);
  // The pending flags of the latest collective (by seq) decide, on every peer alike.
  void note_pending(uint64_t seq, bool pending);
  // Slot `slot`'s connections of each side of our hop.
  RingPeers slot_peers(int slot) const;
  // The inline path: inputs arrived with the headers; the kind finishes here.
  void finish_inline(const CollectiveCall& call, const void* in, void* out,
                     std::vector<std::vector<uint8_t>>& inputs, RingTraffic& traffic) const;
  void check_agreement(const std::vector<CollectiveHeader>& all, const CollectiveHeader& mine);
  // The links are in an unknown state after an error of `kind`: the next
  // collective fails (with that kind) until update_topology() rebuilds them.
  // Neighbours see it at once: a shutdown (what we sent still arrives), or,
  // where a collective failed on the ring (`ring_failed`), a reset, which
  // also reaches a neighbour stuck sending into a window we no longer read.
  void mark_broken(ErrorKind kind, bool ring_failed = false);
  // Something failed in this epoch (a collective, a member, the master):
  // what update_topology() is the recovery from. Lock-free (atomics only).
  bool epoch_failed() const;
  // update_topology()'s first step (op_mu_ held): after a failure, forgets
  // the epoch's started-but-unwaited collectives; refuses while any healthy
  // one (or one whose caller waits for it itself) is still outstanding.
  void settle_started_work();
  // After a ring failure: the ring neighbours that do not answer a round trip
  // within kLinkCheckSeconds (both at once). Empty for rings under 3 peers.
  std::vector<uint64_t> unreachable_neighbours();
  // optimize_topology()'s probes, round after round: our figures.
  LinkReportMsg run_probes(const LinkPlanMsg& plan);

  CommunicatorConfig config_;
  Canceller cancel_;     // fired once, by close()
  Canceller interrupt_;  // fired by close(), master loss, drop notices; re-armed per epoch
  // Drop notices already accounted for by our topology. Atomic: read without op_mu_.
  std::atomic<uint64_t> drops_baseline_{0};
  std::atomic<uint64_t> registrations_seen_{1};  // master registrations our ring belongs to
  MasterLink master_;
  StateServer server_;  // declared before the links: their acceptor feeds it
  LinkProbeServer probes_;  // likewise
  RingLinks links_;
  AsyncCollectives async_{kConcurrentSlots};  // after the links: destroyed (joined) first
  // Collectives hold it shared, topology changes, syncs and close() exclusive:
  // the ring, its links and the epoch change only while no collective runs.
  std::shared_mutex op_mu_;
  // Orders placement and queueing, so each slot's queue is in seq order.
  // Taken after op_mu_ where both are held.
  std::mutex submit_mu_;
  uint64_t peer_id_ = 0;
  uint64_t epoch_ = 0;  // written with op_mu_ and submit_mu_ held: either reads it
  uint64_t seq_ = 0;    // submit_mu_
  SlotPicker slots_;    // submit_mu_
  std::mutex pending_mu_;
  int64_t pending_seq_ = -1;  // pending_mu_: seq that last set consistent_pending_
  uint64_t sync_requests_ = 0;
  std::vector<RingMember> ring_;
  std::atomic<bool> ring_broken_{false};
  std::atomic<ErrorKind> broken_by_{ErrorKind::kPeerFailure};  // what set ring_broken_
  // A topology was just applied and no collective or update_topology() ran
  // since. Topologies are only ever applied inside topology operations, and
  // those keep voting until nothing is pending (settle()), so every member
  // leaves them in the same state: the next update_topology() is then a
  // no-op for all of them alike. That lines up every loop shape: newcomers
  // ({update; step}, {step; update}, PCCL's skip-first-update) and old
  // members that call update_topology() twice after a failure.
  std::atomic<bool> topology_fresh_{false};
  std::atomic<bool> connected_{false};
  std::atomic<bool> closed_{false};
  std::atomic<bool> consistent_pending_{false};
  std::atomic<int> total_world_{0};
  std::atomic<int> group_size_{0};
  std::atomic<int> rank_{-1};
  std::atomic<uint64_t> epoch_seen_{0};  // readable while an operation runs
  std::atomic<uint64_t> seq_seen_{0};
  mutable std::mutex stats_mu_;
  CommunicatorStats stats_;
};

}  // namespace pccl
