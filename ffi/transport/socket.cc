#include "transport/socket.h"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/errors.h"

namespace pccl {
namespace {

constexpr int kPollSliceMs = 1000;  // re-check deadlines at least this often

std::string errno_text(int err) { return std::string(std::strerror(err)); }

struct AddrInfoList {
  addrinfo* head = nullptr;
  ~AddrInfoList() { if (head) freeaddrinfo(head); }
};

void resolve(const std::string& host, uint16_t port, bool passive, AddrInfoList* out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &out->head);
  if (rc != 0) throw PcclError("cannot resolve '" + host + "': " + gai_strerror(rc));
}

// A name lookup on a thread of its own: getaddrinfo() has no timeout, and a
// slow resolver must not hold up connect() (or close(), which joins the
// thread that connects) beyond the caller's deadline. An abandoned lookup
// finishes in the background and frees its result itself.
struct Lookup {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  int rc = 0;
  AddrInfoList list;
};

std::shared_ptr<Lookup> resolve_within(const std::string& host, uint16_t port,
                                       const Deadline& deadline, const Canceller* cancel) {
  auto lookup = std::make_shared<Lookup>();
  std::string service = std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST;  // an address literal never blocks: no thread for it
  const char* node = host.empty() ? nullptr : host.c_str();
  if (getaddrinfo(node, service.c_str(), &hints, &lookup->list.head) == 0) {
    lookup->done = true;
    return lookup;
  }
  lookup->list.head = nullptr;
  std::thread([lookup, host, service] {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* head = nullptr;
    int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &head);
    std::lock_guard<std::mutex> lock(lookup->mu);
    lookup->list.head = head;
    lookup->rc = rc;
    lookup->done = true;
    lookup->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lock(lookup->mu);
  while (!lookup->done) {
    if (cancel != nullptr && cancel->cancelled()) throw Cancelled("operation cancelled by close()");
    if (deadline.expired()) throw PeerFailure("cannot resolve '" + host + "': no answer in time");
    // Short slices: the canceller is an eventfd, not this condition variable.
    lookup->cv.wait_for(lock, std::chrono::milliseconds(deadline.remaining_ms(50)));
  }
  if (lookup->rc != 0) {
    throw PcclError("cannot resolve '" + host + "': " + gai_strerror(lookup->rc));
  }
  return lookup;
}

std::string sockaddr_ip(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, buf, sizeof(buf));
  } else if (ss.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof(buf));
  }
  return buf;
}

}  // namespace

bool wait_ready(int fd, short events, const Deadline& deadline, const Canceller* cancel) {
  for (;;) {
    if (cancel != nullptr && cancel->cancelled()) throw Cancelled("operation cancelled by close()");
    pollfd fds[2] = {{fd, events, 0}, {cancel ? cancel->fd() : -1, POLLIN, 0}};
    int timeout = deadline.remaining_ms(kPollSliceMs);
    int rc = ::poll(fds, cancel ? 2 : 1, timeout);
    if (rc < 0) {
      if (errno == EINTR) continue;
      throw PcclError("poll() failed: " + errno_text(errno));
    }
    if (cancel != nullptr && (fds[1].revents & POLLIN)) {
      throw Cancelled("operation cancelled by close()");
    }
    if (fds[0].revents != 0) return true;
    if (deadline.expired()) return false;
  }
}

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = other.release();
  }
  return *this;
}

void Socket::close() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void reset_connection(int fd) {
  if (fd < 0) return;
  sockaddr unspec{};
  unspec.sa_family = AF_UNSPEC;
  // The system call itself, not libc's connect(): ThreadSanitizer's
  // interceptor takes connect() for the making of a new descriptor and
  // reports our other threads' recv() on it as racing with that. Here it
  // only changes the connection's state, which the kernel serialises with
  // their recv() and poll() (they wake with the reset).
  if (::syscall(SYS_connect, fd, &unspec, sizeof(unspec)) != 0) ::shutdown(fd, SHUT_RDWR);
}

void Socket::shutdown_both() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

void Socket::abort() {
  if (fd_ < 0) return;
  linger now{1, 0};
  setsockopt(fd_, SOL_SOCKET, SO_LINGER, &now, sizeof(now));
  close();
}

Socket Socket::connect_to(const std::string& host, uint16_t port, const Deadline& deadline,
                          const Canceller* cancel) {
  std::shared_ptr<Lookup> lookup = resolve_within(host, port, deadline, cancel);
  std::string last_error = "no address";
  for (addrinfo* ai = lookup->list.head; ai != nullptr; ai = ai->ai_next) {
    Socket s(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!s.valid()) { last_error = errno_text(errno); continue; }
    s.set_nonblocking();
    int rc = ::connect(s.fd(), ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno != EINPROGRESS) { last_error = errno_text(errno); continue; }
    if (rc != 0) {
      if (!wait_ready(s.fd(), POLLOUT, deadline, cancel)) {
        last_error = "timed out";
        continue;
      }
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) { last_error = errno_text(err); continue; }
    }
    int one = 1;
    setsockopt(s.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return s;
  }
  throw PeerFailure("cannot connect to " + host + ":" + std::to_string(port) + ": " + last_error);
}

Socket Socket::listen_on(const std::string& host, uint16_t port, int backlog) {
  AddrInfoList list;
  resolve(host, port, true, &list);
  std::string last_error = "no address";
  for (addrinfo* ai = list.head; ai != nullptr; ai = ai->ai_next) {
    Socket s(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!s.valid()) { last_error = errno_text(errno); continue; }
    int one = 1;
    setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(s.fd(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(s.fd(), backlog) != 0) {
      last_error = errno_text(errno);
      continue;
    }
    s.set_nonblocking();
    return s;
  }
  throw PcclError("cannot listen on " + host + ":" + std::to_string(port) + ": " + last_error);
}

Socket Socket::accept_now() {
  int fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) return Socket();
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return Socket(fd);
}

void Socket::set_nonblocking() {
  int flags = fcntl(fd_, F_GETFL, 0);
  fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
}

void Socket::tune_for_bulk() {
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // Ask for big buffers; the kernel caps them at net.core.{r,w}mem_max.
  int bytes = 4 << 20;
  setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
  setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
  const char* congestion = std::getenv(kCongestionControlEnv);
  if (congestion != nullptr && *congestion != '\0') {
    try {
      set_congestion_control(congestion);
    } catch (const PcclError& e) {
      throw PcclError(std::string(e.what()) + " (from " + kCongestionControlEnv + ")");
    }
  }
}

void Socket::set_congestion_control(const std::string& name) {
  if (setsockopt(fd_, IPPROTO_TCP, TCP_CONGESTION, name.data(), name.size()) != 0) {
    int err = errno;
    throw PcclError("TCP congestion control '" + name + "' refused: " + errno_text(err) +
                    (err == ENOENT ? " (not in net.ipv4.tcp_available_congestion_control)"
                     : err == EPERM ? " (not in net.ipv4.tcp_allowed_congestion_control)"
                                    : ""));
  }
}

std::string Socket::congestion_control() const {
  char name[64] = {};
  socklen_t len = sizeof(name) - 1;
  if (getsockopt(fd_, IPPROTO_TCP, TCP_CONGESTION, name, &len) != 0) return "";
  return std::string(name, strnlen(name, len));
}

size_t Socket::send_now(const void* data, size_t n) {
  for (;;) {
    ssize_t k = ::send(fd_, data, n, MSG_NOSIGNAL);
    if (k >= 0) return static_cast<size_t>(k);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    throw PeerFailure("connection lost while sending: " + errno_text(errno));
  }
}

void Socket::send_all(const void* data, size_t n, const Deadline& deadline,
                      const Canceller* cancel) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t k = ::send(fd_, p, n, MSG_NOSIGNAL);
    if (k > 0) { p += k; n -= static_cast<size_t>(k); continue; }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_ready(fd_, POLLOUT, deadline, cancel)) throw PeerFailure("send timed out");
      continue;
    }
    throw PeerFailure("connection lost while sending: " + errno_text(errno));
  }
}

void Socket::recv_all(void* data, size_t n, const Deadline& deadline, const Canceller* cancel) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t k = ::recv(fd_, p, n, 0);
    if (k > 0) { p += k; n -= static_cast<size_t>(k); continue; }
    if (k == 0) throw PeerFailure("connection closed by remote side");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_ready(fd_, POLLIN, deadline, cancel)) throw PeerFailure("receive timed out");
      continue;
    }
    throw PeerFailure("connection lost while receiving: " + errno_text(errno));
  }
}

size_t Socket::recv_some(void* data, size_t n, const Deadline& deadline, const Canceller* cancel) {
  for (;;) {
    ssize_t k = ::recv(fd_, data, n, 0);
    if (k >= 0) return static_cast<size_t>(k);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_ready(fd_, POLLIN, deadline, cancel)) throw PeerFailure("receive timed out");
      continue;
    }
    throw PeerFailure("connection lost while receiving: " + errno_text(errno));
  }
}

void Socket::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

uint16_t Socket::local_port() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

std::string Socket::local_ip() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  return sockaddr_ip(ss);
}

std::string Socket::remote_ip() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  return sockaddr_ip(ss);
}

uint16_t Socket::remote_port() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

std::string Socket::remote_endpoint() const {
  std::string ip = remote_ip();
  if (ip.empty()) return "(unknown address)";
  if (ip.find(':') != std::string::npos) ip = "[" + ip + "]";
  return ip + ":" + std::to_string(remote_port());
}

}  // namespace pccl
