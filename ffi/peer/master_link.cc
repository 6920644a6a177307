#include "peer/master_link.h"

#include <poll.h>

#include <chrono>

#include "common/errors.h"
#include "common/log.h"
#include "security/handshake_io.h"
#include "transport/frame.h"

namespace pccl {
namespace {

constexpr double kHeartbeatIntervalS = 1.0;
constexpr size_t kMaxQueuedSyncMessages = 8;  // a peer waits for one at a time

}  // namespace

void MasterLink::open(const std::string& host, uint16_t port, double silence_timeout_s,
                      const Deadline& deadline, const Canceller* closing, Canceller* interrupt,
                      const std::string& secret) {
  secret_ = Secret(secret);
  closing_ = closing;
  interrupt_ = interrupt;
  silence_timeout_s_ = silence_timeout_s;
  host_ = host;
  port_ = port;
  where_ = host + ":" + std::to_string(port);
  try {
    sock_ = Socket::connect_to(host, port, deadline, closing);
    local_ip_ = sock_.local_ip();
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kCancelled) throw;
    throw MasterUnreachable("master " + where_ + " unreachable: " + e.what());
  }
  try {
    authenticate(sock_, deadline, closing);
  } catch (const PcclError&) {
    sock_.close();
    throw;
  }
}

void MasterLink::authenticate(Socket& s, const Deadline& deadline, const Canceller* cancel) {
  try {
    client_handshake(s, secret_, kAuthContextMaster, deadline, cancel);
  } catch (const PcclError& e) {
    switch (e.kind()) {
      case ErrorKind::kCancelled: throw;
      case ErrorKind::kPeerFailure:  // closed or silent before a verdict
        throw MasterUnreachable("master " + where_ + " unreachable: " + e.what());
      case ErrorKind::kProtocol:
        throw ProtocolViolation("authentication with master " + where_ + " failed: " + e.what());
      default:
        throw PcclError("authentication with master " + where_ + " failed: " + e.what());
    }
  }
}

uint64_t MasterLink::hello_exchange(Socket& s, const HelloMsg& hello, const Deadline& deadline) {
  write_frame(s, static_cast<uint16_t>(MsgType::kHello), hello.encode(), deadline, &stop_);
  Frame f = read_frame(s, kMaxControlPayload, deadline, &stop_);
  if (f.type == static_cast<uint16_t>(MsgType::kError)) {
    throw PcclError("master " + where_ + " refused registration: " +
                    ErrorMsg::decode(f.payload).message);
  }
  if (f.type != static_cast<uint16_t>(MsgType::kWelcome)) {
    throw ProtocolViolation("expected WELCOME from master " + where_);
  }
  WelcomeMsg welcome = WelcomeMsg::decode(f.payload);
  note_epoch(welcome.group_epoch);
  return welcome.peer_id;
}

uint64_t MasterLink::register_peer(const HelloMsg& hello, const Deadline& deadline) {
  try {
    hello_ = hello;
    uint64_t id = hello_exchange(sock_, hello, deadline);
    peer_id_ = id;
    registrations_ = 1;
    reader_ = std::thread([this] { reader_loop(); });
    return id;
  } catch (const PcclError& e) {
    sock_.close();
    if (e.kind() == ErrorKind::kCancelled) throw Cancelled("communicator closed");
    if (e.kind() == ErrorKind::kPeerFailure) {
      throw MasterUnreachable("master " + where_ + " unreachable: " + e.what());
    }
    throw;
  }
}

void MasterLink::send_frame(MsgType type, const std::vector<uint8_t>& payload,
                            const Deadline& deadline) {
  std::lock_guard<std::mutex> lock(write_mu_);
  write_frame(sock_, static_cast<uint16_t>(type), payload, deadline, &stop_);
}

PcclError MasterLink::lost_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (evicted_) {
    // Jitted functions keep the communicator they were traced with: a new
    // one alone does not help them, and nothing else would say so.
    return PcclError("this peer was removed from the run (" + failure_ +
                     "); create a new Communicator to rejoin, and re-jit every function that "
                     "captured this one (jitted code keeps the communicator it was traced with)");
  }
  return MasterUnreachable(failure_);
}

void MasterLink::send_vote(uint64_t epoch, const std::vector<uint64_t>& unreachable,
                           const Deadline& deadline) {
  send_control(MsgType::kVote, VoteMsg{epoch, unreachable}.encode(), "voting", deadline);
}

void MasterLink::send_control(MsgType type, const std::vector<uint8_t>& payload, const char* doing,
                              const Deadline& deadline) {
  if (failed()) throw lost_error();
  try {
    send_frame(type, payload, deadline);
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kCancelled) throw Cancelled("communicator closed");
    fail(std::string("lost the master while ") + doing + ": " + e.what());
    throw lost_error();
  }
}

MasterLink::PlanWait MasterLink::wait_link_plan(uint64_t epoch, uint64_t registration,
                                                const Deadline& deadline, LinkPlanMsg* out) {
  PlanWait outcome = PlanWait::kTimeout;
  wait_mailbox(deadline, [&] {
    while (!link_plans_.empty()) {
      LinkPlanMsg plan = std::move(link_plans_.front());
      link_plans_.pop_front();
      if (plan.epoch == epoch) {
        *out = std::move(plan);
        outcome = PlanWait::kPlan;
        return true;
      }  // else: a plan for a ring we no longer have
    }
    for (const ReceivedTopology& t : topologies_) {
      if (t.topology.epoch > epoch) {
        outcome = PlanWait::kTopology;  // left queued for wait_topology()
        return true;
      }
    }
    return false;
  }, registration, "optimize_topology()");
  return outcome;
}


void MasterLink::check_registration(uint64_t registration, const char* operation) const {
  if (registration == 0 || registrations() == registration) return;
  throw PeerFailure("the master " + where_ + " restarted during this " + operation +
                    ", which lost its round: call update_topology() to rejoin the run, then " +
                    (std::string(operation) == kSyncOperation ? "sync again" : "try again"));
}

template <typename Found>
bool MasterLink::wait_mailbox(const Deadline& deadline, Found found, uint64_t registration,
                              const char* operation) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (found()) return true;
    // reconnect() bumps registrations under mu_ and notifies: seen at once.
    if (registration != 0 && registrations() != registration) {
      lock.unlock();
      check_registration(registration, operation);
    }
    if (!failure_.empty()) {
      lock.unlock();
      throw lost_error();
    }
    if (closing_ != nullptr && closing_->cancelled()) throw Cancelled("communicator closed");
    if (deadline.expired()) return false;
    cv_.wait_for(lock, std::chrono::milliseconds(deadline.remaining_ms(200)));
  }
}

bool MasterLink::wait_topology(uint64_t after_epoch, const Deadline& deadline,
                               ReceivedTopology* out) {
  return wait_mailbox(deadline, [&] {
    while (!topologies_.empty() && topologies_.front().topology.epoch <= after_epoch) {
      topologies_.pop_front();
    }
    if (topologies_.empty()) return false;
    *out = topologies_.back();
    topologies_.clear();
    return true;
  });
}

void MasterLink::send_sync(MsgType type, const std::vector<uint8_t>& payload,
                           uint64_t registration, const Deadline& deadline) {
  if (failed()) throw lost_error();
  check_registration(registration);
  try {
    send_frame(type, payload, deadline);
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kCancelled) throw Cancelled("communicator closed");
    fail(std::string("lost the master during a shared-state sync: ") + e.what());
    throw lost_error();
  }
}

bool MasterLink::wait_sync_plan(uint64_t request_id, uint64_t registration,
                                const Deadline& deadline, SyncPlanMsg* out) {
  return wait_mailbox(deadline, [&] {
    while (!sync_plans_.empty()) {
      SyncPlanMsg plan = std::move(sync_plans_.front());
      sync_plans_.pop_front();
      if (plan.request_id == request_id) {
        *out = std::move(plan);
        return true;
      }  // else: the answer to a request we withdrew
    }
    return false;
  }, registration);
}

bool MasterLink::wait_sync_complete(uint64_t round, uint64_t registration,
                                    const Deadline& deadline, SyncCompleteMsg* out) {
  return wait_mailbox(deadline, [&] {
    while (!sync_outcomes_.empty()) {
      SyncCompleteMsg done = std::move(sync_outcomes_.front());
      sync_outcomes_.pop_front();
      if (done.round == round) {
        *out = std::move(done);
        return true;
      }
    }
    return false;
  }, registration);
}

void MasterLink::reader_loop() {
  for (;;) {
    serve();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (evicted_) return;  // dropped for cause: rejoining needs a new Communicator
    }
    if (stop_.cancelled() || !reconnect()) return;
  }
}

bool MasterLink::reconnect() {
  std::string last_refusal;
  while (!stop_.cancelled()) {
    if (stop_.cancelled() || wait_ready(stop_.fd(), POLLIN, Deadline::after(0.5), nullptr)) {
      return false;
    }
    try {
      Socket s = Socket::connect_to(host_, port_, Deadline::after(2.0), &stop_);
      authenticate(s, Deadline::after(silence_timeout_s_), &stop_);
      HelloMsg hello = hello_;
      hello.resume_peer_id = peer_id_.load();
      hello.resume_epoch = epoch_.load();
      hello.has_resume_revision = has_run_revision_;
      hello.resume_revision = run_revision_;
      uint64_t id = hello_exchange(s, hello, Deadline::after(silence_timeout_s_));
      std::lock_guard<std::mutex> write(write_mu_);
      std::lock_guard<std::mutex> lock(mu_);
      sock_ = std::move(s);
      peer_id_ = id;
      failure_.clear();
      topologies_.clear();
      sync_plans_.clear();
      sync_outcomes_.clear();
      pending_seen_ = false;
      registrations_.fetch_add(1, std::memory_order_acq_rel);
      cv_.notify_all();
      PCCL_LOG(kWarn, "re-registered with master " << where_ << " as peer " << id);
      return true;
    } catch (const PcclError& e) {
      if (e.kind() == ErrorKind::kCancelled) return false;
      if (e.kind() == ErrorKind::kMasterUnreachable || e.kind() == ErrorKind::kPeerFailure) {
        PCCL_LOG(kDebug, "master " << where_ << " still unreachable: " << e.what());
      } else if (last_refusal != e.what()) {
        // A restarted master that refuses us (e.g. another secret) is a
        // configuration problem: say so once, and keep trying.
        last_refusal = e.what();
        PCCL_LOG(kWarn, "re-registration with master " << where_ << " refused: " << e.what());
      }
    }
  }
  return false;
}

void MasterLink::serve() {
  using Clock = Deadline::Clock;
  auto last_heard = Clock::now();
  auto last_sent = Clock::now() - std::chrono::seconds(10);
  auto interval = std::chrono::duration<double>(kHeartbeatIntervalS);
  auto silence = std::chrono::duration<double>(silence_timeout_s_);
  while (!stop_.cancelled()) {
    try {
      if (Clock::now() - last_sent >= interval) {
        send_frame(MsgType::kHeartbeat, counters_ ? counters_().encode() : std::vector<uint8_t>{},
                   Deadline::after(silence_timeout_s_));
        last_sent = Clock::now();
      }
      if (!wait_ready(sock_.fd(), POLLIN, Deadline::after(kHeartbeatIntervalS / 2), &stop_)) {
        if (Clock::now() - last_heard > silence) {
          fail("master " + where_ + " silent for " + std::to_string(silence_timeout_s_) + " s");
          return;
        }
        continue;
      }
      // A frame has started arriving: the rest must follow promptly.
      Frame f = read_frame(sock_, kMaxControlPayload, Deadline::after(silence_timeout_s_), &stop_);
      last_heard = Clock::now();
      handle(f);
      if (failed()) return;
    } catch (const PcclError& e) {
      if (e.kind() == ErrorKind::kCancelled) return;
      // The master may have said why it closed us (e.g. we were frozen and
      // got dropped): that frame can still sit in our receive buffer.
      drain_last_words();
      fail(std::string("lost connection to master ") + where_ + ": " + e.what());
      return;
    }
  }
}

void MasterLink::drain_last_words() {
  try {
    while (!failed() && wait_ready(sock_.fd(), POLLIN, Deadline::after(0.05), &stop_)) {
      handle(read_frame(sock_, kMaxControlPayload, Deadline::after(0.2), &stop_));
    }
  } catch (const PcclError&) {
    // nothing (more) to read: the caller reports the original error
  }
}

void MasterLink::handle(const Frame& f) {
  switch (static_cast<MsgType>(f.type)) {
    case MsgType::kTopology: {
      TopologyMsg topo = TopologyMsg::decode(f.payload);
      note_epoch(topo.epoch);  // known to be used even if never applied
      run_world_.store(static_cast<int>(topo.total_world_size), std::memory_order_release);
      pending_seen_.store(topo.more_pending != 0, std::memory_order_release);
      std::lock_guard<std::mutex> lock(mu_);
      topologies_.push_back({std::move(topo), drops_seen_.load()});
      cv_.notify_all();
      return;
    }
    case MsgType::kPendingNotice:
      pending_seen_.store(true, std::memory_order_release);
      return;
    case MsgType::kSyncPlan: {
      SyncPlanMsg plan = SyncPlanMsg::decode(f.payload);
      if (!plan.failed) {
        last_plan_round_ = plan.round;
        last_plan_revision_ = plan.revision;
        if (plan.settled) note_revision(plan.revision);
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (sync_plans_.size() >= kMaxQueuedSyncMessages) sync_plans_.pop_front();
      sync_plans_.push_back(std::move(plan));
      cv_.notify_all();
      return;
    }
    case MsgType::kLinkPlan: {
      LinkPlanMsg plan = LinkPlanMsg::decode(f.payload);
      std::lock_guard<std::mutex> lock(mu_);
      if (link_plans_.size() >= kMaxQueuedSyncMessages) link_plans_.pop_front();
      link_plans_.push_back(std::move(plan));
      cv_.notify_all();
      return;
    }
    case MsgType::kSyncComplete: {
      SyncCompleteMsg done = SyncCompleteMsg::decode(f.payload);
      if (done.ok && done.round == last_plan_round_) note_revision(last_plan_revision_);
      std::lock_guard<std::mutex> lock(mu_);
      if (sync_outcomes_.size() >= kMaxQueuedSyncMessages) sync_outcomes_.pop_front();
      sync_outcomes_.push_back(std::move(done));
      cv_.notify_all();
      return;
    }
    case MsgType::kHeartbeat:
      if (!f.payload.empty()) {
        run_world_.store(static_cast<int>(HeartbeatMsg::decode(f.payload).total_world_size),
                         std::memory_order_release);
      }
      return;
    case MsgType::kPeerDropped: {
      PeerDroppedMsg m = PeerDroppedMsg::decode(f.payload);
      {
        std::lock_guard<std::mutex> lock(mu_);
        last_drop_ = "peer " + std::to_string(m.peer_id) + " left the run (" + m.reason + ")";
      }
      drops_seen_.fetch_add(1, std::memory_order_acq_rel);
      if (interrupt_ != nullptr) interrupt_->cancel();
      return;
    }
    case MsgType::kError: {
      std::string message = ErrorMsg::decode(f.payload).message;
      if (message.rfind("dropped by the master", 0) == 0) {
        std::lock_guard<std::mutex> lock(mu_);
        evicted_ = true;
      }
      fail("master " + where_ + ": " + message);
      return;
    }
    default:
      fail("unexpected message type " + std::to_string(f.type) + " from master " + where_);
  }
}

void MasterLink::note_revision(uint64_t revision) {
  // The master's word, never decreasing: a later round cannot lower it.
  if (has_run_revision_ && revision <= run_revision_) return;
  has_run_revision_ = true;
  run_revision_ = revision;
}

void MasterLink::fail(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.empty()) return;
    failure_ = reason;
    cv_.notify_all();
  }
  PCCL_LOG(kWarn, reason);
  if (interrupt_ != nullptr) interrupt_->cancel();
}

bool MasterLink::failed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !failure_.empty();
}

std::string MasterLink::failure() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

std::string MasterLink::last_drop() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_drop_;
}

void MasterLink::close() {
  stop_.cancel();
  if (reader_.joinable()) reader_.join();
  sock_.close();
}

}  // namespace pccl
