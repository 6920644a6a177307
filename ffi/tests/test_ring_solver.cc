// The ring solver (ffi/topology/ring_solver.h): the exact solver against
// brute force, the search against the exact solver and against the best
// rings known, broken links, input validation and determinism.
//
// Quality checks bound the search by kicks, not time, so that they do not
// depend on the machine: the same kicks give the same ring on any build
// speed. Time bounds are checked against the clock with slack for a loaded
// machine and more under sanitizers (ASan and TSan at -O1 run this 3-10x
// slower). `test_ring_solver --full` (or JAX_PCCL_RING_FULL=1) adds the long
// checks in a release build: the time-budgeted search (2 s at 64 peers, 10 s
// at 256) against best rings found again by long runs (about 4 minutes).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/check.h"
#include "tests/ring_instances.h"
#include "topology/ring_solver.h"

using namespace pccl;
using ring_instances::kInf;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif
// Wall-time bounds are stretched this much: 3x for a loaded 2-core machine,
// 10x more for a sanitized -O1 build on it.
const double kSlack = kSanitized ? 30.0 : 3.0;

bool g_full = false;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool same_cost(double a, double b) {
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(a - b) <= 1e-9 * std::max(std::fabs(a), std::fabs(b));
}

int broken_in(const CostMatrix& c, const std::vector<int>& order) {
  int broken = 0;
  for (size_t i = 0; order.size() > 1 && i < order.size(); ++i) {
    broken += std::isinf(c[order[i]][order[(i + 1) % order.size()]]);
  }
  return broken;
}

// A solution is a rotation of 0..N-1 starting at 0, and its cost, broken
// link count and kick count say what its order does.
bool well_formed(const CostMatrix& c, const RingSolution& s) {
  const int n = static_cast<int>(c.size());
  std::vector<int> sorted(s.order);
  std::sort(sorted.begin(), sorted.end());
  std::vector<int> all(n);
  std::iota(all.begin(), all.end(), 0);
  return sorted == all && !s.order.empty() && s.order[0] == 0 &&
         same_cost(s.cost, ring_cost(c, s.order)) && s.broken_links == broken_in(c, s.order) &&
         (s.exact ? s.kicks == 0 : true);
}

// The cheapest ring by trying every order of peers 1..N-1 behind peer 0,
// fewest broken links first (what the solver promises).
struct Brute {
  double cost;
  int broken;
};
Brute brute_force(const CostMatrix& c) {
  const int n = static_cast<int>(c.size());
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  Brute best{kInf, n + 1};
  do {
    const int broken = broken_in(c, order);
    double finite = 0;  // the usable links' cost, to rank rings that all break some
    for (int i = 0; i < n; ++i) {
      const double l = c[order[i]][order[(i + 1) % n]];
      if (std::isfinite(l)) finite += l;
    }
    if (broken < best.broken || (broken == best.broken && finite < best.cost)) best = {finite, broken};
  } while (std::next_permutation(order.begin() + 1, order.end()));
  if (best.broken > 0) best.cost = kInf;
  return best;
}

// Breaks each link with probability p.
void break_links(CostMatrix& c, double p, uint64_t seed) {
  ring_instances::Random rng(seed);
  for (size_t i = 0; i < c.size(); ++i) {
    for (size_t j = 0; j < c.size(); ++j) {
      if (i != j && rng.unit() < p) c[i][j] = kInf;
    }
  }
}

SolverOptions exact_only() {
  SolverOptions o;
  o.exact_up_to = kMaxExactRing;
  return o;
}

// The search alone (no exact solver), bounded by kicks so that it is
// deterministic.
SolverOptions search_only(long kicks, uint64_t seed = 1) {
  SolverOptions o;
  o.exact_up_to = 0;
  o.max_kicks = kicks;
  o.time_budget_s = 1e6;
  o.seed = seed;
  return o;
}

void test_trivial_rings() {
  RingSolution one = solve_ring({{5.0}});
  CHECK(one.order == std::vector<int>{0});
  CHECK_EQ(one.cost, 0.0);
  CHECK(one.exact);

  RingSolution two = solve_ring({{0, 3}, {4, 0}});
  CHECK(two.order == (std::vector<int>{0, 1}));
  CHECK_EQ(two.cost, 7.0);
  CHECK(two.exact);
  RingSolution two_broken = solve_ring({{0, kInf}, {4, 0}});
  CHECK(std::isinf(two_broken.cost));
  CHECK_EQ(two_broken.broken_links, 1);

  // Three peers have two rings; the solver takes the cheaper direction.
  const CostMatrix three{{0, 1, 10}, {10, 0, 1}, {1, 10, 0}};  // 0->1->2->0 costs 3
  CHECK(solve_ring(three).order == (std::vector<int>{0, 1, 2}));
  const CostMatrix three_back{{0, 10, 1}, {1, 0, 10}, {10, 1, 0}};  // 0->2->1->0 costs 3
  RingSolution back = solve_ring(three_back);
  CHECK(back.order == (std::vector<int>{0, 2, 1}));
  CHECK_EQ(back.cost, 3.0);
  // The cheap direction has a broken link: the other one is taken.
  CostMatrix three_broken = three;
  three_broken[1][2] = kInf;
  RingSolution avoided = solve_ring(three_broken);
  CHECK(avoided.order == (std::vector<int>{0, 2, 1}));
  CHECK_EQ(avoided.cost, 30.0);
  // The diagonal is ignored, whatever it holds.
  CostMatrix odd_diagonal = three;
  odd_diagonal[0][0] = std::nan("");
  odd_diagonal[1][1] = -1;
  CHECK_EQ(solve_ring(odd_diagonal).cost, 3.0);
}

void test_exact_matches_brute_force() {
  // Uniform costs, then with 30% and 60% of links broken (at 60% some
  // instances have no usable ring: both must then count the same broken links).
  Tally tally{"exact vs brute force"};
  int without_usable_ring = 0;
  for (int n = 2; n <= 8; ++n) {
    for (int inst = 0; inst < 30; ++inst) {
      const uint64_t seed = 1000 * n + inst;
      CostMatrix c = ring_instances::uniform(n, seed);
      if (inst >= 10) break_links(c, inst < 20 ? 0.3 : 0.6, seed);
      const RingSolution s = solve_ring(c, exact_only());
      const Brute b = brute_force(c);
      without_usable_ring += b.broken > 0;
      tally.expect(well_formed(c, s) && s.exact && same_cost(s.cost, b.cost) &&
                       s.broken_links == b.broken,
                   [&] {
                     return "n=" + std::to_string(n) + " seed=" + std::to_string(seed) +
                            ": solver " + std::to_string(s.cost) + " (" +
                            std::to_string(s.broken_links) + " broken), brute force " +
                            std::to_string(b.cost) + " (" + std::to_string(b.broken) + ")";
                   });
    }
  }
  tally.finish();
  CHECK(without_usable_ring > 0);  // the broken case was exercised
  std::printf("exact = brute force on %ld instances (N=2..8, %d without a usable ring)\n",
              tally.total, without_usable_ring);
}

void test_exact_time() {
  for (int n : {8, 10, 12, 14, 16}) {
    if (kSanitized && n > 14) break;  // 16 takes seconds at -O1 under ASan
    const CostMatrix c = ring_instances::uniform(n, 77 + n);
    const auto t0 = std::chrono::steady_clock::now();
    const RingSolution s = solve_ring(c, exact_only());
    const double t = seconds_since(t0);
    std::printf("exact N=%d: %.4f s\n", n, t);
    CHECK(s.exact && well_formed(c, s));
    // The promise is < 1 s up to 10 peers (a release build takes ~1 ms).
    if (n <= 10 && !CHECK(t < 1.0 * kSlack)) std::fprintf(stderr, "  N=%d took %.3f s\n", n, t);
  }
}

void test_search_reaches_the_optimum_of_small_rings() {
  // The search alone (exact solver off) on rings the exact solver can check.
  Tally tally{"search vs exact"};
  for (int n = 4; n <= 12; ++n) {
    for (int inst = 0; inst < (n >= 10 ? 8 : 4); ++inst) {
      const uint64_t seed = 5000 + 100 * n + inst;
      const bool uniform = inst % 2 == 0;
      const CostMatrix c = uniform ? ring_instances::uniform(n, seed)
                                   : ring_instances::clustered(n, 3, seed);
      const RingSolution exact = solve_ring(c, exact_only());
      const RingSolution found = solve_ring(c, search_only(300, seed));
      tally.expect(well_formed(c, found) && !found.exact && found.kicks == 300 &&
                       same_cost(found.cost, exact.cost),
                   [&] {
                     return "n=" + std::to_string(n) + (uniform ? " uniform" : " clustered") +
                            " seed=" + std::to_string(seed) + ": search " +
                            std::to_string(found.cost) + ", optimum " + std::to_string(exact.cost);
                   });
    }
  }
  tally.finish();
  // A search stuck in a basin restarts: with seed 1 this instance stayed
  // 0.46% above its optimum for 100000 kicks before restarts existed.
  const CostMatrix c = ring_instances::uniform(16, 23);
  const RingSolution stuck = solve_ring(c, search_only(5000, 1));
  CHECK(same_cost(stuck.cost, solve_ring(c, exact_only()).cost));
}

void test_broken_links_are_avoided() {
  // Half of all links broken at random: greed runs into broken links (the
  // nearest-neighbour ring of these uses some), the search must get out.
  for (int n : {64, 256}) {
    CostMatrix c = ring_instances::uniform(n, 200 + n);
    break_links(c, 0.5, 200 + n);
    const RingSolution s = solve_ring(c, search_only(500));
    CHECK(broken_in(c, nearest_neighbour_ring(c)) > 0);
    if (!CHECK(well_formed(c, s) && s.broken_links == 0 && std::isfinite(s.cost))) {
      std::fprintf(stderr, "  half broken N=%d: %d broken links\n", n, s.broken_links);
    }
  }
  // Only a hidden ring and about four random links out of each peer are
  // usable, and the hidden ring's links are dearer than the others. Finding
  // a ring in so sparse a graph is the Hamiltonian cycle problem: the search
  // finds these, not every such ring (with two extra links per peer it
  // misses some at 64 peers and most at 256).
  for (int n : {10, 12, 64, 256}) {
    const CostMatrix c = ring_instances::hidden_ring(n, 4, 300 + n);
    const RingSolution s = solve_ring(c, search_only(n <= 64 ? 2000 : 5000));
    if (!CHECK(well_formed(c, s) && s.broken_links == 0 && std::isfinite(s.cost))) {
      std::fprintf(stderr, "  hidden ring N=%d: %d broken links\n", n, s.broken_links);
    }
    if (n <= 12) CHECK_EQ(solve_ring(c, exact_only()).broken_links, 0);
  }
  // No usable ring: peer 3 can send nowhere. The solver says so (infinite
  // cost) and still returns a ring, with as few broken links as it found.
  for (int n : {8, 40}) {
    CostMatrix c = ring_instances::uniform(n, 400 + n);
    for (int j = 0; j < n; ++j) c[3][j] = kInf;
    const RingSolution s = solve_ring(c, n <= 12 ? exact_only() : search_only(200));
    CHECK(well_formed(c, s) && std::isinf(s.cost) && s.broken_links == 1);
  }
  // Two groups with no link from the second back to the first: any ring
  // crosses back once, so one broken link is the least (proven at 8 peers).
  for (int n : {8, 40}) {
    CostMatrix c = ring_instances::uniform(n, 500 + n);
    for (int i = n / 2; i < n; ++i) {
      for (int j = 0; j < n / 2; ++j) c[i][j] = kInf;
    }
    const RingSolution s = solve_ring(c, n <= 12 ? exact_only() : search_only(200));
    CHECK(well_formed(c, s) && std::isinf(s.cost) && s.broken_links == 1);
    CHECK_EQ(s.exact, n <= 12);
  }
  // Every link broken: any ring will do, and says so.
  const RingSolution all = solve_ring(ring_instances::matrix(20, kInf), search_only(10));
  CHECK(std::isinf(all.cost) && all.broken_links == 20);
}

// Best rings known for the seeded instances below: the cheapest that long
// release-build runs of the search found on a loaded 2-core machine (8 runs
// of 10 s at 64 peers, 4 of 50 s at 256; then at 256 one --full run, below,
// found cheaper rings in 3 runs of 30 s and the 10 s run; the bench's 4 runs
// of 50 s later found 413.684 on the uniform one, 0.11% cheaper). Not proven
// optimal. --full checks the budgeted search against fresh long runs
// (4 x 6 s at 64 peers, 3 x 30 s at 256) and says when these are beaten.
// `kicks` bounds the test's own search (test_search_quality).
struct Known {
  const char* kind;
  int n;
  double best;
  long kicks;
};
const Known kKnown[] = {
    {"uniform", 64, 207.44792751785445, 3000},
    {"clustered", 64, 3.1756498839265439e-07, 1000},
    {"uniform", 256, 414.13148137367472, 12000},
    {"clustered", 256, 7.0338695624901564e-07, 4000},
};

CostMatrix instance(const Known& k) {
  return std::strcmp(k.kind, "uniform") == 0 ? ring_instances::uniform(k.n, 7 + k.n)
                                             : ring_instances::clustered(k.n, 6, 11 + k.n);
}

void test_search_quality() {
  // Kick bounds that a release build does in < 0.5 s on a loaded 2-core
  // machine (10x that under TSan): the targets are within 2% of the best
  // known at 64 peers in < 2 s, and < 10 s at 256 (where these kicks give
  // ~1.5% above the best known on the uniform instance, 3% allowed; the
  // clustered ones are easier and get fewer kicks).
  for (const Known& k : kKnown) {
    const CostMatrix c = instance(k);
    const double nn = ring_cost(c, nearest_neighbour_ring(c));
    const auto t0 = std::chrono::steady_clock::now();
    const RingSolution s = solve_ring(c, search_only(k.kicks));
    const double t = seconds_since(t0);
    const double gap = s.cost / k.best - 1;
    std::printf("search %-9s N=%d: %ld kicks in %.2f s, %.3f%% above best known, NN %.1f%% above\n",
                k.kind, k.n, s.kicks, t, 100 * gap, 100 * (nn / k.best - 1));
    CHECK(well_formed(c, s) && s.broken_links == 0);
    CHECK(s.cost < nn);
    if (!CHECK(gap < (k.n <= 64 ? 0.02 : 0.03))) std::fprintf(stderr, "  gap %.4f\n", gap);
    CHECK(t < (k.n <= 64 ? 2.0 : 10.0) * kSlack);
  }
}

void test_search_quality_long() {
  // --full: the time-budgeted search, as it will run, against best rings
  // found again now by long runs with other seeds.
  for (const Known& k : kKnown) {
    const CostMatrix c = instance(k);
    const double budget = k.n <= 64 ? 2.0 : 10.0;
    double best = kInf;
    const int runs = k.n <= 64 ? 4 : 3;
    for (int r = 0; r < runs; ++r) {
      SolverOptions o;
      o.time_budget_s = k.n <= 64 ? 6.0 : 30.0;
      o.seed = 100 + r;
      best = std::min(best, solve_ring(c, o).cost);
    }
    SolverOptions o;
    o.time_budget_s = budget;
    const auto t0 = std::chrono::steady_clock::now();
    const RingSolution s = solve_ring(c, o);
    const double t = seconds_since(t0);
    const double gap = s.cost / best - 1;
    std::printf("full: %-9s N=%d: %.2f s, %ld kicks, %.3f%% above the long runs' best "
                "(%.17g; recorded %.17g)\n",
                k.kind, k.n, t, s.kicks, 100 * gap, best, k.best);
    CHECK(gap < 0.02);
    CHECK(t < budget * 1.5);
    // Not a failure of the search: a better reference for the checks above.
    const double found = std::min(best, s.cost);
    if (found < k.best * (1 - 1e-12)) {
      std::printf("  cheaper than the recorded best known: record %.17g in kKnown\n", found);
    }
  }
}

void test_determinism() {
  for (int n : {64, 256}) {
    const CostMatrix c = ring_instances::clustered(n, 5, 900 + n);
    const RingSolution a = solve_ring(c, search_only(300, 42));
    const RingSolution b = solve_ring(c, search_only(300, 42));
    CHECK(a.order == b.order);
    CHECK_EQ(a.kicks, 300L);
    CHECK_EQ(b.kicks, 300L);
  }
  // The time budget stops the search too (here before the kick bound).
  SolverOptions quick = search_only(1L << 40);
  quick.time_budget_s = 0.05;
  const auto t0 = std::chrono::steady_clock::now();
  const RingSolution s = solve_ring(ring_instances::uniform(64, 3), quick);
  CHECK(seconds_since(t0) < 0.05 + 0.5 * kSlack);
  CHECK(s.kicks > 0 && s.kicks < (1L << 40));
}

// The stop flag ends a search long before its budget, with a ring (the
// master's background planner cancels this way when it closes): set before
// the search, it returns after the first descent; set meanwhile, soon after.
void test_stop_flag() {
  const CostMatrix c = ring_instances::uniform(256, 11);
  std::atomic<bool> stop{true};
  SolverOptions opts = search_only(0);
  opts.time_budget_s = 60;
  opts.stop = &stop;
  auto t0 = std::chrono::steady_clock::now();
  RingSolution s = solve_ring(c, opts);
  CHECK(seconds_since(t0) < 30);  // half the budget: a bound no load here reaches
  CHECK_EQ(s.kicks, 0L);
  std::vector<int> sorted = s.order;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int> all(256);
  std::iota(all.begin(), all.end(), 0);
  CHECK(sorted == all);
  stop = false;
  t0 = std::chrono::steady_clock::now();
  std::thread stopper([&stop] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    stop = true;
  });
  s = solve_ring(c, opts);
  stopper.join();
  CHECK(seconds_since(t0) < 30);  // not the 60 s budget
  CHECK(s.kicks > 0);
}

// Whether fn throws std::invalid_argument whose message contains `what`.
bool rejects(const std::function<void()>& fn, const char* what) {
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    if (std::strstr(e.what(), what)) return true;
    std::fprintf(stderr, "  message '%s' lacks '%s'\n", e.what(), what);
    return false;
  }
  return false;
}

void test_validation() {
  const CostMatrix good = ring_instances::uniform(5, 1);
  CHECK(rejects([] { solve_ring({}); }, "empty"));
  CHECK(rejects([] { solve_ring({{0, 1}, {1}}); }, "not square"));
  CHECK(rejects([] { solve_ring({{0, 1, 2}, {1, 0, 2}}); }, "not square"));
  CostMatrix bad = good;
  bad[1][2] = std::nan("");
  CHECK(rejects([&] { solve_ring(bad); }, "cost[1][2]"));
  bad = good;
  bad[4][0] = -0.5;
  CHECK(rejects([&] { solve_ring(bad); }, "cost[4][0]"));
  bad[4][0] = -kInf;
  CHECK(rejects([&] { solve_ring(bad); }, ">= 0"));
  CHECK(rejects([&] { nearest_neighbour_ring(bad); }, "cost[4][0]"));
  SolverOptions o;
  o.exact_up_to = kMaxExactRing + 1;
  CHECK(rejects([&] { solve_ring(good, o); }, "exact_up_to"));
  o = {};
  o.time_budget_s = -1;
  CHECK(rejects([&] { solve_ring(good, o); }, "time_budget_s"));
  o.time_budget_s = std::nan("");
  CHECK(rejects([&] { solve_ring(good, o); }, "time_budget_s"));
  o = {};
  o.max_kicks = -1;
  CHECK(rejects([&] { solve_ring(good, o); }, "max_kicks"));
  o = {};
  o.neighbours = 0;
  CHECK(rejects([&] { solve_ring(good, o); }, "neighbours"));
}

// Runs one test; an exception (the search's own bug check throws one) fails
// it and the others still run.
void run(const char* name, void (*test)()) {
  const auto t0 = std::chrono::steady_clock::now();
  try {
    test();
  } catch (const std::exception& e) {
    CHECK(false);
    std::fprintf(stderr, "  %s threw: %s\n", name, e.what());
  }
  std::printf("[%s: %.2f s]\n", name, seconds_since(t0));
}

}  // namespace

int main(int argc, char** argv) {
  const char* env = std::getenv("JAX_PCCL_RING_FULL");
  g_full = (env && std::strcmp(env, "1") == 0) || (argc > 1 && std::strcmp(argv[1], "--full") == 0);
  const auto t0 = std::chrono::steady_clock::now();
  run("trivial rings", test_trivial_rings);
  run("validation", test_validation);
  run("exact vs brute force", test_exact_matches_brute_force);
  run("exact time", test_exact_time);
  run("search vs exact", test_search_reaches_the_optimum_of_small_rings);
  run("broken links", test_broken_links_are_avoided);
  run("determinism", test_determinism);
  run("stop flag", test_stop_flag);
  run("search quality", test_search_quality);
  if (g_full) run("search quality (full)", test_search_quality_long);
  std::printf("test_ring_solver took %.1f s%s\n", seconds_since(t0), kSanitized ? " (sanitized)" : "");
  return check_summary("test_ring_solver");
}
