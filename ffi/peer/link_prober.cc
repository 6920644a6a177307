#include "peer/link_prober.h"

#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <limits>
#include <memory>
#include <vector>

#include "common/errors.h"
#include "common/log.h"
#include "peer/probe_rate.h"
#include "peer/ring_links.h"
#include "transport/frame.h"
#include "transport/socket.h"

namespace pccl {

namespace {

constexpr size_t kProbeBufferBytes = 256 << 10;
// Small enough that a sender notices the answer soon on a slow path (64 KiB
// at 10 Mbit/s: 52 ms), large enough for few system calls on a fast one.
constexpr size_t kProbeSendChunk = 64 << 10;
constexpr size_t kMaxProbeConnections = 2 * kMaxRingConnections;
constexpr size_t kMaxEndedProbes = 4096;
constexpr uint32_t kMaxProbeFrame = 64;

uint64_t steady_us() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// One stream of a probe, run on its own thread: what the probed side counted.
struct StreamOutcome {
  bool ok = false;
  ProbeResultMsg result;
  uint64_t rtt_us = std::numeric_limits<uint64_t>::max();
  std::string error;
};

// The bulk bytes of every stream wait for stream 0's pings: timed behind
// a full bottleneck queue, a ping measures the queue, not the path (and on
// a slow path its loss costs a retransmission timeout).
class PingGate {
 public:
  void open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void wait(const Deadline& deadline, const Canceller* cancel) {
    std::unique_lock<std::mutex> lock(mu_);
    while (!open_) {
      if (cancel != nullptr && cancel->cancelled()) throw Cancelled("communicator closed");
      if (deadline.expired()) throw PeerFailure("probe: the pings did not end in time");
      cv_.wait_for(lock, std::chrono::milliseconds(deadline.remaining_ms(50)));
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Opens the gate however stream 0 ends (its pings done, or it failed).
struct OpenOnExit {
  PingGate* gate;
  ~OpenOnExit() {
    if (gate != nullptr) gate->open();
  }
};

void run_stream(const RingLinks& links, uint64_t my_id, const RingMember& to,
                const ProbeSpec& spec, int stream, const Deadline& deadline,
                const Canceller* cancel, PingGate* gate, StreamOutcome* out) {
  OpenOnExit opener{stream == 0 ? gate : nullptr};
  try {
    Socket s = links.open_probe_link(my_id, spec.epoch, to, stream, spec.streams, deadline, cancel);
    uint32_t pings = stream == 0 ? static_cast<uint32_t>(spec.pings) : 0;
    auto window_ms = static_cast<uint32_t>(std::lround(spec.seconds * 1e3));
    write_frame(s, static_cast<uint16_t>(MsgType::kProbeStart),
                ProbeStartMsg{spec.round, pings, window_ms}.encode(), deadline, cancel);
    for (uint32_t i = 0; i < pings; ++i) {
      uint64_t sent = steady_us();
      write_frame(s, static_cast<uint16_t>(MsgType::kProbePing), {}, deadline, cancel);
      Frame echo = read_frame(s, kMaxProbeFrame, deadline, cancel);
      if (echo.type != static_cast<uint16_t>(MsgType::kProbePing)) {
        throw ProtocolViolation("probe: expected the ping's echo");
      }
      out->rtt_us = std::min(out->rtt_us, steady_us() - sent);
    }
    if (stream == 0) {
      gate->open();
    } else {
      gate->wait(deadline, cancel);
    }
    // Bulk bytes until the probed side answers: its window opens at the
    // first byte it reads, so sending for a fixed time here could end
    // before the window does. The answer is the only thing it sends now,
    // and it is waited for with the buffer's space, never behind it: a full
    // send buffer signals space only once half of it has drained, seconds
    // on a slow path.
    std::vector<uint8_t> zeros(kProbeSendChunk, 0);
    while (window_ms > 0) {
      if (!wait_ready(s.fd(), POLLIN | POLLOUT, deadline, cancel)) {
        throw PeerFailure("probe: no answer in time");
      }
      if (wait_ready(s.fd(), POLLIN, Deadline::after(0), cancel)) break;  // the answer, or the end
      s.send_now(zeros.data(), zeros.size());
    }
    Frame f = read_frame(s, kMaxProbeFrame, deadline, cancel);
    if (f.type != static_cast<uint16_t>(MsgType::kProbeResult)) {
      throw ProtocolViolation("probe: expected PROBE_RESULT");
    }
    out->result = ProbeResultMsg::decode(f.payload);
    out->ok = true;
    s.abort();  // what our buffers still hold is not waited for: the figure is in
  } catch (const PcclError& e) {
    out->error = e.what();
    if (e.kind() == ErrorKind::kCancelled) out->error = "cancelled";
  }
}

}  // namespace

LinkFigure probe_link(const RingLinks& links, uint64_t my_id, const RingMember& to,
                      const ProbeSpec& spec, const Deadline& deadline, const Canceller* cancel) {
  std::vector<StreamOutcome> outcomes(static_cast<size_t>(std::max(spec.streams, 1)));
  std::vector<std::thread> threads;
  PingGate gate;
  for (int i = 0; i < static_cast<int>(outcomes.size()); ++i) {
    threads.emplace_back(run_stream, std::cref(links), my_id, std::cref(to), std::cref(spec), i,
                         std::cref(deadline), cancel, &gate, &outcomes[i]);
  }
  for (std::thread& t : threads) t.join();
  if (cancel != nullptr && cancel->cancelled()) throw Cancelled("communicator closed");
  LinkFigure figure;
  figure.to = to.peer_id;
  std::vector<ProbeResultMsg> counted;
  for (const StreamOutcome& o : outcomes) {
    if (!o.ok) {
      PCCL_LOG(kWarn, "peer " << my_id << ": probe of the link to peer " << to.peer_id << " at "
                              << to.host << ":" << to.port << " failed: " << o.error);
      return figure;  // ok = false: the link is unusable for now
    }
    counted.push_back(o.result);
  }
  // A tail shorter than half the last quarter: the sender stopped early.
  figure.bytes_per_s = probe_rate(counted, static_cast<uint64_t>(spec.seconds * 1e6 / 8));
  figure.ok = figure.bytes_per_s > 0;
  figure.rtt_us = outcomes[0].rtt_us == std::numeric_limits<uint64_t>::max() ? 0 : outcomes[0].rtt_us;
  return figure;
}

bool link_answers(const RingLinks& links, uint64_t my_id, uint64_t epoch, const RingMember& to,
                  const Deadline& deadline, const Canceller* cancel) {
  ProbeSpec spec;
  spec.epoch = epoch;
  spec.round = kMaxRingMembers - 1;  // no plan has this round: never mistaken for a probe
  spec.streams = 1;
  spec.seconds = 0;  // the ping only
  spec.pings = 1;
  StreamOutcome outcome;
  PingGate gate;
  run_stream(links, my_id, to, spec, 0, deadline, cancel, &gate, &outcome);
  if (cancel != nullptr && cancel->cancelled()) throw Cancelled("communicator closed");
  if (!outcome.ok) {
    PCCL_LOG(kWarn, "peer " << my_id << ": link to peer " << to.peer_id << " at " << to.host << ":"
                            << to.port << " does not answer: " << outcome.error);
  }
  return outcome.ok;
}

void LinkProbeServer::accept(Socket sock, const PeerHelloMsg& hello) {
  std::lock_guard<std::mutex> lock(mu_);
  join_finished();
  if (closed_) return;
  if (conns_.size() >= kMaxProbeConnections) {
    PCCL_LOG(kWarn, "probe: dropping probe link from peer " << hello.peer_id
                                                           << ": too many probes at once");
    return;
  }
  conns_.emplace_back();
  Connection* c = &conns_.back();
  c->sock = std::move(sock);
  c->hello = hello;
  c->thread = std::thread([this, c] { serve(c); });
}

void LinkProbeServer::serve(Connection* c) {
  uint32_t round = 0;
  bool known = false;
  try {
    round = serve_probe(c);
    known = true;
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kProtocol) {
      PCCL_LOG(kWarn, "probe: dropping probe link from peer " << c->hello.peer_id << ": "
                                                             << e.what());
    } else {
      PCCL_LOG(kDebug, "probe: link from peer " << c->hello.peer_id << " ended: " << e.what());
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  c->finished = true;
  if (known) {
    ProbeKey key{c->hello.peer_id, c->hello.epoch, round};
    if (ended_.size() >= kMaxEndedProbes && ended_.count(key) == 0) ended_.erase(ended_.begin());
    Ended& e = ended_[key];
    ++e.streams_ended;
    e.streams = c->hello.streams;
  }
  cv_.notify_all();
}

uint32_t LinkProbeServer::serve_probe(Connection* c) {
  Socket& s = c->sock;
  Frame first = read_frame(s, kMaxProbeFrame, Deadline::after(stall_timeout_s_), &stop_);
  if (first.type != static_cast<uint16_t>(MsgType::kProbeStart)) {
    throw ProtocolViolation("probe: expected PROBE_START");
  }
  ProbeStartMsg start = ProbeStartMsg::decode(first.payload);
  for (uint32_t i = 0; i < start.pings; ++i) {
    Frame ping = read_frame(s, kMaxProbeFrame, Deadline::after(stall_timeout_s_), &stop_);
    if (ping.type != static_cast<uint16_t>(MsgType::kProbePing) || !ping.payload.empty()) {
      throw ProtocolViolation("probe: expected an empty PROBE_PING");
    }
    write_frame(s, ping.type, {}, Deadline::after(stall_timeout_s_), &stop_);
  }
  ProbeResultMsg result = count_window(s, start.window_ms);
  write_frame(s, static_cast<uint16_t>(MsgType::kProbeResult), result.encode(),
              Deadline::after(stall_timeout_s_), &stop_);
  drain_until_closed(s);
  return start.round;
}

ProbeResultMsg LinkProbeServer::count_window(Socket& s, uint32_t window_ms) {
  ProbeResultMsg result;
  std::vector<uint8_t> buf(kProbeBufferBytes);
  uint64_t window_end_us = 0;  // set by the first byte
  bool in_tail = false;
  while (window_ms > 0) {
    Deadline wait = Deadline::after(stall_timeout_s_);
    if (result.bytes > 0) {
      uint64_t now = steady_us();
      if (now >= window_end_us) break;
      wait = Deadline::after(std::min(stall_timeout_s_, (window_end_us - now) * 1e-6));
    }
    if (!wait_ready(s.fd(), POLLIN, wait, &stop_)) {
      if (result.bytes > 0) continue;  // the window's end: checked above
      throw PeerFailure("probe: no bytes within the stall timeout");
    }
    size_t k = s.recv_some(buf.data(), buf.size(), Deadline::after(stall_timeout_s_), &stop_);
    if (k == 0) break;  // the prober stopped early: what came is the figure
    uint64_t now = steady_us();
    if (result.bytes == 0) {
      result.first_us = now;
      window_end_us = now + uint64_t{window_ms} * 1000;
      result.tail_from_us = now + uint64_t{window_ms} * 750;  // the last quarter
    }
    result.last_us = now;
    result.bytes += k;
    if (in_tail) {
      result.tail_bytes += k;
    } else if (now >= result.tail_from_us) {
      // The tail's clock starts at its first read, whose bytes are left
      // out: they may have arrived before it (a reader that lags on busy
      // cores); counted, they overrated 100 Mbit/s paths by up to 47 %.
      in_tail = true;
      result.tail_from_us = now;
    }
  }
  return result;
}

void LinkProbeServer::drain_until_closed(Socket& s) {
  // The prober sends until it has our answer, then resets the connection;
  // bounded, so that no prober holds a thread here for long.
  Deadline give_up = Deadline::after(stall_timeout_s_);
  std::vector<uint8_t> buf(kProbeBufferBytes);
  try {
    while (!give_up.expired() && s.recv_some(buf.data(), buf.size(), give_up, &stop_) > 0) {
    }
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kCancelled) throw;  // closing: not the prober's end
  }
}

bool LinkProbeServer::wait_probe(uint64_t from, uint64_t epoch, uint32_t round,
                                 const Deadline& deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    auto it = ended_.find({from, epoch, round});
    if (it != ended_.end() && it->second.streams_ended >= it->second.streams) return true;
    if (closed_ || deadline.expired()) return false;
    cv_.wait_for(lock, std::chrono::milliseconds(deadline.remaining_ms(50)));
  }
}

void LinkProbeServer::join_finished() {
  for (auto it = conns_.begin(); it != conns_.end();) {
    if (!it->finished) {
      ++it;
      continue;
    }
    if (it->thread.joinable()) it->thread.join();
    it = conns_.erase(it);
  }
}

void LinkProbeServer::close() {
  std::list<Connection> ending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    closed_ = true;
    stop_.cancel();
    for (Connection& c : conns_) c.sock.shutdown_both();
    ending.splice(ending.end(), conns_);
    cv_.notify_all();
  }
  for (Connection& c : ending) {
    if (c.thread.joinable()) c.thread.join();
  }
}

}  // namespace pccl
