// A peer's connection to the master. A reader thread owns the receive side:
// topology updates go to a mailbox the user thread waits on; pending notices
// set a flag; it also sends heartbeats and watches the master's. Losing the
// master, or hearing that a ring member was dropped, fires the communicator's
// interrupt so that a collective in flight fails fast.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "common/canceller.h"
#include "common/deadline.h"
#include "common/errors.h"
#include "protocol/messages.h"
#include "protocol/shared_state_messages.h"
#include "protocol/topology_messages.h"
#include "security/handshake.h"
#include "transport/frame.h"
#include "transport/socket.h"

namespace pccl {

struct ReceivedTopology {
  TopologyMsg topology;
  uint64_t drops_seen = 0;  // drop notices received before this topology
};

class MasterLink {
 public:
  MasterLink() = default;
  ~MasterLink() { close(); }
  MasterLink(const MasterLink&) = delete;
  MasterLink& operator=(const MasterLink&) = delete;

  // What each heartbeat to the master carries (called on the link's reader
  // thread, once a second). Set before open(); unset: empty heartbeats.
  void set_counters(std::function<PeerHeartbeatMsg()> counters) { counters_ = std::move(counters); }

  // Connects to the master and runs the authentication handshake (context
  // "master"; an empty secret: none, and the master must have none either).
  // `closing` aborts waits for good (close()); `interrupt` is fired on master
  // loss and on drop notices. Throws MasterUnreachable when the master cannot
  // be reached, PcclError("authentication with master H:P failed: ...") when
  // the handshake refuses (kProtocol when the remote does not speak it).
  void open(const std::string& host, uint16_t port, double silence_timeout_s,
            const Deadline& deadline, const Canceller* closing, Canceller* interrupt,
            const std::string& secret);
  // Sends HELLO, returns our peer id, starts the reader thread.
  uint64_t register_peer(const HelloMsg& hello, const Deadline& deadline);
  // After losing the master (but not after being evicted) the reader thread
  // reconnects to the same address and re-registers with our id and epoch;
  // registrations() counts successful registrations, peer_id() is the latest.
  uint64_t registrations() const { return registrations_.load(std::memory_order_acquire); }
  uint64_t peer_id() const { return peer_id_.load(std::memory_order_acquire); }
  // The run's size (accepted peers, all groups) as of the master's last
  // topology or heartbeat, in arrival order (-1: neither yet).
  int run_world_size() const { return run_world_.load(std::memory_order_acquire); }
  // The highest epoch this peer heard of (its topologies, and what the
  // master said its group reached when it registered): claimed when
  // re-registering, so that a restarted master never reuses an epoch.
  void note_epoch(uint64_t epoch) {
    uint64_t seen = epoch_.load(std::memory_order_acquire);
    while (epoch > seen && !epoch_.compare_exchange_weak(seen, epoch, std::memory_order_acq_rel)) {
    }
  }
  // `unreachable`: ring neighbours that did not answer (VoteMsg).
  void send_vote(uint64_t epoch, const std::vector<uint64_t>& unreachable,
                 const Deadline& deadline);
  // A frame of a topology operation (OPTIMIZE, LINK_REPORT); `doing` names it
  // in the error when the master is lost.
  void send_control(MsgType type, const std::vector<uint8_t>& payload, const char* doing,
                    const Deadline& deadline);
  // optimize_topology(): waits for the master's link plan for `epoch`, or for
  // a topology newer than it (the ring changed first; left queued for
  // wait_topology()). Throws as wait_sync_plan() (restarts included).
  enum class PlanWait { kPlan, kTopology, kTimeout };
  PlanWait wait_link_plan(uint64_t epoch, uint64_t registration, const Deadline& deadline,
                          LinkPlanMsg* out);
  // Waits for a topology with epoch > after_epoch; returns the newest queued.
  // Returns false on deadline. Throws MasterUnreachable / Cancelled.
  bool wait_topology(uint64_t after_epoch, const Deadline& deadline, ReceivedTopology* out);

  // Shared-state sync: requests and reports go out as frames; plans and
  // outcomes arrive in a mailbox. Both waits return false on deadline and
  // throw as wait_topology() does when the master is lost or we close.
  // `registration` is registrations() when the sync began: once the link
  // re-registered with a restarted master, which knows nothing of the
  // round, each of them throws PeerFailure at once (a wait: as soon as the
  // re-registration lands) instead of talking to, or waiting on, a master
  // that will never answer.
  void send_sync(MsgType type, const std::vector<uint8_t>& payload, uint64_t registration,
                 const Deadline& deadline);
  bool wait_sync_plan(uint64_t request_id, uint64_t registration, const Deadline& deadline,
                      SyncPlanMsg* out);
  bool wait_sync_complete(uint64_t round, uint64_t registration, const Deadline& deadline,
                          SyncCompleteMsg* out);

  bool pending_seen() const { return pending_seen_.load(std::memory_order_acquire); }
  uint64_t drops_seen() const { return drops_seen_.load(std::memory_order_acquire); }
  std::string last_drop() const;
  bool failed() const;
  std::string failure() const;
  // The error for "no master": MasterUnreachable, or, if the master dropped
  // us (frozen past the heartbeat bound), a PcclError saying we were removed.
  PcclError lost_error() const;
  std::string local_ip() const { return local_ip_; }
  void close();

 private:
  void reader_loop();
  void serve();  // reads until the master is lost or we stop
  bool reconnect();  // true once re-registered with a (restarted) master
  // The handshake on a fresh connection to the master, errors as for open().
  void authenticate(Socket& s, const Deadline& deadline, const Canceller* cancel);
  // Returns our id; notes the group's epoch the master sent with it.
  uint64_t hello_exchange(Socket& s, const HelloMsg& hello, const Deadline& deadline);
  void handle(const Frame& f);
  void note_revision(uint64_t revision);
  void send_frame(MsgType type, const std::vector<uint8_t>& payload, const Deadline& deadline);
  void fail(const std::string& reason);
  void drain_last_words();
  // Waits until `found` (called with mu_ held) returns true. A nonzero
  // `registration` also ends the wait (PeerFailure) once it is outdated.
  // `operation` names what the wait is part of in that error.
  static constexpr const char* kSyncOperation = "shared-state sync";
  template <typename Found>
  bool wait_mailbox(const Deadline& deadline, Found found, uint64_t registration = 0,
                    const char* operation = kSyncOperation);
  // Throws PeerFailure if outdated.
  void check_registration(uint64_t registration, const char* operation = kSyncOperation) const;

  Socket sock_;
  std::string local_ip_;
  std::string where_;
  std::function<PeerHeartbeatMsg()> counters_;
  std::string host_;
  uint16_t port_ = 0;
  HelloMsg hello_;
  Secret secret_;
  std::atomic<uint64_t> registrations_{0};
  std::atomic<uint64_t> peer_id_{0};
  std::atomic<int> run_world_{-1};
  std::atomic<uint64_t> epoch_{0};
  // The run's shared-state revision as the master last announced it (a
  // settled plan, or a plan whose round completed ok), sent when
  // re-registering so that a restarted master keeps the revision guard.
  // Reader thread only (handle() and reconnect() both run there).
  bool has_run_revision_ = false;
  uint64_t run_revision_ = 0;
  uint64_t last_plan_round_ = 0;  // of the last plan that did not fail
  uint64_t last_plan_revision_ = 0;
  bool evicted_ = false;  // guarded by mu_
  double silence_timeout_s_ = 30.0;
  Canceller stop_;
  const Canceller* closing_ = nullptr;
  Canceller* interrupt_ = nullptr;
  std::thread reader_;
  std::mutex write_mu_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ReceivedTopology> topologies_;
  std::deque<SyncPlanMsg> sync_plans_;          // newest few; stale ones are skipped
  std::deque<SyncCompleteMsg> sync_outcomes_;
  std::deque<LinkPlanMsg> link_plans_;
  std::string failure_;  // non-empty once the master is gone
  std::string last_drop_;
  std::atomic<bool> pending_seen_{false};
  std::atomic<uint64_t> drops_seen_{0};
};

}  // namespace pccl
