#include "peer/ring_links.h"

#include <poll.h>

#include <exception>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "common/log.h"
#include "security/handshake_io.h"
#include "transport/frame.h"

namespace pccl {
namespace {

constexpr size_t kMaxHandshaking = 64;
constexpr double kHandshakeSeconds = 5.0;
constexpr uint32_t kMaxPeerHello = 64;
// (peer, epoch) link sets parked until establish() takes them. Honest
// neighbours leave one or two here; the bound is on what anyone else parks.
constexpr size_t kMaxFiledNeighbours = 16;

}  // namespace

void RingLinks::listen(const std::string& bind_host, uint32_t group, const std::string& secret,
                       StateLinkHandler on_state_link, ProbeLinkHandler on_probe_link) {
  group_ = group;
  on_state_link_ = std::move(on_state_link);
  on_probe_link_ = std::move(on_probe_link);
  secret_ = Secret(secret);
  listener_ = Socket::listen_on(bind_host, 0, 64);
  port_ = listener_.local_port();
  acceptor_ = std::thread([this] { acceptor_loop(); });
}

void RingLinks::acceptor_loop() {
  std::vector<Incoming> waiting;
  std::vector<pollfd> fds;
  while (!stop_.cancelled()) {
    fds.clear();
    fds.push_back({stop_.fd(), POLLIN, 0});
    fds.push_back({listener_.fd(), POLLIN, 0});
    for (auto& h : waiting) fds.push_back({h.sock.fd(), POLLIN, 0});
    if (::poll(fds.data(), fds.size(), 200) < 0) continue;
    if (stop_.cancelled()) return;
    std::vector<Incoming> still;
    for (size_t i = 0; i < waiting.size(); ++i) {
      Incoming& in = waiting[i];
      if (fds[i + 2].revents != 0) {
        Frame f;
        Read r = receive(in, f);
        if (r == Read::kFailed) continue;
        if (r == Read::kFrame) {
          if (!in.auth) {
            finish_handshake(std::move(in.sock), f);
          } else if (authenticate(in, f)) {
            still.push_back(std::move(in));  // PEER_HELLO comes next
          }
          continue;
        }
      }
      if (in.deadline.expired()) {
        PCCL_LOG(kWarn, "ring: dropping connection from "
                            << in.where << ": silent or stalled past the handshake deadline");
      } else {
        still.push_back(std::move(in));
      }
    }
    waiting = std::move(still);
    {
      std::lock_guard<std::mutex> lock(mu_);
      drop_expired_links();  // even when nobody files or establishes
    }
    if (fds[1].revents & POLLIN) {
      for (;;) {
        Socket s = listener_.accept_now();
        if (!s.valid()) break;
        if (waiting.size() >= kMaxHandshaking) {
          PCCL_LOG(kWarn, "ring: too many unidentified connections, dropping "
                              << s.remote_endpoint());
          continue;
        }
        Incoming in{std::move(s), Deadline::after(kHandshakeSeconds), nullptr, "", {}};
        in.where = in.sock.remote_endpoint();
        try {
          in.auth = std::make_unique<ServerHandshake>(secret_, kAuthContextRing);
          write_frame(in.sock, static_cast<uint16_t>(MsgType::kAuthChallenge),
                      in.auth->challenge(), Deadline::after(1.0), &stop_);
        } catch (const PcclError& e) {
          PCCL_LOG(kWarn, "ring: dropping connection from " << in.where << ": " << e.what());
          continue;
        }
        waiting.push_back(std::move(in));
      }
    }
  }
}

RingLinks::Read RingLinks::receive(Incoming& in, Frame& out) {
  try {
    if (!in.reader.read_available(in.sock, in.auth ? kMaxAuthFrame : kMaxPeerHello)) {
      return Read::kWaiting;
    }
    out = in.reader.take();
    return Read::kFrame;
  } catch (const PcclError& e) {
    if (in.auth && e.kind() == ErrorKind::kProtocol) refuse_malformed_response(in.sock, &stop_);
    PCCL_LOG(kWarn, "ring: dropping connection from " << in.where << ": " << e.what());
    return Read::kFailed;
  }
}

bool RingLinks::authenticate(Incoming& in, const Frame& m2) {
  try {
    ServerHandshake::Result r =
        server_handshake_answer(in.sock, *in.auth, m2, Deadline::after(1.0), &stop_);
    in.auth.reset();
    if (!r.ok) {
      PCCL_LOG(kWarn, "ring: refused connection from " << in.where << ": " << r.error);
      return false;
    }
    return true;
  } catch (const PcclError& e) {
    if (e.kind() != ErrorKind::kCancelled) {
      PCCL_LOG(kWarn, "ring: dropping connection from " << in.where
                                                       << " during authentication: " << e.what());
    }
    return false;
  }
}

void RingLinks::finish_handshake(Socket s, const Frame& f) {
  try {
    if (f.type != static_cast<uint16_t>(MsgType::kPeerHello)) {
      throw ProtocolViolation("expected PEER_HELLO");
    }
    PeerHelloMsg hello = PeerHelloMsg::decode(f.payload);
    if (hello.group != group_) throw ProtocolViolation("link from another peer group");
    if (hello.purpose == static_cast<uint8_t>(LinkPurpose::kStateFetch)) {
      if (!on_state_link_) throw ProtocolViolation("this peer serves no shared state");
      s.tune_for_bulk();
      on_state_link_(std::move(s), hello.peer_id);
      return;
    }
    if (hello.purpose == static_cast<uint8_t>(LinkPurpose::kLinkProbe)) {
      if (!on_probe_link_) throw ProtocolViolation("this peer takes no link probes");
      s.tune_for_bulk();
      on_probe_link_(std::move(s), hello);
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (hello.epoch < current_epoch_) return;  // stale: dropped
    s.tune_for_bulk();
    file_link(hello, s);
    cv_.notify_all();
  } catch (const PcclError& e) {
    PCCL_LOG(kWarn, "ring: dropping connection from " << s.remote_ip() << ": " << e.what());
  }
}

Socket RingLinks::open_side_link(const RingMember& to, const PeerHelloMsg& hello, const char* what,
                                 const Deadline& deadline, const Canceller* cancel) const {
  Socket s = Socket::connect_to(to.host, to.port, deadline, cancel);
  s.tune_for_bulk();
  try {
    client_handshake(s, secret_, kAuthContextRing, deadline, cancel);
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kCancelled) throw;
    throw PeerFailure(std::string(what) + " to peer " + std::to_string(to.peer_id) + " at " +
                      to.host + ":" + std::to_string(to.port) + ": " + e.what());
  }
  write_frame(s, static_cast<uint16_t>(MsgType::kPeerHello), hello.encode(), deadline, cancel);
  return s;
}

Socket RingLinks::open_state_link(uint64_t my_id, const RingMember& holder,
                                  const Deadline& deadline, const Canceller* cancel) const {
  PeerHelloMsg hello{my_id, 0, group_, static_cast<uint8_t>(LinkPurpose::kStateFetch)};
  return open_side_link(holder, hello, "state link", deadline, cancel);
}

Socket RingLinks::open_probe_link(uint64_t my_id, uint64_t epoch, const RingMember& to, int stream,
                                  int streams, const Deadline& deadline,
                                  const Canceller* cancel) const {
  PeerHelloMsg hello{my_id, epoch, group_, static_cast<uint8_t>(LinkPurpose::kLinkProbe)};
  hello.stream = static_cast<uint16_t>(stream);
  hello.streams = static_cast<uint16_t>(streams);
  return open_side_link(to, hello, "probe link", deadline, cancel);
}

void RingLinks::drop_expired_links() {
  for (auto it = incoming_.begin(); it != incoming_.end();) {
    bool drop = it->first != awaited_ && it->second.expires.expired();
    if (drop) {
      PCCL_LOG(kWarn, "ring: dropping links parked by peer " << it->first.first << " for epoch "
                                                             << it->first.second
                                                             << ": nobody used them in time");
    }
    it = drop ? incoming_.erase(it) : std::next(it);
  }
}

bool RingLinks::make_room_for(const LinkKey& key) {
  drop_expired_links();
  if (incoming_.size() < kMaxFiledNeighbours) return true;
  // Epochs below the current one are gone already (establish), so the
  // distance ahead is epoch - current_epoch_.
  auto farther = [](const LinkKey& a, uint64_t a_arrival, const LinkKey& b, uint64_t b_arrival) {
    return a.second != b.second ? a.second > b.second : a_arrival < b_arrival;
  };
  auto victim = incoming_.end();
  for (auto it = incoming_.begin(); it != incoming_.end(); ++it) {
    if (it->first == awaited_) continue;
    if (victim == incoming_.end() ||
        farther(it->first, it->second.arrival, victim->first, victim->second.arrival)) {
      victim = it;
    }
  }
  // The newcomer arrives last: it loses only to entries nearer the current epoch.
  if (victim == incoming_.end() || key.second > victim->first.second) return false;
  PCCL_LOG(kWarn, "ring: dropping links parked by peer " << victim->first.first << " for epoch "
                                                         << victim->first.second
                                                         << " to make room for peer " << key.first
                                                         << "'s for epoch " << key.second);
  incoming_.erase(victim);
  return true;
}

void RingLinks::file_link(const PeerHelloMsg& hello, Socket& s) {
  LinkKey key{hello.peer_id, hello.epoch};
  auto it = incoming_.find(key);
  if (it == incoming_.end()) {
    if (!make_room_for(key)) {
      throw ProtocolViolation("too many neighbours' links waiting to be used, all for nearer epochs");
    }
    it = incoming_.emplace(key, IncomingLinks{}).first;
    it->second.streams.resize(hello.streams);
    it->second.slots = hello.slots;
    it->second.expires = Deadline::after(park_seconds_);
    it->second.arrival = ++arrivals_;
  }
  IncomingLinks& in = it->second;
  if (in.streams.size() != hello.streams || in.slots != hello.slots) {
    throw ProtocolViolation("ring link says " + std::to_string(hello.streams) +
                            " streams, an earlier one of the same hop said " +
                            std::to_string(in.streams.size()));
  }
  if (in.streams[hello.stream].valid()) throw ProtocolViolation("duplicate ring link stream");
  in.streams[hello.stream] = std::move(s);
  ++in.filed;
}

Socket RingLinks::open_link(uint64_t my_id, uint64_t epoch, const RingMember& right, int stream,
                            int streams, const Deadline& deadline,
                            const Canceller* cancel) const {
  Socket out = Socket::connect_to(right.host, right.port, deadline, cancel);
  out.tune_for_bulk();
  try {
    client_handshake(out, secret_, kAuthContextRing, deadline, cancel);
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kCancelled) throw;
    throw PeerFailure("ring link to peer " + std::to_string(right.peer_id) + " at " + right.host +
                      ":" + std::to_string(right.port) + ": " + e.what());
  }
  PeerHelloMsg hello{my_id, epoch, group_};
  hello.stream = static_cast<uint16_t>(stream);
  hello.streams = static_cast<uint16_t>(streams);
  hello.slots = static_cast<uint8_t>(my_slots_);
  write_frame(out, static_cast<uint16_t>(MsgType::kPeerHello), hello.encode(), deadline, cancel);
  return out;
}

std::vector<Socket> RingLinks::open_links(uint64_t my_id, uint64_t epoch,
                                          const RingMember& right, int streams,
                                          const Deadline& deadline,
                                          const Canceller* cancel) const {
  std::vector<Socket> out(static_cast<size_t>(streams));
  std::vector<std::exception_ptr> errors(out.size());
  auto open_one = [&](size_t i) {
    try {
      out[i] = open_link(my_id, epoch, right, static_cast<int>(i), streams, deadline, cancel);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  };
  // Each connection costs a few round trips (connect, handshake): open them
  // all at once, so a long RTT is paid once per topology, not K times. The
  // threads end by the deadline or the canceller, and are joined here.
  {
    std::vector<std::thread> helpers;
    struct JoinAll {
      std::vector<std::thread>& threads;
      ~JoinAll() {
        for (auto& t : threads) t.join();
      }
    } join_all{helpers};
    for (size_t i = 1; i < out.size(); ++i) helpers.emplace_back(open_one, i);
    open_one(0);
  }
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  return out;
}

void RingLinks::establish(uint64_t my_id, uint64_t epoch, const RingMember& right,
                          uint64_t left_id, const Deadline& deadline, const Canceller* cancel,
                          int streams, int slots) {
  if (streams < 1 || streams > kMaxRingStreams) {
    throw PcclError("ring connections must be 1.." + std::to_string(kMaxRingStreams));
  }
  if (slots < 1 || slots > kConcurrentSlots || slots > streams) {
    throw PcclError("collective slots must be 1.." + std::to_string(kConcurrentSlots));
  }
  drop_links();
  my_slots_ = slots;
  {
    std::lock_guard<std::mutex> lock(mu_);
    current_epoch_ = epoch;
    awaited_ = LinkKey{left_id, epoch};
    for (auto it = incoming_.begin(); it != incoming_.end();) {
      it = it->first.second < epoch ? incoming_.erase(it) : std::next(it);
    }
  }
  // Whatever way this ends, the awaited links lose their protection.
  struct Unawait {
    RingLinks* self;
    ~Unawait() {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->awaited_.reset();
    }
  } unawait{this};
  std::vector<Socket> out = open_links(my_id, epoch, right, streams, deadline, cancel);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    auto it = incoming_.find({left_id, epoch});
    if (it != incoming_.end() && it->second.complete()) {
      left_ = std::move(it->second.streams);
      left_slots_ = it->second.slots;
      incoming_.erase(it);
      break;
    }
    if (cancel != nullptr && cancel->cancelled()) throw Cancelled("closed while building the ring");
    if (deadline.expired()) {
      throw PeerFailure("left neighbour (peer " + std::to_string(left_id) +
                        ") did not connect within the timeout");
    }
    cv_.wait_for(lock, std::chrono::milliseconds(deadline.remaining_ms(100)));
  }
  right_ = std::move(out);
}

namespace {

std::vector<int> fds_of(const std::vector<Socket>& lanes, size_t first, size_t count) {
  std::vector<int> fds;
  for (size_t i = first; i < first + count && i < lanes.size(); ++i) fds.push_back(lanes[i].fd());
  return fds;
}

}  // namespace

std::vector<int> RingLinks::right_fds(size_t first, size_t count) const {
  return fds_of(right_, first, count);
}

std::vector<int> RingLinks::left_fds(size_t first, size_t count) const {
  return fds_of(left_, first, count);
}

void RingLinks::break_links() {
  // Every connection of the hop: a neighbour blocked on any of them must see
  // EOF. Gracefully: the last bytes of a collective that ended for us may
  // still be on their way to a neighbour that is finishing it.
  for (Socket& s : right_) s.shutdown_both();
  for (Socket& s : left_) s.shutdown_both();
}

void RingLinks::reset_links() {
  // A collective failed on the ring: every connection of the hop, so that a
  // neighbour blocked on any of them fails at once, also one whose bytes to
  // us fill a window we no longer read (after a shutdown the kernel resets
  // only on new data: it waited out its stall timeout). What we still had
  // to send is discarded: that epoch failed.
  for (Socket& s : right_) s.reset_in_place();
  for (Socket& s : left_) s.reset_in_place();
}

void RingLinks::drop_links() {
  break_links();
  right_.clear();
  left_.clear();
}

void RingLinks::close() {
  stop_.cancel();
  if (acceptor_.joinable()) acceptor_.join();
  drop_links();
  listener_.close();
  std::lock_guard<std::mutex> lock(mu_);
  incoming_.clear();
}

}  // namespace pccl
