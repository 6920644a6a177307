// Deterministic simulation of the master (sim_master_world.h).
//
//   sim_master [--seed S] [--events N] [--inject none|a4|a7|b1] [--learned-check on|off]
//
// Without --seed the seed comes from the clock; it is printed either way. A
// violation prints the seed, the event number and the simulated time, and
// the command that replays it exactly; the exit status is then 1.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/sim_master_world.h"

using namespace pccl;

namespace {

const char* defect_name(InjectedDefect d) {
  switch (d) {
    case InjectedDefect::kTrustResumeEpoch: return "a4";
    case InjectedDefect::kForgetRunRevision: return "a7";
    case InjectedDefect::kStaleBackgroundRing: return "b1";
    default: return "none";
  }
}

bool parse(int argc, char** argv, sim::Options* o) {
  o->seed = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--seed") {
      o->seed = std::strtoull(v.c_str(), nullptr, 10);
    } else if (k == "--events") {
      o->events = std::strtoull(v.c_str(), nullptr, 10);
    } else if (k == "--inject" && (v == "none" || v == "a4" || v == "a7" || v == "b1")) {
      o->defect = v == "a4"   ? InjectedDefect::kTrustResumeEpoch
                  : v == "a7" ? InjectedDefect::kForgetRunRevision
                  : v == "b1" ? InjectedDefect::kStaleBackgroundRing
                              : InjectedDefect::kNone;
    } else if (k == "--learned-check" && (v == "on" || v == "off")) {
      o->learned_check = v == "on";
    } else {
      return false;
    }
  }
  return argc % 2 == 1;
}

}  // namespace

int main(int argc, char** argv) {
  sim::Options o;
  if (!parse(argc, argv, &o)) {
    std::fprintf(stderr, "usage: sim_master [--seed S] [--events N] [--inject none|a4|a7|b1] "
                         "[--learned-check on|off]\n");
    return 2;
  }
  std::printf("sim_master: seed %llu, %llu events, injected defect %s\n",
              static_cast<unsigned long long>(o.seed), static_cast<unsigned long long>(o.events),
              defect_name(o.defect));
  std::fflush(stdout);
  auto t0 = std::chrono::steady_clock::now();
  sim::World world(o);
  std::string violation = world.run();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const sim::Stats& s = world.stats();
  std::printf("%llu events in %.2f s (%.0f events/s), %.0f simulated s: %llu joins, %llu hostile "
              "HELLOs (%llu refused; %llu honest re-registrations refused at the known epoch limit), %llu deaths, %llu freezes, %llu master restarts, %llu "
              "topologies, %llu sync plans (%llu refusals), %llu syncs completed (per peer)\n",
              static_cast<unsigned long long>(s.events), wall, s.events / wall, world.now(),
              static_cast<unsigned long long>(s.joins),
              static_cast<unsigned long long>(s.hostile_hellos),
              static_cast<unsigned long long>(s.refused_hellos),
              static_cast<unsigned long long>(s.poisoned_refusals),
              static_cast<unsigned long long>(s.deaths),
              static_cast<unsigned long long>(s.freezes),
              static_cast<unsigned long long>(s.restarts),
              static_cast<unsigned long long>(s.topologies),
              static_cast<unsigned long long>(s.plans),
              static_cast<unsigned long long>(s.buggy_refused),
              static_cast<unsigned long long>(s.completed_syncs));
  std::printf("optimize_topology(): %llu requests, %llu link plans, %llu link reports, %llu rings "
              "chosen over measured links, %llu members left out (no ring avoided their broken "
              "links)\n",
              static_cast<unsigned long long>(s.optimize_requests),
              static_cast<unsigned long long>(s.link_plans),
              static_cast<unsigned long long>(s.link_reports),
              static_cast<unsigned long long>(s.reorders),
              static_cast<unsigned long long>(s.evictions));
  std::printf("background planner: %llu jobs, %llu results delivered to the master that asked, "
              "%llu rings chosen from them\n",
              static_cast<unsigned long long>(s.background_jobs),
              static_cast<unsigned long long>(s.background_results),
              static_cast<unsigned long long>(s.background_rings));
  if (violation.empty()) {
    std::printf("sim_master: no violation\n");
    return 0;
  }
  std::printf("VIOLATION at event %llu (t=%.3f s), seed %llu: %s\n"
              "replay: sim_master --seed %llu --events %llu --inject %s --learned-check %s\n",
              static_cast<unsigned long long>(s.events), world.now(),
              static_cast<unsigned long long>(o.seed), violation.c_str(),
              static_cast<unsigned long long>(o.seed), static_cast<unsigned long long>(s.events),
              defect_name(o.defect), o.learned_check ? "on" : "off");
  return 1;
}
