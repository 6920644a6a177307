// Shared by the engine's end-to-end C++ tests: a master and several
// communicators on threads of one process, over 127.0.0.1.
#pragma once
#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "master/master.h"
#include "peer/communicator.h"
#include "tests/check.h"

namespace pccl {

inline std::unique_ptr<Communicator> make_peer(uint16_t master_port, double timeout = 10.0,
                                        const std::string& secret = "",
                                        int connections = kDefaultRingConnections,
                                        int concurrency = 1) {
  CommunicatorConfig cfg;
  cfg.master_host = "127.0.0.1";
  cfg.master_port = master_port;
  cfg.timeout_s = timeout;
  cfg.secret = secret;
  cfg.connections = connections;
  cfg.concurrency = concurrency;
  return std::make_unique<Communicator>(cfg);
}

// Runs fn(index, comm) on one thread per communicator once all are admitted.
inline void with_ring_of(std::vector<std::unique_ptr<Communicator>>& comms,
                         const std::function<void(int, Communicator&)>& fn) {
  int n = static_cast<int>(comms.size());
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      // An exception must not escape a thread (that aborts the whole suite):
      // it is a failed check, named, and the other tests still run.
      try {
        std::this_thread::sleep_for(std::chrono::milliseconds(30 * i));
        Communicator& c = *comms[i];
        c.connect(60.0);  // generous: loaded CI machines are slow to admit
        while (c.group_world_size() < n) {
          c.update_topology();
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        fn(i, c);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "  peer thread %d: uncaught %s\n", i, e.what());
        CHECK(false && "peer thread raised");
      }
    });
  }
  for (auto& t : threads) t.join();
}

// Runs fn(rank_hint, comm) on n threads after all n peers are admitted.
// `connections[i]` (if given) is peer i's number of connections per ring hop.
inline void with_ring(Master& master, int n, const std::function<void(int, Communicator&)>& fn,
                      double timeout = 10.0, const std::string& secret = "",
                      const std::vector<int>& connections = {}, int concurrency = 1) {
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int i = 0; i < n; ++i) {
    int k = i < static_cast<int>(connections.size()) ? connections[i] : kDefaultRingConnections;
    comms.push_back(make_peer(master.port(), timeout, secret, k, concurrency));
  }
  with_ring_of(comms, fn);
}

}  // namespace pccl
