// A peer's connection to the master. A reader thread owns the receive side:
// topology updates go to a mailbox the user thread waits on; pending notices
// set a flag. Losing the master wakes every waiter with MasterUnreachable.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "common/canceller.h"
#include "common/deadline.h"
#include "protocol/messages.h"
#include "transport/socket.h"

namespace pccl {

class MasterLink {
 public:
  MasterLink() = default;
  ~MasterLink() { close(); }
  MasterLink(const MasterLink&) = delete;
  MasterLink& operator=(const MasterLink&) = delete;

  // Connects to the master. Throws MasterUnreachable.
  void open(const std::string& host, uint16_t port, const Deadline& deadline,
            const Canceller* cancel);
  // Sends HELLO, returns our peer id, starts the reader thread.
  uint64_t register_peer(const HelloMsg& hello, const Deadline& deadline);
  void send_vote(uint64_t epoch, const Deadline& deadline);
  // Waits for a topology with epoch > after_epoch; returns the newest queued.
  // Returns false on deadline. Throws MasterUnreachable / Cancelled.
  bool wait_topology(uint64_t after_epoch, const Deadline& deadline, TopologyMsg* out);
  bool pending_seen() const { return pending_seen_.load(std::memory_order_acquire); }
  std::string local_ip() const { return local_ip_; }
  void close();

 private:
  void reader_loop();
  void fail(const std::string& reason);

  Socket sock_;
  std::string local_ip_;
  std::string where_;
  Canceller stop_;
  const Canceller* user_cancel_ = nullptr;
  std::thread reader_;
  std::mutex write_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<TopologyMsg> topologies_;
  std::string failure_;  // non-empty once the master is gone
  std::atomic<bool> pending_seen_{false};
};

}  // namespace pccl
