// The background planner inside a running master (master.cc's glue), with
// 14 engine peers over 127.0.0.1 (tests/scale_swarm.h): after an
// optimize_topology() of a ring beyond the loop's exact solver, the master's
// status shows a background ring waiting; the next optimize_topology()
// judges it and the peers all-reduce exactly on the ring chosen. Closing a
// master whose background search has two minutes left returns at once.
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "tests/check.h"
#include "tests/scale_swarm.h"

namespace {

constexpr int kPeers = 14;  // above the loop's exact solver (12)
constexpr double kTimeout = 60;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool waiting(const std::string& status) {
  return status.find("\"background_ring_waiting\":true") != std::string::npos;
}

// Polls the status until `want` holds, up to a generous deadline.
template <typename Want>
bool status_until(const pccl_bench::Swarm& swarm, Want want) {
  auto t0 = std::chrono::steady_clock::now();
  while (seconds_since(t0) < kTimeout) {
    if (want(swarm.master_status())) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void tune(pccl::MasterConfig& c) {
  c.probe_ms = 30;      // 13 rounds of probes: well under a second
  c.probe_streams = 1;
  c.background_solve_s = 0.5;
}

void test_background_ring_reaches_the_next_optimisation() {
  pccl_bench::Swarm swarm(kPeers, kTimeout, tune);
  swarm.join();
  swarm.optimize();
  std::string first = swarm.master_status();
  CHECK(first.find("\"exact\":false") != std::string::npos);  // the loop's search
  if (!CHECK(status_until(swarm, waiting))) {
    std::fprintf(stderr, "  no background ring in %.0f s: %s\n", kTimeout, first.c_str());
    return;
  }
  swarm.optimize();  // every figure fresh: nothing probed, the waiting ring judged
  std::string second = swarm.master_status();
  CHECK(second.find("\"probed_links\":0") != std::string::npos);
  // Taken (an exact ring, at 14 peers) or not better than the loop's.
  bool taken = second.find("\"background\":true") != std::string::npos;
  CHECK(second.find(taken ? "\"exact\":true" : "\"exact\":false") != std::string::npos);
  std::printf("background ring taken: %s\n", taken ? "yes" : "no (the loop's was as good)");
  swarm.exact_all_reduce(1024);  // throws unless every sum is exact
}

void test_closing_cancels_a_long_background_search() {
  std::chrono::steady_clock::time_point t0;
  {
    // 18 peers: beyond the background's exact solver too, so its search
    // runs for its budget.
    pccl_bench::Swarm swarm(18, kTimeout, [](pccl::MasterConfig& c) {
      tune(c);
      c.background_solve_s = 120;
    });
    swarm.join();
    swarm.optimize();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the search runs
    CHECK(!waiting(swarm.master_status()));
    t0 = std::chrono::steady_clock::now();
  }  // closes the peers, then stops the master
  // Half a minute, against a 120 s search (closing 18 peers takes well under a second).
  CHECK(seconds_since(t0) < 30);
}

}  // namespace

int main() {
  try {
    test_background_ring_reaches_the_next_optimisation();
    test_closing_cancels_a_long_background_search();
  } catch (const std::exception& e) {
    CHECK(false);
    std::fprintf(stderr, "  %s\n", e.what());
  }
  return check_summary("test_background_live");
}
