// The ring's lane loop over real loopback TCP. Receive lanes sleep until a
// worthwhile piece of their chunk is queued (SO_RCVLOWAT, ring_lanes.cc):
// results stay exact whatever the chunk tails, and every link wakes its
// reader on any byte again once the collective is over, because the next
// frame on it (a header, a heartbeat) may be a few bytes long.
#include <poll.h>
#include <sys/socket.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "collectives/ring_allreduce.h"
#include "tests/check.h"
#include "tests/loopback_pair.h"

using namespace pccl;

namespace {

struct TwoPeerRing {
  std::vector<Socket> sockets;  // owns every fd below
  RingPeers peer[2];
};

// Peer 0's right lanes are peer 1's left lanes and the other way round.
TwoPeerRing two_peer_ring(int lanes) {
  TwoPeerRing r;
  for (int p = 0; p < 2; ++p) {
    r.peer[p].rank = p;
    r.peer[p].size = 2;
  }
  for (int from = 0; from < 2; ++from) {
    for (int i = 0; i < lanes; ++i) {
      Socket server;
      Socket client = connected_pair(&server);
      r.peer[from].right.push_back(client.fd());
      r.peer[1 - from].left.push_back(server.fd());
      r.sockets.push_back(std::move(client));
      r.sockets.push_back(std::move(server));
    }
  }
  return r;
}

int recv_lowat(int fd) {
  int v = -1;
  socklen_t len = sizeof(v);
  CHECK(::getsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, &len) == 0);
  return v;
}

// Sum over two peers of `count` floats; checks every element on both peers.
void check_sum(TwoPeerRing& ring, size_t count) {
  std::vector<float> in[2], out[2];
  for (int p = 0; p < 2; ++p) {
    in[p].resize(count);
    out[p].assign(count, -1.0f);
    for (size_t i = 0; i < count; ++i) in[p][i] = static_cast<float>((i * 7 + p * 3) % 1024);
  }
  RingOptions opt;
  opt.stall_timeout_s = 5;  // a lane asleep for bytes that never come fails here
  std::string errors[2];
  std::thread t[2];
  for (int p = 0; p < 2; ++p) {
    t[p] = std::thread([&, p] {
      try {
        ring_all_reduce(ring.peer[p], opt, in[p].data(), out[p].data(), count, DType::kFloat32,
                        ReduceOp::kSum);
      } catch (const std::exception& e) {
        errors[p] = e.what();
      }
    });
  }
  for (auto& th : t) th.join();
  CHECK_EQ(errors[0], std::string());
  CHECK_EQ(errors[1], std::string());
  size_t wrong = 0;
  for (int p = 0; p < 2; ++p) {
    for (size_t i = 0; i < count; ++i) wrong += out[p][i] != in[0][i] + in[1][i];
  }
  CHECK_EQ(wrong, size_t{0});
}

void test_exact_with_chunk_tails_below_the_wake_threshold() {
  TwoPeerRing ring = two_peer_ring(3);
  // 16 MiB: 1 MiB chunks, each ending in a tail under 256 KiB on some lane;
  // the odd count leaves a short last chunk and uneven segments.
  for (size_t count : {size_t{4} << 20, (size_t{4} << 20) + 12345, size_t{300000}, size_t{1000}}) {
    check_sum(ring, count);
  }
}

void test_links_wake_on_any_byte_after_the_collective() {
  TwoPeerRing ring = two_peer_ring(2);
  check_sum(ring, (size_t{4} << 20) + 777);
  for (int p = 0; p < 2; ++p) {
    for (int fd : ring.peer[p].left) CHECK_EQ(recv_lowat(fd), 1);
  }
  // An 8-byte frame on a link the collective just used is seen at once.
  const char frame[8] = {'h', 'e', 'a', 'd', 'e', 'r', '!', '\0'};
  CHECK(::send(ring.peer[0].right[0], frame, sizeof(frame), MSG_NOSIGNAL) == sizeof(frame));
  pollfd pfd{ring.peer[1].left[0], POLLIN, 0};
  CHECK_EQ(::poll(&pfd, 1, 2000), 1);
  char got[8] = {};
  CHECK(::recv(pfd.fd, got, sizeof(got), MSG_DONTWAIT) == sizeof(got));
  CHECK(std::memcmp(got, frame, sizeof(frame)) == 0);
}

}  // namespace

int main() {
  test_exact_with_chunk_tails_below_the_wake_threshold();
  test_links_wake_on_any_byte_after_the_collective();
  return check_summary("test_ring_lanes");
}
