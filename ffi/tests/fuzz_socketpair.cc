#include "tests/fuzz_socketpair.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>

namespace pccl_fuzz {

FedSocket feed(const uint8_t* data, size_t size) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
    throw std::runtime_error("socketpair failed");
  }
  FedSocket s{pccl::Socket(fds[0]), pccl::Socket(fds[1])};
  size_t left = std::min(size, kMaxStreamInput);
  while (left > 0) {
    ssize_t n = ::send(fds[1], data, left, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // buffer full: the rest is cut off, still a valid test
    data += n;
    left -= static_cast<size_t>(n);
  }
  // EOF after the input, but the reader's own sends (M2, M3) still go through.
  ::shutdown(fds[1], SHUT_WR);
  return s;
}

}  // namespace pccl_fuzz
