#include "tests/scale_swarm.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "common/errors.h"
#include "tests/run_together.h"

namespace pccl_bench {
namespace {

pccl::MasterConfig master_config(int n, double timeout_s,
                                 const std::function<void(pccl::MasterConfig&)>& tune) {
  pccl::MasterConfig cfg;
  cfg.host = "127.0.0.1";
  cfg.port = 0;
  cfg.max_connections = static_cast<size_t>(2 * n + 64);  // the default, 1024, is one per peer
  // Thousands of threads on a few busy cores can starve a peer's heartbeat
  // for seconds; a spurious drop would wreck the figures. The drop measured
  // here is an EOF, which the master sees at once whatever this is.
  cfg.handshake_timeout_s = timeout_s;
  cfg.heartbeat_timeout_s = timeout_s;
  if (tune) tune(cfg);
  return cfg;
}

pccl::CommunicatorConfig peer_config(uint16_t port, double timeout_s) {
  pccl::CommunicatorConfig cfg;
  cfg.master_host = "127.0.0.1";
  cfg.master_port = port;
  cfg.timeout_s = timeout_s;
  cfg.connections = 1;  // the protocol's cost, not bandwidth: one link per hop
  cfg.concurrency = 1;
  return cfg;
}

Clock::time_point latest(const std::vector<Clock::time_point>& times, const std::vector<int>& of) {
  Clock::time_point t{};
  for (int i : of) t = std::max(t, times[i]);
  return t;
}

Clock::time_point earliest(const std::vector<Clock::time_point>& times, const std::vector<int>& of) {
  Clock::time_point t = Clock::time_point::max();
  for (int i : of) t = std::min(t, times[i]);
  return t;
}

// When each watched peer first reported an epoch other than `base`, i.e.
// entered apply_topology() for a new ring (its epoch is published before the
// ring links are opened). Polled every 200 us: that is the figures' grain.
// The poller takes a little CPU from the peers; on a 2-core machine that is
// part of the price of knowing when the topology arrived.
class EpochWatcher {
 public:
  EpochWatcher(std::vector<pccl::Communicator*> peers, uint64_t base)
      : peers_(std::move(peers)), seen_(peers_.size(), Clock::time_point::max()) {
    thread_ = std::thread([this, base] { poll(base); });
  }
  ~EpochWatcher() { stop(); }
  void stop() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
  }
  const std::vector<Clock::time_point>& seen() const { return seen_; }

 private:
  void poll(uint64_t base) {
    size_t left = peers_.size();
    while (!done_ && left > 0) {
      for (size_t i = 0; i < peers_.size(); ++i) {
        if (seen_[i] != Clock::time_point::max() || peers_[i]->stats().epoch == base) continue;
        seen_[i] = Clock::now();
        --left;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  std::vector<pccl::Communicator*> peers_;
  std::vector<Clock::time_point> seen_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

}  // namespace

Swarm::Swarm(int n, double timeout_s, const std::function<void(pccl::MasterConfig&)>& tune)
    : n_(n), timeout_s_(timeout_s), master_(master_config(n, timeout_s, tune)), dropped_(n, false) {
  master_.start();
  for (int i = 0; i < n; ++i) {
    peers_.push_back(std::make_unique<pccl::Communicator>(peer_config(master_.port(), timeout_s)));
  }
}

Swarm::~Swarm() {
  // One by one, each close() joins its threads: seconds at 1024 peers.
  try {
    run_together(n_, [this](int i) { peer(i).close(); });
  } catch (...) {
    // No thread for parallel closes: the destructors close them in turn.
  }
  peers_.clear();
  master_.stop();
}

void Swarm::fail(int i, const std::exception& e) {
  {
    std::lock_guard<std::mutex> lock(error_mu_);
    if (error_.empty()) error_ = "peer " + std::to_string(i) + ": " + e.what();
  }
  if (failed_.exchange(true)) return;
  for (auto& p : peers_) p->close();
}

void Swarm::check_failed() const {
  std::lock_guard<std::mutex> lock(error_mu_);
  if (failed_) throw std::runtime_error(error_);
}

std::vector<int> Swarm::live() const {
  std::vector<int> out;
  for (int i = 0; i < n_; ++i) {
    if (!dropped_[i]) out.push_back(i);
  }
  return out;
}

JoinFigures Swarm::join() {
  // Accepted members admit newcomers in their update_topology() (one vote
  // admits everyone pending at that moment), so each peer loops on it until
  // the ring holds all N, as a training loop would between steps.
  std::vector<Clock::time_point> done(n_);
  Clock::time_point t0;
  const double admit_s = 10 * timeout_s_;
  run_together(
      n_,
      [&](int i) {
        try {
          if (i != 0) peer(i).connect(admit_s);
          while (!failed_ && peer(i).group_world_size() < n_) {
            peer(i).update_topology();
            // A training step's stand-in between calls: back-to-back checks
            // (and, alone, calls that return at once) would take the few
            // cores from the joiners' registrations and the master.
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
          }
          done[i] = Clock::now();
        } catch (const std::exception& e) {
          fail(i, e);
        }
      },
      [&] {
        t0 = Clock::now();
        peer(0).connect(admit_s);  // the first of a group is accepted at once
      });
  check_failed();
  return {seconds_between(t0, latest(done, live())), peer(0).stats().epoch};
}

std::vector<double> Swarm::check_rounds(int rounds) {
  const uint64_t epoch = peer(0).stats().epoch;
  std::vector<double> out;
  // Round 0 is not timed: right after a topology was applied the first
  // update_topology() returns at once on every member (topology_fresh_).
  for (int r = 0; r <= rounds; ++r) {
    std::vector<Clock::time_point> done(n_);
    Clock::time_point opened = run_together(n_, [&](int i) {
      try {
        peer(i).update_topology();
        done[i] = Clock::now();
      } catch (const std::exception& e) {
        fail(i, e);
      }
    });
    check_failed();
    if (r > 0) out.push_back(seconds_between(opened, latest(done, live())));
  }
  for (int i : live()) {
    if (peer(i).stats().epoch != epoch) {
      throw std::runtime_error("a check round changed the ring (peer " + std::to_string(i) + ")");
    }
  }
  return out;
}

double Swarm::optimize() {
  const std::vector<int> members = live();
  std::vector<Clock::time_point> done(n_);
  Clock::time_point opened = run_together(static_cast<int>(members.size()), [&](int k) {
    const int i = members[k];
    try {
      peer(i).optimize_topology();
      done[i] = Clock::now();
    } catch (const std::exception& e) {
      fail(i, e);
    }
  });
  check_failed();
  const uint64_t epoch = peer(members[0]).stats().epoch;
  for (int i : members) {
    if (peer(i).stats().epoch != epoch) {
      throw std::runtime_error("after optimize_topology() peers are at different epochs");
    }
  }
  return seconds_between(opened, latest(done, members));
}

double Swarm::exact_all_reduce(size_t count) {
  const std::vector<int> members = live();
  // Small integers in float32: every partial sum is exact in any order.
  auto value = [](int peer_index, size_t j) { return static_cast<float>(peer_index + 1 + j % 4); };
  std::vector<float> expected(count, 0.0f);
  for (int i : members) {
    for (size_t j = 0; j < count; ++j) expected[j] += value(i, j);
  }
  std::vector<Clock::time_point> done(n_);
  std::atomic<int> wrong{0};
  Clock::time_point opened = run_together(static_cast<int>(members.size()), [&](int k) {
    const int i = members[k];
    try {
      std::vector<float> in(count), out(count);
      for (size_t j = 0; j < count; ++j) in[j] = value(i, j);
      pccl::LeafDescriptor leaf;
      leaf.dims = {static_cast<int64_t>(count)};
      int took_part = peer(i).all_reduce(in.data(), out.data(), count, pccl::DType::kFloat32,
                                         pccl::ReduceOp::kSum, leaf);
      done[i] = Clock::now();
      if (took_part != static_cast<int>(members.size()) || out != expected) ++wrong;
    } catch (const std::exception& e) {
      fail(i, e);
    }
  });
  check_failed();
  if (wrong > 0) {
    throw std::runtime_error("all_reduce over " + std::to_string(members.size()) + " peers: " +
                             std::to_string(wrong.load()) + " peers got an inexact sum");
  }
  return seconds_between(opened, latest(done, members));
}

DropFigures Swarm::drop_one() {
  const int victim = n_ / 2;  // mid-ring: both neighbours are ordinary members
  std::vector<int> survivors = live();
  survivors.erase(std::remove(survivors.begin(), survivors.end(), victim), survivors.end());
  std::vector<pccl::Communicator*> watched;
  for (int i : survivors) watched.push_back(&peer(i));
  const uint64_t base = peer(survivors[0]).stats().epoch;
  const int target = static_cast<int>(survivors.size());

  EpochWatcher watcher(watched, base);
  std::vector<Clock::time_point> done(n_);
  Clock::time_point closed_at;
  std::atomic<int> failed_calls{0};
  run_together(n_, [&](int i) {
    try {
      if (i == victim) {
        closed_at = Clock::now();
        peer(i).close();
        return;
      }
      while (!failed_ && peer(i).group_world_size() != target) {
        try {
          peer(i).update_topology();
        } catch (const pccl::PcclError& e) {
          if (e.kind() != pccl::ErrorKind::kPeerFailure) throw;
          ++failed_calls;  // recovery is to call it again
        }
      }
      done[i] = Clock::now();
    } catch (const std::exception& e) {
      fail(i, e);
    }
  });
  watcher.stop();
  dropped_[victim] = true;
  check_failed();

  std::vector<Clock::time_point> topo(n_, Clock::time_point::max());
  for (size_t k = 0; k < survivors.size(); ++k) topo[survivors[k]] = watcher.seen()[k];
  const Clock::time_point first_topo = earliest(topo, survivors);
  const Clock::time_point last_done = latest(done, survivors);
  DropFigures f;
  f.total_s = seconds_between(closed_at, last_done);
  f.decision_s = seconds_between(closed_at, std::min(first_topo, last_done));
  f.rebuild_s = seconds_between(std::min(first_topo, last_done), last_done);
  f.failed_calls = failed_calls;
  return f;
}

}  // namespace pccl_bench
