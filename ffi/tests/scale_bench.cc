// Benchmark of the membership protocol at scale, not a test: N engine peers
// and their master in one process over 127.0.0.1 (scale_swarm.h). For each N
// it reports, as medians over --repeats fresh swarms:
//   join      peer 0's connect() until all N are on one ring, links up
//   check     update_topology() with nothing pending (median of the rounds)
//   allreduce one exact all_reduce of --count float32 over the N-ring
//   drop      one peer's close() until the N-1 survivors are on a new ring
//   decide    close() until the first survivor got the new topology
//   rebuild   that moment until the last survivor's links were up
// plus one JSON line per N. One process on a few cores: this measures the
// protocol's round trips and the master's work, not a network.
//   scale_bench [--peers 16,64,256,1024] [--repeats 3] [--check-rounds 5]
//               [--count 256] [--timeout 120]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/scale_limits.h"
#include "tests/scale_swarm.h"

using namespace pccl_bench;

namespace {

struct Options {
  std::vector<int> peers{16, 64, 256, 1024};
  int repeats = 3;
  int check_rounds = 5;
  size_t count = 256;
  double timeout_s = 120;  // generous: a loaded machine is slow, not broken
};

// One swarm's figures, by name, in the order of the table.
using Figures = std::vector<std::pair<std::string, double>>;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

Figures run_once(int n, const Options& o) {
  Swarm swarm(n, o.timeout_s);
  Figures f;
  JoinFigures join = swarm.join();
  Usage used = current_usage();  // everything is connected now: the peak
  f.push_back({"join_s", join.seconds});
  f.push_back({"join_epochs", static_cast<double>(join.epochs)});
  f.push_back({"check_s", median(swarm.check_rounds(o.check_rounds))});
  f.push_back({"allreduce_s", swarm.exact_all_reduce(o.count)});
  DropFigures drop = swarm.drop_one();
  f.push_back({"drop_s", drop.total_s});
  f.push_back({"decide_s", drop.decision_s});
  f.push_back({"rebuild_s", drop.rebuild_s});
  f.push_back({"drop_retries", static_cast<double>(drop.failed_calls)});
  f.push_back({"allreduce_after_drop_s", swarm.exact_all_reduce(o.count)});
  f.push_back({"threads", static_cast<double>(used.threads)});
  f.push_back({"fds", static_cast<double>(used.fds)});
  f.push_back({"rss_mib", static_cast<double>(used.rss_mib)});
  return f;
}

void print_header() {
  std::printf("%6s %8s %7s %9s %10s %9s %9s %9s %8s %8s %6s %8s   %s\n", "peers", "join s",
              "epochs", "check s", "allred s", "drop s", "decide s", "rebuild s", "threads", "fds",
              "RSS MB", "runs ok", "load (start -> end)");
}

// Medians over the runs that completed; JSON carries every run's figure too.
void report(int n, const std::vector<Figures>& runs, int repeats, const std::string& load0,
            const std::string& load1, const std::vector<std::string>& errors) {
  std::map<std::string, std::vector<double>> by_name;
  std::vector<std::string> order;
  for (const Figures& f : runs) {
    for (const auto& [name, v] : f) {
      if (by_name[name].empty()) order.push_back(name);
      by_name[name].push_back(v);
    }
  }
  auto med = [&](const char* name) { return by_name.count(name) ? median(by_name[name]) : -1.0; };
  std::printf("%6d %8.3f %7.0f %9.4f %10.4f %9.3f %9.3f %9.3f %8.0f %8.0f %6.0f %5zu/%-2d   %s -> %s\n",
              n, med("join_s"), med("join_epochs"), med("check_s"), med("allreduce_s"),
              med("drop_s"), med("decide_s"), med("rebuild_s"), med("threads"), med("fds"),
              med("rss_mib"), runs.size(), repeats, load0.c_str(), load1.c_str());
  std::ostringstream js;
  js << "{\"peers\":" << n << ",\"runs_ok\":" << runs.size() << ",\"repeats\":" << repeats
     << ",\"loadavg_start\":\"" << load0 << "\",\"loadavg_end\":\"" << load1 << "\"";
  for (const std::string& name : order) {
    js << ",\"" << name << "\":" << median(by_name[name]) << ",\"" << name << "_runs\":[";
    for (size_t i = 0; i < by_name[name].size(); ++i) js << (i ? "," : "") << by_name[name][i];
    js << "]";
  }
  js << ",\"errors\":[";
  for (size_t i = 0; i < errors.size(); ++i) {
    std::string e = errors[i];
    std::replace(e.begin(), e.end(), '"', '\'');
    js << (i ? "," : "") << "\"" << e << "\"";
  }
  js << "]}";
  std::printf("JSON %s\n", js.str().c_str());
  std::fflush(stdout);
}

std::vector<int> parse_list(const char* s) {
  std::vector<int> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::atoi(item.c_str()));
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--peers")) o.peers = parse_list(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--repeats")) o.repeats = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--check-rounds")) o.check_rounds = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--count")) o.count = std::strtoul(argv[i + 1], nullptr, 10);
    else if (!std::strcmp(argv[i], "--timeout")) o.timeout_s = std::atof(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      std::exit(2);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  raise_nofile_limit();
  print_limits(stdout);
  std::printf("peers: connections=1 concurrency=1 timeout=%.0f s; all_reduce of %zu float32; "
              "check: median of %d rounds; figures: median of %d runs\n",
              o.timeout_s, o.count, o.check_rounds, o.repeats);
  print_header();
  int failures = 0;
  for (int n : o.peers) {
    std::vector<Figures> runs;
    std::vector<std::string> errors;
    const std::string load0 = load_average();
    for (int r = 0; r < o.repeats; ++r) {
      try {
        runs.push_back(run_once(n, o));
      } catch (const std::exception& e) {
        // Say exactly what stopped it (often a limit: EMFILE, EAGAIN) and go on.
        errors.push_back(e.what());
        std::fprintf(stderr, "N=%d run %d failed: %s\n", n, r + 1, e.what());
        ++failures;
      }
    }
    report(n, runs, o.repeats, load0, load_average(), errors);
  }
  return failures == 0 ? 0 : 1;
}
