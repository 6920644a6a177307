// reset_connection() (transport/socket.h), which a broken ring uses on its
// links (RingLinks::break_links): a neighbour blocked sending into a window
// we stopped reading fails at once (after a shutdown it could stay blocked:
// the kernel resets only on new data, and a ring peer waited out its stall
// timeout, see test_ring_kinds' dead peers); a thread of ours polling the
// reset descriptor wakes; the descriptor stays open (no reuse race).
// Real sockets over 127.0.0.1.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>
#include <vector>

#include "tests/check.h"
#include "tests/loopback_pair.h"
#include "transport/socket.h"

using namespace pccl;

namespace {

// Fills the window from `fd` (made non-blocking) until the kernel takes no more.
void fill_window(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::vector<char> chunk(1 << 16, 'x');
  for (int rounds = 0; rounds < 100000; ++rounds) {
    ssize_t k = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
    if (k < 0) {
      CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
      return;
    }
  }
  CHECK(false && "the window never filled");
}

// Whether `fd` may be written to (or has failed) within `ms`.
short poll_out(int fd, int ms) {
  pollfd p{fd, POLLOUT, 0};
  return ::poll(&p, 1, ms) == 1 ? p.revents : 0;
}

void test_a_blocked_sender_fails_at_once_after_a_reset() {
  Socket server;
  Socket client = connected_pair(&server);
  fill_window(client.fd());
  int fd = server.fd();
  server.reset_in_place();
  CHECK_EQ(server.fd(), fd);  // still ours: threads polling it see no reused number
  short revents = poll_out(client.fd(), 10000);  // generous: it comes at once
  CHECK(revents & (POLLERR | POLLHUP));
  char byte = 'x';
  errno = 0;
  CHECK_EQ(::send(client.fd(), &byte, 1, MSG_NOSIGNAL), ssize_t{-1});
  CHECK(errno == ECONNRESET || errno == EPIPE);
}

void test_a_thread_polling_the_reset_descriptor_wakes() {
  Socket server;
  Socket client = connected_pair(&server);
  std::atomic<short> seen{0};
  std::thread reader([&] {
    pollfd p{server.fd(), POLLIN, 0};
    if (::poll(&p, 1, 20000) == 1) seen = p.revents;
  });
  // The reader may or may not be in poll() yet: either way it must see the reset.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  server.reset_in_place();
  reader.join();
  CHECK(seen.load() & (POLLHUP | POLLERR | POLLIN));
  char byte;
  CHECK(::recv(server.fd(), &byte, 1, 0) <= 0);
  // The client learns of a reset, not an end of stream (what a shutdown sends).
  pollfd p{client.fd(), POLLIN, 0};
  CHECK_EQ(::poll(&p, 1, 10000), 1);
  errno = 0;
  CHECK_EQ(::recv(client.fd(), &byte, 1, 0), ssize_t{-1});
  CHECK_EQ(errno, ECONNRESET);
}

}  // namespace

int main() {
  test_a_blocked_sender_fails_at_once_after_a_reset();
  test_a_thread_polling_the_reset_descriptor_wakes();
  return check_summary("test_link_reset");
}
