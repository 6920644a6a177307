#include "master/master.h"

#include <cmath>

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <chrono>
#include <sstream>

#include "common/errors.h"
#include "common/log.h"
#include "security/handshake_io.h"
#include "transport/frame.h"

namespace pccl {
namespace {

constexpr size_t kReadChunk = 64 * 1024;
constexpr int kMasterBacklog = 4096;  // pending connections (see Master::Master)

// Epochs of a restarted master start above this (MasterCoreConfig).
uint64_t wall_clock_us() {
  auto since = std::chrono::system_clock::now().time_since_epoch();
  return static_cast<uint64_t>(
      std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(since).count()));
}

MasterCoreConfig core_config(const MasterConfig& config) {
  MasterCoreConfig core;
  core.max_groups = config.max_groups;
  core.resume_epoch_base = wall_clock_us();
  core.link_max_age_s = config.link_max_age_s;
  core.probe_ms = config.probe_ms;
  core.probe_streams = config.probe_streams;
  core.background_solve_s = config.background_solve_s;
  return core;
}

}  // namespace

Master::Master(MasterConfig config)
    : config_(std::move(config)),
      secret_(take_secret(config_.secret)),
      core_(core_config(config_)) {
  // A large run starts every peer at once: an accept queue of 128 overflowed
  // at 1024 (scale_bench). Under SYN cookies the kernel then drops the
  // client's final ACK while the client counts itself connected, and as the
  // master speaks first (AUTH_CHALLENGE) that client waits out its whole
  // timeout. The kernel caps this at net.core.somaxconn.
  listener_ = Socket::listen_on(config_.host, config_.port, kMasterBacklog);
  port_ = listener_.local_port();
  started_at_ = Deadline::Clock::now();
}

Master::~Master() { stop(); }

void Master::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_ || stopped_) return;
  started_ = true;
  thread_ = std::thread([this] { loop(); });
  PCCL_LOG(kInfo, "master listening on " << config_.host << ":" << port_
                                         << (secret_.empty() ? " (no authentication)"
                                                             : " (shared-secret authentication)"));
}

void Master::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  wake_.cancel();
  if (thread_.joinable()) thread_.join();
  planner_.stop();  // cancels a search under way
  std::lock_guard<std::mutex> lock(mu_);
  conns_.clear();
  listener_.close();
}

void Master::loop() {
  std::vector<pollfd> fds;
  while (!wake_.cancelled()) {
    fds.clear();
    fds.push_back({wake_.fd(), POLLIN, 0});
    fds.push_back({listener_.fd(), POLLIN, 0});
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [fd, c] : conns_) {
        short ev = POLLIN;
        if (!c.out.empty()) ev |= POLLOUT;
        fds.push_back({fd, ev, 0});
      }
    }
    int rc = ::poll(fds.data(), fds.size(), 200);
    if (rc < 0 && errno != EINTR) {
      PCCL_LOG(kError, "master poll failed: " << errno);
      break;
    }
    if (wake_.cancelled()) break;
    std::lock_guard<std::mutex> lock(mu_);
    if (fds[1].revents & POLLIN) accept_new();
    for (size_t i = 2; i < fds.size(); ++i) {
      auto it = conns_.find(fds[i].fd);
      if (it == conns_.end() || fds[i].revents == 0) continue;
      Connection& c = it->second;
      if (c.closing) continue;
      if (fds[i].revents & POLLIN) read_from(c);
      if (!c.closing && (fds[i].revents & POLLOUT)) flush(c);
      if (!c.closing && c.status_client && c.out.empty()) drop(c, "status sent");
      if (!c.closing && (fds[i].revents & (POLLERR | POLLHUP)) && !(fds[i].revents & POLLIN)) {
        drop(c, "connection error");
      }
    }
    for (auto& [fd, c] : conns_) {
      if (c.closing || c.peer_id != 0 || !c.handshake_deadline.expired()) continue;
      if (!c.authenticated) {
        refuse(c, "authentication timed out",
               "no authentication response within the handshake deadline");
      } else {
        drop(c, "no HELLO within the handshake deadline");
      }
    }
    keep_alive();
    exchange_plans();
    reap();
    for (auto it = conns_.begin(); it != conns_.end();) {
      it = it->second.closing ? conns_.erase(it) : std::next(it);
    }
  }
}

void Master::accept_new() {
  for (;;) {
    Socket s = listener_.accept_now();
    if (!s.valid()) return;
    if (conns_.size() >= config_.max_connections) {
      ++dropped_connections_;
      PCCL_LOG(kWarn, "master: refusing connection from " << s.remote_ip()
                                                          << ": connection limit reached");
      continue;  // Socket closes on scope exit
    }
    int fd = s.fd();
    Connection c;
    c.remote = s.remote_ip();
    c.where = s.remote_endpoint();
    c.sock = std::move(s);
    c.handshake_deadline = Deadline::after(config_.handshake_timeout_s);
    c.last_heard = Deadline::Clock::now();
    Connection& conn = conns_.emplace(fd, std::move(c)).first->second;
    // The handshake starts at once: nothing else is accepted before it ends.
    std::vector<uint8_t> challenge;
    try {
      conn.auth = std::make_unique<ServerHandshake>(secret_, kAuthContextMaster);
      challenge = conn.auth->challenge();
    } catch (const PcclError& e) {
      drop(conn, e.what());
      continue;
    }
    send_frame(fd, MsgType::kAuthChallenge, challenge);
  }
}

void Master::read_from(Connection& c) {
  uint8_t buf[kReadChunk];
  ssize_t n = ::recv(c.sock.fd(), buf, sizeof(buf), 0);
  if (n == 0) { drop(c, "closed by peer"); return; }
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) drop(c, "read error");
    return;
  }
  c.in.insert(c.in.end(), buf, buf + n);
  c.last_heard = Deadline::Clock::now();
  try {
    while (!c.closing && c.in.size() >= kFrameHeaderSize) {
      // Before the handshake has succeeded, no frame may exceed its response.
      FrameHeader h = decode_frame_header(
          c.in.data(), c.authenticated ? kMaxControlPayload : static_cast<uint32_t>(kResponseSize));
      if (c.in.size() < kFrameHeaderSize + h.length) break;
      std::vector<uint8_t> payload(c.in.begin() + kFrameHeaderSize,
                                   c.in.begin() + kFrameHeaderSize + h.length);
      c.in.erase(c.in.begin(), c.in.begin() + kFrameHeaderSize + h.length);
      handle_frame(c, h.type, payload);
    }
  } catch (const PcclError& e) {
    if (!c.authenticated) {
      // The remote waits for AUTH_RESULT: refuse in the handshake's own terms.
      refuse(c, "malformed handshake response",
             std::string("refused before authentication: ") + e.what());
      return;
    }
    // Tell the other side why (best effort), then drop it.
    ErrorMsg msg{e.what()};
    send_frame(c.sock.fd(), MsgType::kError, msg.encode());
    flush(c);
    drop(c, e.what());
  }
}

void Master::flush(Connection& c) {
  while (!c.out.empty()) {
    ssize_t n = ::send(c.sock.fd(), c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) { c.out.erase(c.out.begin(), c.out.begin() + n); continue; }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    drop(c, "write error");
    return;
  }
}

void Master::send_frame(int fd, MsgType type, const std::vector<uint8_t>& payload) {
  auto it = conns_.find(fd);
  if (it == conns_.end() || it->second.closing) return;
  Connection& c = it->second;
  if (c.out.size() + payload.size() > config_.max_send_queue_bytes) {
    drop(c, "send queue overflow (peer not reading)");
    return;
  }
  uint8_t head[kFrameHeaderSize];
  encode_frame_header(head, static_cast<uint16_t>(type), static_cast<uint32_t>(payload.size()));
  c.out.insert(c.out.end(), head, head + kFrameHeaderSize);
  c.out.insert(c.out.end(), payload.begin(), payload.end());
  flush(c);
}

void Master::handle_auth(Connection& c, uint16_t type, const std::vector<uint8_t>& payload) {
  if (!c.auth) throw ProtocolViolation("handshake state lost");  // cannot happen
  check_auth_frame(type, payload, MsgType::kAuthResponse, kResponseSize);
  ServerHandshake::Result r = c.auth->on_response(payload);
  c.auth.reset();
  if (!r.ok) {
    ++auth_refusals_;
    send_frame(c.sock.fd(), MsgType::kAuthResult, r.reply);
    drop(c, r.error);  // logged with the remote address by reap(); never the secret
    return;
  }
  c.authenticated = true;
  send_frame(c.sock.fd(), MsgType::kAuthResult, r.reply);
  PCCL_LOG(kDebug, "master: connection from " << c.where
                                              << (r.authenticated ? " authenticated"
                                                                  : " accepted without authentication"));
}

void Master::refuse(Connection& c, const std::string& reason_for_remote,
                    const std::string& log_reason) {
  if (c.closing) return;
  ++auth_refusals_;
  c.auth.reset();
  send_frame(c.sock.fd(), MsgType::kAuthResult, ServerHandshake::refusal(reason_for_remote));
  drop(c, log_reason);
}

void Master::handle_frame(Connection& c, uint16_t type, const std::vector<uint8_t>& payload) {
  if (!c.authenticated) {
    handle_auth(c, type, payload);
    return;
  }
  auto msg = static_cast<MsgType>(type);
  if (c.status_client) throw ProtocolViolation("nothing may follow STATUS_REQUEST");
  if (c.peer_id == 0) {
    if (msg == MsgType::kStatusRequest) {
      handle_status_request(c, payload);
      return;
    }
    if (msg != MsgType::kHello) throw ProtocolViolation("first message must be HELLO or STATUS_REQUEST");
    handle_hello(c, payload);
    return;
  }
  // last_heard was refreshed on receipt; the rest is the core's to decide.
  core_.on_frame(c.peer_id, type, payload);
  flush_outbox();
}

void Master::handle_hello(Connection& c, const std::vector<uint8_t>& payload) {
  uint64_t id = core_.on_hello(payload, c.remote);  // throws (nothing sent) if refused
  c.peer_id = id;
  peer_fds_[id] = c.sock.fd();
  flush_outbox();
}

void Master::handle_status_request(Connection& c, const std::vector<uint8_t>& payload) {
  if (!payload.empty()) throw ProtocolViolation("STATUS_REQUEST carries nothing");
  c.status_client = true;
  std::string reply = status_reply();
  send_frame(c.sock.fd(), MsgType::kStatusReply, std::vector<uint8_t>(reply.begin(), reply.end()));
}

void Master::flush_outbox() {
  for (Outgoing& o : core_.take_outbox()) {
    auto it = peer_fds_.find(o.peer);
    if (it != peer_fds_.end()) send_frame(it->second, o.type, o.payload);
  }
  // Peers the core left out of every ring (MasterCore::take_evictions): told
  // why, then dropped like any other; reap() then forgets them in the core.
  for (auto& [peer, why] : core_.take_evictions()) {
    auto it = peer_fds_.find(peer);
    if (it == peer_fds_.end()) continue;
    send_frame(it->second, MsgType::kError, ErrorMsg{"dropped by the master: " + why}.encode());
    auto conn = conns_.find(it->second);
    if (conn != conns_.end()) drop(conn->second, why);
  }
}

void Master::exchange_plans() {
  for (PlanJob& job : core_.take_plan_jobs()) planner_.submit(std::move(job));
  for (PlanResult& result : planner_.take_results()) core_.on_background_plan(std::move(result));
}

void Master::keep_alive() {
  auto now = Deadline::Clock::now();
  auto interval = std::chrono::duration<double>(config_.heartbeat_interval_s);
  bool ping = now - last_heartbeat_sent_ >= interval;
  if (ping) last_heartbeat_sent_ = now;
  auto limit = std::chrono::duration<double>(config_.heartbeat_timeout_s);
  for (auto& [fd, c] : conns_) {
    if (c.closing || c.peer_id == 0) continue;
    if (now - c.last_heard > limit) {
      std::string why = "no heartbeat for " + std::to_string(config_.heartbeat_timeout_s) +
                        " s (frozen or partitioned)";
      send_frame(fd, MsgType::kError, ErrorMsg{"dropped by the master: " + why}.encode());
      drop(c, why);
    } else if (ping) {
      send_frame(fd, MsgType::kHeartbeat, HeartbeatMsg{core_.total_world_size()}.encode());
    }
  }
}

void Master::drop(Connection& c, const std::string& reason) {
  if (c.closing) return;
  c.closing = true;
  c.close_reason = reason;
}

void Master::reap() {
  // Forgetting one peer notifies others; a failed notice drops them too, so
  // repeat until no connection is left marked but unreaped.
  for (bool again = true; again;) {
    again = false;
    for (auto& [fd, c] : conns_) {
      if (!c.closing || c.reaped) continue;
      c.reaped = again = true;
      ++dropped_connections_;
      if (c.peer_id != 0) {
        PCCL_LOG(kInfo, "master: dropping peer " << c.peer_id << " (" << c.where
                                                 << "): " << c.close_reason);
        peer_fds_.erase(c.peer_id);
        core_.on_peer_lost(c.peer_id, c.close_reason);
        flush_outbox();
      } else if (c.status_client) {
        PCCL_LOG(kDebug, "master: status client " << c.where << " done: " << c.close_reason);
      } else {
        PCCL_LOG(kWarn, "master: dropping connection from " << c.where << ": "
                                                             << c.close_reason);
      }
      c.sock.shutdown_both();
    }
  }
}

}  // namespace pccl
