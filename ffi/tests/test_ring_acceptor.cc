// A peer's ring listener under slow or stalled clients (peer/ring_links.h).
// Anyone can reach that port: a client that sends part of a frame and then
// stalls must cost a buffer until its deadline, not the acceptor's time, so
// a legitimate neighbour still gets through at once. And the acceptor must
// read no byte past PEER_HELLO, because what follows belongs to the link.
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/deadline.h"
#include "common/errors.h"
#include "peer/ring_links.h"
#include "protocol/messages.h"
#include "security/handshake_io.h"
#include "tests/check.h"
#include "transport/frame.h"
#include "transport/socket.h"

using namespace pccl;

namespace {

const std::string kSecret = "acceptor secret";

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Connects and sends the first `n` bytes of a handshake response frame.
Socket stalled_client(uint16_t port, size_t n) {
  Deadline d = Deadline::after(3.0);
  Socket s = Socket::connect_to("127.0.0.1", port, d, nullptr);
  std::vector<uint8_t> frame(kFrameHeaderSize + kResponseSize, 0xAB);
  encode_frame_header(frame.data(), static_cast<uint16_t>(MsgType::kAuthResponse),
                      static_cast<uint32_t>(kResponseSize));
  s.send_all(frame.data(), n, d, nullptr);
  return s;
}

// True once the remote has closed the connection (EOF), within `seconds`.
bool closed_within(Socket& s, double seconds) {
  Deadline d = Deadline::after(seconds);
  try {
    for (;;) read_frame(s, kMaxAuthFrame, d, nullptr);  // M1, maybe M3, then EOF
  } catch (const PcclError& e) {
    return e.kind() == ErrorKind::kPeerFailure && !d.expired();
  }
}

void test_stalled_clients_do_not_delay_a_legitimate_one() {
  RingLinks links;
  links.listen("127.0.0.1", 0, kSecret);
  std::vector<Socket> stalled;
  for (size_t n : {1, 5, 11, 12, 40, 82}) stalled.push_back(stalled_client(links.port(), n));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the acceptor has seen them

  auto t0 = std::chrono::steady_clock::now();
  Deadline d = Deadline::after(10.0);
  Socket s = Socket::connect_to("127.0.0.1", links.port(), d, nullptr);
  bool authenticated = false;
  try {
    authenticated = client_handshake(s, Secret(kSecret), kAuthContextRing, d, nullptr);
  } catch (const PcclError& e) {
    std::fprintf(stderr, "    handshake failed: %s\n", e.what());
  }
  double took = seconds_since(t0);
  CHECK(authenticated);
  if (!CHECK(took < 0.5)) std::fprintf(stderr, "    legitimate handshake took %.2f s\n", took);

  // The stalled ones are dropped at the handshake deadline (5 s), not kept.
  for (Socket& st : stalled) CHECK(closed_within(st, 7.0));
}

void test_bytes_after_peer_hello_stay_on_the_link() {
  RingLinks me, right;
  me.listen("127.0.0.1", 0, kSecret);
  right.listen("127.0.0.1", 0, kSecret);
  // Our left neighbour, played by hand: PEER_HELLO and link data in one send.
  Deadline d = Deadline::after(5.0);
  Socket left = Socket::connect_to("127.0.0.1", me.port(), d, nullptr);
  client_handshake(left, Secret(kSecret), kAuthContextRing, d, nullptr);
  PeerHelloMsg hello;
  hello.peer_id = 77;
  hello.epoch = 1;
  hello.group = 0;
  std::vector<uint8_t> payload = hello.encode();
  std::vector<uint8_t> bytes(kFrameHeaderSize);
  encode_frame_header(bytes.data(), static_cast<uint16_t>(MsgType::kPeerHello),
                      static_cast<uint32_t>(payload.size()));
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  const char tail[] = "link data";
  bytes.insert(bytes.end(), tail, tail + sizeof(tail));
  left.send_all(bytes.data(), bytes.size(), d, nullptr);

  RingMember right_member{2, "127.0.0.1", right.port()};
  try {
    me.establish(1, 1, right_member, 77, d, nullptr);
  } catch (const PcclError& e) {
    std::fprintf(stderr, "    establish failed: %s\n", e.what());
  }
  CHECK(me.connected());
  char got[sizeof(tail)] = {};
  if (me.connected()) me.left().recv_all(got, sizeof(got), d, nullptr);
  CHECK(std::memcmp(got, tail, sizeof(tail)) == 0);
}

}  // namespace

int main() {
  test_stalled_clients_do_not_delay_a_legitimate_one();
  test_bytes_after_peer_hello_stay_on_the_link();
  return check_summary("test_ring_acceptor");
}
