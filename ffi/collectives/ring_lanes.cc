#include "collectives/ring_lanes.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstdint>
#include <string>

#include "collectives/ring_io.h"
#include "common/errors.h"

namespace pccl {
namespace {

// A partial chunk leaves only in pieces of at least this much, so a sender
// that keeps up with the reduction still hands TCP big writes.
constexpr size_t kMinPartialSend = 64 << 10;

// A receive lane sleeps until this much of its chunk has arrived (or the
// rest of the chunk, if less). On a long-fat link TCP hands over data in
// skbs of a few tens of KiB, and waking for each costs a poll, a recv and a
// context switch: per byte, more CPU than the copy. That CPU competes with
// the compute the collective is meant to hide behind. The piece is small
// against a chunk (>= 256 KiB, usually 1 MiB), so forwarding waits on it
// only briefly.
constexpr size_t kRecvLowat = 256 << 10;
// ... but never longer than this: a slow lane (a lossy link crawls at a few
// Mbit/s per connection) is read at least this often, so forwarding waits
// for a short piece no longer than it did without the threshold.
constexpr int kLowatPatienceMs = 10;

// Test-only fault injection: JAX_PCCL_TEST_DIE_IN_COLLECTIVE=N makes this
// process SIGKILL itself in the middle of its N-th ring collective (once it
// has sent some of its bytes, not all: its right neighbour still waits for
// the rest), so that tests can kill a peer mid-collective deterministically.
// Read once; 0 when unset.
int64_t die_in_collective() {
  static const int64_t n = [] {
    const char* v = std::getenv("JAX_PCCL_TEST_DIE_IN_COLLECTIVE");
    return v == nullptr ? int64_t{0} : std::max<int64_t>(0, std::strtoll(v, nullptr, 10));
  }();
  return n;
}

std::atomic<int64_t> g_collectives_run{0};

}  // namespace

LaneLoop::LaneLoop(const RingPeers& ring, const RingOptions& options, const StripeLayout& layout,
                   LaneCodec& codec)
    : opt_(options), layout_(layout), codec_(codec) {
  if (ring.right.empty() || ring.left.empty()) throw PcclError("ring all-reduce without links");
  for (size_t i = 0; i < ring.right.size(); ++i) {
    SendLane lane;
    lane.fd = ring.right[i];
    lane.at = layout.first(i, true);
    send_.push_back(lane);
  }
  for (size_t i = 0; i < ring.left.size(); ++i) {
    RecvLane lane;
    lane.fd = ring.left[i];
    lane.at = layout.first(i, false);
    recv_.push_back(lane);
  }
  fds_.reserve(send_.size() + recv_.size() + 1);
  owners_.reserve(fds_.capacity());
}

LaneLoop::~LaneLoop() {
  // The links outlive the collective: other readers expect every byte to wake them.
  for (RecvLane& l : recv_) {
    if (l.lowat != 1) ring_io::set_recv_lowat(l.fd, 1);
  }
}

RingTraffic LaneLoop::run() {
  const bool die_here = die_in_collective() > 0 && ++g_collectives_run == die_in_collective();
  Deadline stall = Deadline::after(opt_.stall_timeout_s);
  while (!finished()) {
    if (opt_.closing != nullptr && opt_.closing->cancelled()) throw Cancelled("communicator closed");
    bool moved = false;
    // Receive first: absorbed bytes are what the sends below wait for.
    for (size_t i = 0; i < recv_.size(); ++i) moved |= serve_recv(i);
    for (size_t i = 0; i < send_.size(); ++i) moved |= serve_send(i);
    if (die_here && traffic_.bytes_sent > 0 && !sends_finished()) ::raise(SIGKILL);
    if (moved) stall = Deadline::after(opt_.stall_timeout_s);
    if (finished()) break;
    poll_lanes(moved, stall);
  }
  return traffic_;
}

bool LaneLoop::sends_finished() const {
  for (const SendLane& l : send_) {
    if (l.at.step < layout_.steps()) return false;
  }
  return true;
}

bool LaneLoop::finished() const {
  int steps = layout_.steps();
  for (const SendLane& l : send_) {
    if (l.at.step < steps) return false;
  }
  for (const RecvLane& l : recv_) {
    if (l.at.step < steps) return false;
  }
  return true;
}

size_t LaneLoop::wire_bytes(int segment, size_t c) const {
  return codec_.wire_bytes(layout_.chunk(segment, c));
}

size_t LaneLoop::absorbed(int step, size_t c) const {
  const RecvLane& l = recv_[c % recv_.size()];
  if (l.at.before(step, c)) return 0;
  if (l.at.step == step && l.at.chunk == c) return l.absorbed;
  return SIZE_MAX;
}

size_t LaneLoop::sendable(const SendLane& lane) const {
  int seg = layout_.send_segment(lane.at.step);
  size_t wire = wire_bytes(seg, lane.at.chunk);
  // Step k+1 sends the segment received at step k, once absorbed there.
  size_t ready = lane.at.step == 0 ? wire : std::min(wire, absorbed(lane.at.step - 1, lane.at.chunk));
  if (ready <= lane.sent) return 0;
  if (ready < wire && ready - lane.sent < kMinPartialSend) return 0;
  return ready;
}

bool LaneLoop::serve_recv(size_t i) {
  RecvLane& l = recv_[i];
  if (!l.ready || l.at.step >= layout_.steps()) return false;
  Segment chunk = layout_.chunk(layout_.recv_segment(l.at.step), l.at.chunk);
  size_t wire = codec_.wire_bytes(chunk);
  if (l.data == nullptr) l.data = codec_.recv_target(i, l.at.step, chunk);
  size_t want = std::min(wire - l.landed, ring_io::kMaxIoBytes);
  bool would_block = false;
  size_t k = ring_io::try_recv(l.fd, l.data + l.landed, want, &would_block);
  if (k < want) l.ready = false;  // drained: let poll say when more is there
  if (k == 0) return false;
  traffic_.bytes_received += k;
  l.landed += k;
  l.absorbed = codec_.absorb(i, l.at.step, chunk, l.absorbed, l.landed);
  if (l.absorbed == wire) {
    l.at = layout_.next(l.at, i, recv_.size(), false);
    l.data = nullptr;
    l.landed = l.absorbed = 0;
  }
  return true;
}

bool LaneLoop::serve_send(size_t i) {
  SendLane& l = send_[i];
  if (!l.ready || l.at.step >= layout_.steps()) return false;
  size_t ready = sendable(l);
  if (ready == 0) return false;
  Segment chunk = layout_.chunk(layout_.send_segment(l.at.step), l.at.chunk);
  if (l.data == nullptr) l.data = codec_.send_source(i, l.at.step, chunk);
  size_t want = std::min(ready - l.sent, ring_io::kMaxIoBytes);
  bool would_block = false;
  size_t k = ring_io::try_send(l.fd, l.data + l.sent, want, &would_block);
  if (k < want) l.ready = false;  // the socket buffer is full
  if (k == 0) return false;
  traffic_.bytes_sent += k;
  l.sent += k;
  if (l.sent == codec_.wire_bytes(chunk)) {
    l.at = layout_.next(l.at, i, send_.size(), true);
    l.data = nullptr;
    l.sent = 0;
  }
  return true;
}

void LaneLoop::on_interrupt(bool moved) {
  if (!interrupted_) return;
  if (moved) {
    interrupted_grace_ = Deadline::after(kInterruptGraceS);
    return;
  }
  if (interrupted_grace_.expired()) throw Cancelled("all_reduce interrupted");
}

void LaneLoop::set_wake_threshold(RecvLane& l) {
  Segment chunk = layout_.chunk(layout_.recv_segment(l.at.step), l.at.chunk);
  // Never more than the chunk still lacks: its sender may send nothing more
  // until this peer has forwarded what it has.
  size_t want = std::min(kRecvLowat, codec_.wire_bytes(chunk) - l.landed);
  if (want == l.lowat) return;
  if (ring_io::set_recv_lowat(l.fd, want)) {
    l.lowat = want;
  } else if (l.lowat != 1) {
    ring_io::set_recv_lowat(l.fd, 1);  // refused: keep it safe, wake on any byte
    l.lowat = 1;
  }
}

void LaneLoop::poll_lanes(bool moved, const Deadline& stall) {
  fds_.clear();
  owners_.clear();
  int steps = layout_.steps();
  bool holding = false;  // some lane may hold bytes below its wake threshold
  for (size_t i = 0; i < recv_.size(); ++i) {
    if (recv_[i].ready || recv_[i].at.step >= steps) continue;
    set_wake_threshold(recv_[i]);
    holding |= recv_[i].lowat > 1;
    fds_.push_back({recv_[i].fd, POLLIN, 0});
    owners_.push_back(static_cast<int>(i));
  }
  for (size_t i = 0; i < send_.size(); ++i) {
    if (send_[i].ready || send_[i].at.step >= steps || sendable(send_[i]) == 0) continue;
    fds_.push_back({send_[i].fd, POLLOUT, 0});
    owners_.push_back(-1 - static_cast<int>(i));
  }
  if (fds_.empty()) {
    if (!moved) throw PcclError("ring all-reduce: no lane can make progress (internal error)");
    return;
  }
  size_t lanes = fds_.size();
  // The interrupt is heard only while no lane moves: a neighbour that
  // finished and left (its drop notice races with its last bytes) must not
  // fail a collective whose data is all here; a dead one stops the bytes.
  if (!moved && !interrupted_ && opt_.cancel != nullptr) {
    fds_.push_back({opt_.cancel->fd(), POLLIN, 0});
  }
  int wait_ms = moved ? 0 : stall.remaining_ms(1000);
  if (interrupted_) wait_ms = std::min(wait_ms, interrupted_grace_.remaining_ms(1000));
  if (holding) wait_ms = std::min(wait_ms, kLowatPatienceMs);
  int rc = ::poll(fds_.data(), fds_.size(), wait_ms);
  if (rc < 0 && errno != EINTR) throw PeerFailure("poll failed in ring all-reduce");
  bool any_ready = false;
  for (size_t j = 0; j < lanes && rc > 0; ++j) {
    if (fds_[j].revents == 0) continue;  // errors and hang-ups count: the syscall reports them
    any_ready = true;
    int who = owners_[j];
    if (who >= 0) recv_[who].ready = true; else send_[-1 - who].ready = true;
  }
  on_interrupt(any_ready || moved);
  if (any_ready || moved) return;
  if (fds_.size() > lanes && (fds_[lanes].revents & POLLIN)) {
    interrupted_ = true;  // heard now; the grace period starts
    interrupted_grace_ = Deadline::after(kInterruptGraceS);
    return;
  }
  if (stall.expired()) {
    throw PeerFailure("ring all-reduce made no progress for " + std::to_string(opt_.stall_timeout_s) +
                      " s (a neighbour stalled)");
  }
  if (holding) {  // patience is up: take whatever the thresholds held back
    // (a lane without a threshold was woken by poll if it had anything)
    for (RecvLane& l : recv_) l.ready |= l.lowat > 1 && l.at.step < steps;
  }
}

}  // namespace pccl
