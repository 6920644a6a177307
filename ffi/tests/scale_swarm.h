// A master and N engine peers in one process, over 127.0.0.1, driven through
// the membership protocol one phase at a time (scale_bench): the join of all
// N, topology checks with nothing to change, a small exact all-reduce, and the
// loss of one peer. Each phase runs one thread per peer, released together
// (run_together.h), and reports seconds from the release to the last peer done.
#pragma once
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "master/master.h"
#include "peer/communicator.h"

namespace pccl_bench {

struct JoinFigures {
  double seconds = 0;   // peer 0's connect() until every peer is on the N-ring
  uint64_t epochs = 0;  // topologies the master handed out on the way
};

struct DropFigures {
  // The victim's close() until every survivor's update_topology() returned
  // on the ring of N-1 with its links up.
  double total_s = 0;
  // close() until the first survivor received the new topology: the master
  // saw the EOF, told the members, they failed their check and voted.
  double decision_s = 0;
  // The first survivor's receipt of the new topology until the last survivor
  // returned: every survivor opens its right link (TCP connect, the ring
  // handshake) and waits for its left one.
  double rebuild_s = 0;
  int failed_calls = 0;  // survivors' update_topology() calls that threw and were retried
};

class Swarm {
 public:
  // Starts the master; the peers are created but not connected. `tune` may
  // change the master's configuration first.
  Swarm(int n, double timeout_s,
        const std::function<void(pccl::MasterConfig&)>& tune = nullptr);
  ~Swarm();  // closes every peer (in parallel), then stops the master
  Swarm(const Swarm&) = delete;
  Swarm& operator=(const Swarm&) = delete;

  JoinFigures join();
  // update_topology() on every peer at once with nothing pending: the check
  // (every member's header around the ring), no vote. One figure per round.
  std::vector<double> check_rounds(int rounds);
  // all_reduce of `count` float32 on every live peer at once; throws unless
  // the sum is exact. Seconds from the release to the last peer done.
  double exact_all_reduce(size_t count);
  // Closes one peer's communicator without any goodbye (its sockets simply
  // close: to the master and its neighbours this is the EOF of a crashed
  // process) while the others call update_topology() until they are N-1.
  DropFigures drop_one();
  // optimize_topology() on every live peer at once; seconds until the last
  // returned. Throws if any failed or the members do not agree on the ring.
  double optimize();
  std::string master_status() const { return master_.status_json(); }

 private:
  pccl::Communicator& peer(int i) { return *peers_[i]; }
  std::vector<int> live() const;
  // A peer thread failed: remember why and close every peer, so that the
  // others' blocking calls end instead of waiting out their timeouts.
  void fail(int i, const std::exception& e);
  void check_failed() const;

  int n_;
  double timeout_s_;
  pccl::Master master_;
  std::vector<std::unique_ptr<pccl::Communicator>> peers_;
  std::vector<bool> dropped_;
  std::atomic<bool> failed_{false};
  mutable std::mutex error_mu_;
  std::string error_;
};

}  // namespace pccl_bench
