// The master: one authoritative, single-threaded state machine that admits
// peers into groups and hands out ring topologies. It never carries tensors.
//
// Every connection first runs the shared-secret handshake
// (security/handshake_io.h) as a per-connection state machine of the poll
// loop: AUTH_CHALLENGE is queued on accept, AUTH_RESPONSE is verified once its
// bytes have arrived, AUTH_RESULT answers it; a refused connection is dropped
// with a logged reason. Only then is HELLO accepted. Unauthenticated
// connections count against max_connections and handshake_timeout_s, and may
// send no frame larger than the handshake response.
//
// Peer lifecycle: connect -> handshake -> HELLO -> registered (WELCOME with an id) ->
//   accepted at once if its group is empty, else pending until every accepted
//   peer of the group votes (update_topology); the completed vote admits all
//   pending peers, drops dead ones and broadcasts the new ring at epoch+1.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/canceller.h"
#include "common/deadline.h"
#include "master/shared_state_election.h"
#include "protocol/messages.h"
#include "protocol/shared_state_messages.h"
#include "security/handshake.h"
#include "transport/socket.h"

namespace pccl {

struct MasterConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 0;                  // 0: pick a free port
  double handshake_timeout_s = 10.0;  // unregistered connections are dropped after this
  size_t max_connections = 1024;
  uint32_t max_groups = kMaxGroups;  // groups served at once (group ids are the client's)
  size_t max_send_queue_bytes = 16u << 20;
  double heartbeat_interval_s = 1.0;  // we ping every registered peer this often
  double heartbeat_timeout_s = 4.0;   // silent this long: dropped (detection <= 5 s)
  // Shared secret; empty: no authentication (every peer must then have none).
  // The Master moves it into a pccl::Secret and wipes this copy.
  std::string secret;
};

class Master {
 public:
  explicit Master(MasterConfig config);  // binds now, so port() is valid at once
  ~Master();
  Master(const Master&) = delete;
  Master& operator=(const Master&) = delete;

  void start();
  void stop();  // idempotent; joins the loop thread
  uint16_t port() const { return port_; }
  const std::string& host() const { return config_.host; }
  std::string status_json() const;

 private:
  struct Connection {
    Socket sock;
    std::vector<uint8_t> in;
    std::vector<uint8_t> out;
    Deadline handshake_deadline = Deadline::never();
    std::unique_ptr<ServerHandshake> auth;  // the handshake in progress (M1 sent)
    bool authenticated = false;             // M3 "accepted" sent: HELLO may follow
    uint64_t peer_id = 0;  // 0: not registered yet
    bool closing = false;  // marked by drop(); forgotten and closed by reap()
    bool reaped = false;
    std::string close_reason;
    std::string remote;  // ip
    std::string where;   // ip:port, for log lines
    Deadline::Clock::time_point last_heard;
  };
  enum class PeerState { kPending, kAccepted };
  struct PeerRecord {
    uint64_t id = 0;
    uint32_t group = 0;
    std::string host;
    uint16_t port = 0;
    PeerState state = PeerState::kPending;
    int fd = -1;
  };
  // One shared-state sync of a group: gathered until every member asked,
  // then planned (shared_state_election.h), then open until every
  // participant reported done or died. Requests arriving meanwhile queue for
  // the next round.
  struct SyncRound {
    uint64_t id = 0;
    bool planned = false;
    bool settled_by_plan = false;  // nothing to transfer: no SYNC_DONE / SYNC_COMPLETE
    std::map<uint64_t, SyncRequestMsg> requests;
    std::map<uint64_t, SyncRequestMsg> queued;
    std::set<uint64_t> participants;  // planned: told the plan, not refused
    std::set<uint64_t> waiting;       // participants that have not reported
    std::string failure;              // the first failure a participant reported
    uint64_t revision = 0;
  };
  struct Group {
    uint64_t epoch = 0;
    // The next epoch is at least this: re-registering peers' claims. A claim
    // never moves the current epoch, which is what the members vote on, so
    // no claim can make their votes stale (and freeze the group).
    uint64_t epoch_floor = 0;
    std::vector<uint64_t> ring;     // accepted, in ring order
    std::vector<uint64_t> pending;  // registered, waiting to be admitted
    std::set<uint64_t> votes;
    SyncRound sync;
    bool has_revision = false;  // the shared state's revision, once a sync succeeded
    uint64_t revision = 0;
  };

  void loop();
  void accept_new();
  void read_from(Connection& c);
  void flush(Connection& c);
  void handle_frame(Connection& c, uint16_t type, const std::vector<uint8_t>& payload);
  void handle_auth(Connection& c, uint16_t type, const std::vector<uint8_t>& payload);
  // Sends an AUTH_RESULT refusal (best effort), then drops the connection.
  void refuse(Connection& c, const std::string& reason_for_remote, const std::string& log_reason);
  void handle_hello(Connection& c, const std::vector<uint8_t>& payload);
  Group& group_for(const HelloMsg& hello);  // throws when the master cannot take it
  void learn_from_resume(Group& g, const HelloMsg& hello);
  void handle_vote(Connection& c, const std::vector<uint8_t>& payload);
  void handle_sync_request(Connection& c, const std::vector<uint8_t>& payload);
  void handle_sync_done(Connection& c, const std::vector<uint8_t>& payload);
  void try_plan_sync(uint32_t group_id);   // plans once every member has asked
  void send_sync_plan(Group& g, const Election& e);
  void try_finish_sync(uint32_t group_id);  // completes once nobody is left to report
  void forget_sync_peer(uint32_t group_id, uint64_t peer_id);
  // Marks a connection dead. Never forgets the peer right away: that sends
  // frames to others, whose failure would re-enter here mid-iteration.
  void drop(Connection& c, const std::string& reason);
  void reap();  // forgets dropped peers and closes their connections
  int fd_of(uint64_t peer_id) const;
  void forget_peer(uint64_t peer_id, const std::string& reason);
  void keep_alive();  // heartbeats out, silent peers dropped
  void try_complete_vote(uint32_t group_id);
  void advance_epoch(uint32_t group_id, std::vector<uint64_t> new_ring);
  void send_frame(int fd, MsgType type, const std::vector<uint8_t>& payload);
  uint32_t total_world_size() const;

  MasterConfig config_;  // config_.secret is empty: the secret lives in secret_
  Secret secret_;
  Socket listener_;
  uint16_t port_ = 0;
  Canceller wake_;
  std::thread thread_;
  mutable std::mutex mu_;  // guards everything below (held while handling, not while polling)
  bool started_ = false;
  bool stopped_ = false;
  std::map<int, Connection> conns_;
  std::map<uint64_t, PeerRecord> peers_;
  std::map<uint32_t, Group> groups_;
  uint64_t new_peer_id();
  uint64_t next_sync_round_ = 1;
  std::mt19937_64 id_rng_{std::random_device{}()};
  Deadline::Clock::time_point started_at_;
  uint64_t dropped_connections_ = 0;
  uint64_t auth_refusals_ = 0;
  Deadline::Clock::time_point last_heartbeat_sent_;
};

}  // namespace pccl
