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
// Membership and shared-state sync are decided by MasterCore (master_core.h),
// a pure state machine; this class is its I/O glue: sockets, the handshake,
// heartbeats, framing, and the status report.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/canceller.h"
#include "common/deadline.h"
#include "master/background_planner.h"
#include "master/master_core.h"
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
  // optimize_topology(): probe length and connections, and when a link's
  // figures are old enough to be probed again (MasterCoreConfig).
  uint32_t probe_ms = 1000;
  uint16_t probe_streams = 4;
  double link_max_age_s = 600.0;
  // Seconds the background planner gives a ring too large to solve exactly
  // in the loop (MasterCoreConfig::background_solve_s); 0: never.
  double background_solve_s = 5.0;
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
  // A group's ring order, link figures and last optimisation (status_json).
  void write_topology_json(std::ostringstream& os, const MasterCore::Group& g,
                           bool with_links) const;
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
    bool status_client = false;  // sent STATUS_REQUEST: closed once the reply is out
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
  // STATUS_REQUEST instead of HELLO: one STATUS_REPLY, then the connection
  // ends (master_status.cc builds the reply).
  void handle_status_request(Connection& c, const std::vector<uint8_t>& payload);
  std::string status_json_locked(bool with_links) const;  // mu_ held
  std::string status_reply() const;                       // mu_ held
  double heard_s_ago(uint64_t peer_id) const;             // mu_ held; -1: no connection
  // Sends what the core addressed to peers; a peer whose connection cannot
  // take it is dropped (and forgotten by reap(), which may send more).
  void flush_outbox();
  // Marks a connection dead. Never forgets the peer right away: that sends
  // frames to others, whose failure would re-enter here mid-iteration.
  void drop(Connection& c, const std::string& reason);
  void reap();  // forgets dropped peers and closes their connections
  void keep_alive();  // heartbeats out, silent peers dropped
  void exchange_plans();  // the core's background jobs out, the planner's results in
  void send_frame(int fd, MsgType type, const std::vector<uint8_t>& payload);

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
  std::map<uint64_t, int> peer_fds_;  // registered peers' connections
  MasterCore core_;                   // every membership and sync decision
  BackgroundPlanner planner_;         // its thread is stopped after the loop's
  Deadline::Clock::time_point started_at_;
  uint64_t dropped_connections_ = 0;
  uint64_t auth_refusals_ = 0;
  Deadline::Clock::time_point last_heartbeat_sent_;
};

}  // namespace pccl
