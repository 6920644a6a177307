#include "state/state_server.h"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <thread>

#include "common/errors.h"
#include "common/log.h"
#include "protocol/shared_state_messages.h"
#include "transport/frame.h"

namespace pccl {
namespace {

constexpr size_t kMaxServingConnections = 64;
constexpr uint64_t kMaxRangeBytes = 64u << 20;  // fetchers ask for a few MiB at a time
constexpr uint32_t kMaxFetchFrame = 4 + kMaxFetchRanges * 20;

// A test-only fault injection count (state_server.h); 0 when unset.
int64_t fault_count_from_env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return 0;
  int64_t n = std::strtoll(v, nullptr, 10);
  if (n <= 0) return 0;
  PCCL_LOG(kWarn, "test fault injection on: " << name << "=" << n);
  return n;
}

}  // namespace

StateServer::StateServer(double stall_timeout_s)
    : stall_timeout_s_(stall_timeout_s),
      corrupt_budget_(fault_count_from_env("JAX_PCCL_TEST_CORRUPT_SERVED_RANGES")),
      kill_after_(fault_count_from_env("JAX_PCCL_TEST_KILL_AFTER_SERVED_RANGES")),
      serve_delay_ms_(fault_count_from_env("JAX_PCCL_TEST_SERVE_DELAY_MS")) {}

void StateServer::publish(std::vector<ConstSpan> leaves) {
  std::lock_guard<std::mutex> lock(mu_);
  leaves_ = std::move(leaves);
  published_ = true;
  served_bytes_ = 0;
}

uint64_t StateServer::unpublish() {
  std::list<Connection> ending;
  uint64_t served;
  {
    std::lock_guard<std::mutex> lock(mu_);
    published_ = false;
    leaves_.clear();
    // Wake every serving thread now: a send blocked on a slow fetcher fails
    // at once instead of holding the caller's buffers.
    for (Connection& c : conns_) c.sock.shutdown_both();
    ending.splice(ending.end(), conns_);
  }
  for (Connection& c : ending) {
    if (c.thread.joinable()) c.thread.join();
  }
  // Only now: a thread counts a range after its last byte left, which can
  // be after the fetcher already has it.
  std::lock_guard<std::mutex> lock(mu_);
  served = served_bytes_;
  served_bytes_ = 0;
  return served;
}

void StateServer::accept(Socket sock, uint64_t peer_id) {
  std::lock_guard<std::mutex> lock(mu_);
  join_finished();
  if (closed_ || !published_) {
    PCCL_LOG(kInfo, "state: dropping fetch link from peer " << peer_id << ": no sync open");
    return;
  }
  if (conns_.size() >= kMaxServingConnections) {
    PCCL_LOG(kWarn, "state: dropping fetch link from peer " << peer_id
                                                          << ": too many fetchers");
    return;
  }
  conns_.emplace_back();
  Connection* c = &conns_.back();
  c->sock = std::move(sock);
  c->peer_id = peer_id;
  c->thread = std::thread([this, c] { serve(c); });
}

void StateServer::join_finished() {
  for (auto it = conns_.begin(); it != conns_.end();) {
    if (!it->finished) {
      ++it;
      continue;
    }
    if (it->thread.joinable()) it->thread.join();
    it = conns_.erase(it);
  }
}

void StateServer::serve(Connection* c) {
  try {
    for (;;) {
      // A fetcher asks again as soon as its previous ranges arrived; silence
      // this long means it is done or gone.
      Frame f = read_frame(c->sock, kMaxFetchFrame, Deadline::after(stall_timeout_s_), &stop_);
      if (f.type != static_cast<uint16_t>(MsgType::kStateFetch)) {
        throw ProtocolViolation("expected STATE_FETCH, got frame type " + std::to_string(f.type));
      }
      for (const StateRange& range : StateFetchMsg::decode(f.payload).ranges) serve_range(c, range);
    }
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kProtocol) {
      PCCL_LOG(kWarn, "state: dropping fetch link from peer " << c->peer_id << ": " << e.what());
    } else {
      PCCL_LOG(kDebug, "state: fetch link from peer " << c->peer_id << " ended: " << e.what());
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  c->finished = true;
}

void StateServer::serve_range(Connection* c, const StateRange& range) {
  const uint8_t* data = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    bool valid = published_ && range.leaf < leaves_.size() && range.length <= kMaxRangeBytes &&
                 range.offset <= leaves_[range.leaf].size &&
                 range.length <= leaves_[range.leaf].size - range.offset;
    if (valid) data = leaves_[range.leaf].data + range.offset;
  }
  if (serve_delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(serve_delay_ms_));
  Deadline deadline = Deadline::after(stall_timeout_s_);
  StateDataMsg head{range, static_cast<uint8_t>(data != nullptr ? 1 : 0)};
  write_frame(c->sock, static_cast<uint16_t>(MsgType::kStateData), head.encode(), deadline, &stop_);
  if (data == nullptr || range.length == 0) return;
  if (take_corruption()) {
    uint8_t flipped = data[0] ^ 0x01;
    c->sock.send_all(&flipped, 1, deadline, &stop_);
    c->sock.send_all(data + 1, range.length - 1, deadline, &stop_);
  } else {
    c->sock.send_all(data, range.length, deadline, &stop_);
  }
  std::lock_guard<std::mutex> lock(mu_);
  served_bytes_ += range.length;
  if (kill_after_ > 0 && --kill_after_ == 0) std::raise(SIGKILL);
}

bool StateServer::take_corruption() {
  std::lock_guard<std::mutex> lock(mu_);
  if (corrupt_budget_ <= 0) return false;
  --corrupt_budget_;
  return true;
}

void StateServer::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  stop_.cancel();
  unpublish();
}

}  // namespace pccl
