#include "peer/master_link.h"

#include <poll.h>

#include "common/errors.h"
#include "common/log.h"
#include "transport/frame.h"

namespace pccl {

void MasterLink::open(const std::string& host, uint16_t port, const Deadline& deadline,
                      const Canceller* cancel) {
  user_cancel_ = cancel;
  where_ = host + ":" + std::to_string(port);
  try {
    sock_ = Socket::connect_to(host, port, deadline, cancel);
    local_ip_ = sock_.local_ip();
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kCancelled) throw;
    throw MasterUnreachable("master " + where_ + " unreachable: " + e.what());
  }
}

uint64_t MasterLink::register_peer(const HelloMsg& hello, const Deadline& deadline) {
  try {
    write_frame(sock_, static_cast<uint16_t>(MsgType::kHello), hello.encode(), deadline,
                user_cancel_);
    Frame f = read_frame(sock_, kMaxControlPayload, deadline, user_cancel_);
    if (f.type == static_cast<uint16_t>(MsgType::kError)) {
      throw PcclError("master " + where_ + " refused registration: " +
                      ErrorMsg::decode(f.payload).message);
    }
    if (f.type != static_cast<uint16_t>(MsgType::kWelcome)) {
      throw ProtocolViolation("expected WELCOME from master " + where_);
    }
    uint64_t id = WelcomeMsg::decode(f.payload).peer_id;
    reader_ = std::thread([this] { reader_loop(); });
    return id;
  } catch (const PcclError& e) {
    sock_.close();
    if (e.kind() == ErrorKind::kPeerFailure) {
      throw MasterUnreachable("master " + where_ + " unreachable: " + e.what());
    }
    throw;
  }
}

void MasterLink::send_vote(uint64_t epoch, const Deadline& deadline) {
  std::lock_guard<std::mutex> lock(write_mu_);
  {
    std::lock_guard<std::mutex> state(mu_);
    if (!failure_.empty()) throw MasterUnreachable(failure_);
  }
  try {
    write_frame(sock_, static_cast<uint16_t>(MsgType::kVote), VoteMsg{epoch}.encode(), deadline,
                user_cancel_);
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kCancelled) throw;
    throw MasterUnreachable(std::string("lost the master while voting: ") + e.what());
  }
}

bool MasterLink::wait_topology(uint64_t after_epoch, const Deadline& deadline, TopologyMsg* out) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    while (!topologies_.empty() && topologies_.front().epoch <= after_epoch) topologies_.pop_front();
    if (!topologies_.empty()) {
      *out = topologies_.back();
      topologies_.clear();
      return true;
    }
    if (!failure_.empty()) throw MasterUnreachable(failure_);
    if (user_cancel_ != nullptr && user_cancel_->cancelled()) throw Cancelled("closed while waiting");
    if (deadline.expired()) return false;
    cv_.wait_for(lock, std::chrono::milliseconds(deadline.remaining_ms(200)));
  }
}

void MasterLink::reader_loop() {
  while (!stop_.cancelled()) {
    try {
      if (!wait_ready(sock_.fd(), POLLIN, Deadline::after(1.0), &stop_)) continue;
      // A frame has started arriving: the rest must follow promptly.
      Frame f = read_frame(sock_, kMaxControlPayload, Deadline::after(30.0), &stop_);
      switch (static_cast<MsgType>(f.type)) {
        case MsgType::kTopology: {
          TopologyMsg topo = TopologyMsg::decode(f.payload);
          pending_seen_.store(topo.more_pending != 0, std::memory_order_release);
          std::lock_guard<std::mutex> lock(mu_);
          topologies_.push_back(std::move(topo));
          cv_.notify_all();
          break;
        }
        case MsgType::kPendingNotice:
          pending_seen_.store(true, std::memory_order_release);
          break;
        case MsgType::kError:
          fail("master closed the connection: " + ErrorMsg::decode(f.payload).message);
          return;
        default:
          fail("unexpected message type " + std::to_string(f.type) + " from master");
          return;
      }
    } catch (const PcclError& e) {
      if (e.kind() == ErrorKind::kCancelled) return;
      fail(std::string("lost connection to master: ") + e.what());
      return;
    }
  }
}

void MasterLink::fail(const std::string& reason) {
  PCCL_LOG(kWarn, reason);
  std::lock_guard<std::mutex> lock(mu_);
  if (failure_.empty()) failure_ = reason;
  cv_.notify_all();
}

void MasterLink::close() {
  stop_.cancel();
  if (reader_.joinable()) reader_.join();
  sock_.close();
}

}  // namespace pccl
