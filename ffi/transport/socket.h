// An owned TCP socket. Every blocking operation takes a Deadline and an
// optional Canceller; nothing here waits without bound.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/canceller.h"
#include "common/deadline.h"

namespace pccl {

// Environment variable naming the TCP congestion control of ring connections
// (unset or empty: the system default, net.ipv4.tcp_congestion_control).
inline constexpr const char* kCongestionControlEnv = "JAX_PCCL_TCP_CONGESTION";

// Waits until fd is ready for `events` (POLLIN/POLLOUT). Returns false on
// deadline; throws Cancelled if the canceller fires.
bool wait_ready(int fd, short events, const Deadline& deadline, const Canceller* cancel);

// Aborts the TCP connection on `fd` with a reset, leaving the descriptor
// open (connect() to AF_UNSPEC: Linux's disconnect). Unlike a shutdown, the
// remote learns at once even when what it sent us sits unread in a full
// window: after a shutdown the kernel resets only on new data, so a remote
// blocked on that window waits out its stall timeout. Falls back to a
// shutdown where the kernel refuses.
void reset_connection(int fd);

class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() { close(); }
  Socket(Socket&& other) noexcept : fd_(other.release()) {}
  Socket& operator=(Socket&& other) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // Connects (non-blocking connect + poll). Throws PcclError(kind) on failure.
  static Socket connect_to(const std::string& host, uint16_t port, const Deadline& deadline,
                           const Canceller* cancel);
  // Listens on host:port (port 0 picks a free one).
  static Socket listen_on(const std::string& host, uint16_t port, int backlog);
  // Accepts one pending connection without blocking; invalid Socket if none.
  Socket accept_now();

  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  int release() { int f = fd_; fd_ = -1; return f; }
  void close();
  // Half-close both directions so a peer blocked on us sees EOF at once.
  void shutdown_both();
  // Resets the connection but keeps the descriptor (threads of ours may
  // still be polling it: they wake with an error): see reset_connection().
  void reset_in_place() { reset_connection(fd_); }
  // Closes at once and discards what is still unsent (SO_LINGER 0): the
  // remote sees a reset, not the rest of our queue.
  void abort();

  void set_nonblocking();
  // TCP_NODELAY + large buffers, and the congestion control named by
  // $JAX_PCCL_TCP_CONGESTION if set (throws PcclError if the kernel refuses).
  void tune_for_bulk();
  // TCP_CONGESTION for this socket (e.g. "bbr": loss does not halve its rate,
  // and it does not restart slow start after an idle pause). Throws PcclError.
  void set_congestion_control(const std::string& name);
  std::string congestion_control() const;  // "" if unknown

  // Sends/receives exactly n bytes before the deadline (the socket must be
  // non-blocking). Throws PeerFailure on EOF/reset/deadline, Cancelled on cancel.
  void send_all(const void* data, size_t n, const Deadline& deadline, const Canceller* cancel);
  void recv_all(void* data, size_t n, const Deadline& deadline, const Canceller* cancel);
  // Receives what is there (waiting for at least one byte): the bytes read,
  // 0 at the remote's orderly end of stream. Throws as recv_all().
  size_t recv_some(void* data, size_t n, const Deadline& deadline, const Canceller* cancel);
  // Sends what fits in the socket's buffer without waiting: the bytes taken
  // (0 when it is full). Throws PeerFailure when the connection is lost.
  size_t send_now(const void* data, size_t n);
  // Ends our sending direction: the remote reads end of stream once it has
  // everything we sent; it can still answer on the other direction.
  void shutdown_write();

  uint16_t local_port() const;
  std::string local_ip() const;
  std::string remote_ip() const;
  uint16_t remote_port() const;  // 0 if unknown
  // "ip:port" ("[v6]:port") of the remote side, for log lines.
  std::string remote_endpoint() const;

 private:
  int fd_ = -1;
};

}  // namespace pccl
