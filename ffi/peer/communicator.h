// One peer's membership in a run: its master link, its ring links, and the
// collectives it runs over them. Thread-safe: one operation at a time runs;
// close() from any thread cancels whatever is in flight.
#pragma once
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "common/canceller.h"
#include "common/dtype.h"
#include "common/errors.h"
#include "peer/master_link.h"
#include "peer/ring_links.h"
#include "protocol/messages.h"

namespace pccl {

struct CommunicatorConfig {
  std::string master_host = "127.0.0.1";
  uint16_t master_port = 0;
  uint32_t group = 0;
  double timeout_s = 30.0;     // bounds every network wait
  std::string advertise_host;  // how others reach us; empty: as the master sees us
};

// Shape information carried in the collective header, so that peers can
// name exactly what differs when they disagree.
struct LeafDescriptor {
  std::vector<int64_t> dims;
  uint32_t leaf_index = 0;
  uint32_t leaf_count = 1;
};

struct CommunicatorStats {
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t collectives_done = 0;
  uint64_t collectives_failed = 0;
  uint64_t topology_updates = 0;
};

class Communicator {
 public:
  explicit Communicator(CommunicatorConfig config);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  // Registers and waits until admitted (admit_timeout_s < 0: no limit).
  // On failure the communicator is closed (create a new one to retry).
  void connect(double admit_timeout_s);
  // Collective over the accepted peers of our group: admits pending peers,
  // drops dead ones, rebuilds the ring. Returns at once when there is nothing
  // to do (same answer on every peer, see are_peers_pending()).
  void update_topology();
  bool are_peers_pending() const { return consistent_pending_.load(); }

  int world_size() const { return total_world_.load(); }
  int group_world_size() const { return group_size_.load(); }
  int rank() const { return rank_.load(); }
  uint64_t peer_id() const { return peer_id_; }
  bool connected() const { return connected_.load(); }

  // Returns the number of peers that took part.
  int all_reduce(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                 const LeafDescriptor& leaf);

  CommunicatorStats stats() const;
  void close();

 private:
  void register_and_wait(double admit_timeout_s);
  void require_accepted() const;
  void apply_topology(const ReceivedTopology& received);
  void check_master() const;
  // Why the interrupt fired, as the error the caller should see.
  PcclError interruption() const;
  [[noreturn]] void rethrow_typed(const PcclError& e) const;
  CollectiveHeader make_header(CollectiveKind kind) const;
  // All-gathers headers around the ring and checks that everyone agrees.
  // Updates consistent_pending_. Throws Mismatch, or PeerFailure (ring broken).
  std::vector<CollectiveHeader> agree(const CollectiveHeader& mine);
  std::vector<CollectiveHeader> exchange_headers(const CollectiveHeader& mine);
  void check_agreement(const std::vector<CollectiveHeader>& all, const CollectiveHeader& mine);
  void mark_broken();

  CommunicatorConfig config_;
  Canceller cancel_;     // fired once, by close()
  Canceller interrupt_;  // fired by close(), master loss, drop notices; re-armed per epoch
  uint64_t drops_baseline_ = 0;  // drop notices already accounted for by our topology
  MasterLink master_;
  RingLinks links_;
  std::mutex op_mu_;  // serialises collectives and topology changes
  uint64_t peer_id_ = 0;
  uint64_t epoch_ = 0;
  uint64_t seq_ = 0;
  std::vector<RingMember> ring_;
  bool ring_broken_ = false;
  // Admitted in the current epoch and no collective yet. Such a newcomer's
  // first update_topology() is a local no-op: the peers that admitted it are
  // just leaving their own update_topology(), so both usual loop shapes
  // ({update; step} and {step; update}) line up without special cases.
  bool fresh_ = false;
  std::atomic<bool> connected_{false};
  std::atomic<bool> closed_{false};
  std::atomic<bool> consistent_pending_{false};
  std::atomic<int> total_world_{0};
  std::atomic<int> group_size_{0};
  std::atomic<int> rank_{-1};
  mutable std::mutex stats_mu_;
  CommunicatorStats stats_;
};

}  // namespace pccl
