// Benchmark of the ring solver (ffi/topology/ring_solver.h), not a test:
// for seeded synthetic instances (ring_instances.h) it prints the solver's
// time and ring cost against nearest-neighbour and against the best ring
// known, the cheapest that several long runs of the same search with other
// seeds found (the optimum is unknown at these sizes: "best known" is only
// that), and how far the best known is above a true lower bound, the
// cheapest assignment of a successor to every peer (rings are assignments).
// Run it in a release build on an idle machine:
//   ring_solver_bench [--sizes 64,256,1024] [--long-runs 4] [--long-factor 5]
//                     [--extra-budgets 0.2,0.02]
// --extra-budgets: the gap of one more solve at each of these budgets (s); the
// master's planner has 0.2 s in all (MasterCoreConfig::solve_budget_s), split
// between its solves (ring_planner.h).
// A size's budget is 2 s at 64 peers, 10 s at 256, 30 s beyond; each long run
// gets long-factor times that (1024: one long run at most, to stay in minutes).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "tests/ring_instances.h"
#include "topology/ring_solver.h"

using namespace pccl;

namespace {

struct Instance {
  const char* kind;
  CostMatrix cost;
};

// The cheapest assignment (each peer one successor other than itself):
// Hungarian algorithm with potentials, O(N^3).
double assignment_bound(const CostMatrix& c) {
  const int n = static_cast<int>(c.size());
  const double big = 1e300;
  auto at = [&](int i, int j) { return i == j ? big : c[i][j]; };
  std::vector<double> u(n + 1, 0), v(n + 1, 0), min_to(n + 1);
  std::vector<int> match(n + 1, 0), way(n + 1, 0);  // match[col] = row, 1-based
  std::vector<char> used(n + 1);
  for (int row = 1; row <= n; ++row) {
    match[0] = row;
    int col0 = 0;
    std::fill(min_to.begin(), min_to.end(), big);
    std::fill(used.begin(), used.end(), 0);
    do {
      used[col0] = 1;
      const int r = match[col0];
      double delta = big;
      int col1 = 0;
      for (int col = 1; col <= n; ++col) {
        if (used[col]) continue;
        const double cur = at(r - 1, col - 1) - u[r] - v[col];
        if (cur < min_to[col]) { min_to[col] = cur; way[col] = col0; }
        if (min_to[col] < delta) { delta = min_to[col]; col1 = col; }
      }
      for (int col = 0; col <= n; ++col) {
        if (used[col]) { u[match[col]] += delta; v[col] -= delta; }
        else min_to[col] -= delta;
      }
      col0 = col1;
    } while (match[col0] != 0);
    do {
      const int col1 = way[col0];
      match[col0] = match[col1];
      col0 = col1;
    } while (col0 != 0);
  }
  double total = 0;
  for (int col = 1; col <= n; ++col) total += c[match[col] - 1][col - 1];
  return total;
}

double budget_for(int n) { return n <= 64 ? 2.0 : (n <= 256 ? 10.0 : 30.0); }

RingSolution timed(const CostMatrix& cost, double budget, uint64_t seed, double* seconds) {
  SolverOptions opts;
  opts.time_budget_s = budget;
  opts.seed = seed;
  const auto t0 = std::chrono::steady_clock::now();
  RingSolution s = solve_ring(cost, opts);
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

// One more solve per budget, against the best known: what a shorter budget gives.
void bench_budgets(const Instance& in, const std::vector<double>& budgets, double best) {
  for (double b : budgets) {
    double t = 0;
    const RingSolution s = timed(in.cost, b, 1, &t);
    std::printf("       %-9s at a %.3g s budget: %.3f s, %ld kicks, %.3f%% above best known\n",
                in.kind, b, t, s.kicks, 100 * (s.cost / best - 1));
  }
}

void bench(int n, const Instance& in, int long_runs, double long_factor,
           const std::vector<double>& extra_budgets) {
  const double nn = ring_cost(in.cost, nearest_neighbour_ring(in.cost));
  const double budget = budget_for(n);
  double t_short = 0, t_desc = 0;
  // Construction, first descent and one kick: what the moves give alone.
  SolverOptions one;
  one.max_kicks = 1;
  const auto t0 = std::chrono::steady_clock::now();
  const double descent = solve_ring(in.cost, one).cost;
  t_desc = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const RingSolution s = timed(in.cost, budget, 1, &t_short);
  double best = s.cost;
  if (n > 256) long_runs = std::min(long_runs, 1);
  for (int r = 0; r < long_runs; ++r) {
    double t = 0;
    const RingSolution l = timed(in.cost, budget * long_factor, 1000 + r, &t);
    best = std::min(best, l.cost);
  }
  const double bound = assignment_bound(in.cost);
  std::printf("%5d  %-9s %16.10g %8.2f%% %8.2f%%  %7.3f %8.2f%%  %7.2f %9ld %8.3f%%  %8.2f%%   %d x %.0f s\n",
              n, in.kind, best, 100 * (best / bound - 1), 100 * (nn / best - 1), t_desc,
              100 * (descent / best - 1), t_short, s.kicks, 100 * (s.cost / best - 1),
              100 * (s.cost / bound - 1), long_runs, budget * long_factor);
  bench_budgets(in, extra_budgets, best);
  std::fflush(stdout);
}

// The exact solver's time, median of five runs, for the sizes it covers.
void bench_exact() {
  std::printf("exact (Held-Karp) on uniform instances, median of 5:");
  for (int n = 8; n <= kMaxExactRing; n += 2) {
    const CostMatrix c = ring_instances::uniform(n, 77 + n);
    SolverOptions opts;
    opts.exact_up_to = kMaxExactRing;
    std::vector<double> t;
    for (int r = 0; r < 5; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      solve_ring(c, opts);
      t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    std::printf("  N=%d %.2g s", n, t[2]);
  }
  std::printf("\n\n");
}

std::vector<double> parse_list(const char* s) {
  std::vector<double> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::atof(item.c_str()));
  return out;
}

std::vector<int> parse_sizes(const char* s) {
  std::vector<int> out;
  for (double v : parse_list(s)) out.push_back(static_cast<int>(v));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes{64, 256, 1024};
  std::vector<double> extra_budgets;
  int long_runs = 4;
  double long_factor = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--sizes")) sizes = parse_sizes(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--extra-budgets")) extra_budgets = parse_list(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--long-runs")) long_runs = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--long-factor")) long_factor = std::atof(argv[i + 1]);
  }
  bench_exact();
  std::printf("gaps: cost above the best known (best of the solver's run and the long runs);\n"
              "best>AP, solve>AP: above the assignment lower bound; desc: first descent only\n");
  std::printf("%5s  %-9s %16s %9s %9s  %7s %9s  %7s %9s %9s  %9s   %s\n", "N", "instance",
              "best known", "best>AP",
              "NN gap", "desc s", "desc gap", "solve s", "kicks", "gap", "solve>AP", "long runs");
  for (int n : sizes) {
    bench(n, {"uniform", ring_instances::uniform(n, 7 + n)}, long_runs, long_factor, extra_budgets);
    bench(n, {"clustered", ring_instances::clustered(n, 6, 11 + n)}, long_runs, long_factor,
          extra_budgets);
  }
  return 0;
}
