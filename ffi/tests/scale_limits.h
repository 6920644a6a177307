// The process and system limits that bound how many engine peers one process
// can hold (scale_bench), and what a swarm actually uses. Every peer owns
// threads (its master-link reader, its ring acceptor, plus the bench's driver
// thread) and descriptors (master and ring sockets, its listener, eventfds),
// so the limits that matter are RLIMIT_NOFILE, RLIMIT_NPROC / threads-max /
// pid_max (threads count as tasks), vm.max_map_count (a stack and its guard
// per thread), memory, and the master's backlog against net.core.somaxconn.
#pragma once
#include <dirent.h>
#include <sys/resource.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace pccl_bench {

inline std::string read_first_line(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line.empty() ? "?" : line;
}

// Soft limit up to the hard one: a default soft limit of 1024 descriptors is
// far below what 1024 peers and their master need.
inline void raise_nofile_limit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

inline std::string rlimit_text(int resource) {
  rlimit r{};
  if (getrlimit(resource, &r) != 0) return "?";
  auto one = [](rlim_t v) { return v == RLIM_INFINITY ? std::string("unlimited") : std::to_string(v); };
  return one(r.rlim_cur) + "/" + one(r.rlim_max);
}

// A "Key:  value kB" line of /proc/self/status or /proc/meminfo, as a number.
inline long proc_field(const char* path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size() + 1, key + ":") == 0) {
      std::istringstream rest(line.substr(key.size() + 1));
      long v = -1;
      rest >> v;
      return v;
    }
  }
  return -1;
}

inline int open_descriptors() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int n = 0;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n - 3;  // ".", ".." and the directory's own descriptor
}

struct Usage {
  int threads = 0;
  int fds = 0;
  long rss_mib = 0;
};

inline Usage current_usage() {
  return {static_cast<int>(proc_field("/proc/self/status", "Threads")), open_descriptors(),
          proc_field("/proc/self/status", "VmRSS") / 1024};
}

inline void print_limits(FILE* out) {
  std::fprintf(out,
               "limits: RLIMIT_NOFILE %s (soft raised to hard), RLIMIT_NPROC %s, threads-max %s, "
               "pid_max %s, vm.max_map_count %s, somaxconn %s, ports %s, MemAvailable %ld MiB, "
               "cpus %s\n",
               rlimit_text(RLIMIT_NOFILE).c_str(), rlimit_text(RLIMIT_NPROC).c_str(),
               read_first_line("/proc/sys/kernel/threads-max").c_str(),
               read_first_line("/proc/sys/kernel/pid_max").c_str(),
               read_first_line("/proc/sys/vm/max_map_count").c_str(),
               read_first_line("/proc/sys/net/core/somaxconn").c_str(),
               read_first_line("/proc/sys/net/ipv4/ip_local_port_range").c_str(),
               proc_field("/proc/meminfo", "MemAvailable") / 1024,
               std::to_string(std::thread::hardware_concurrency()).c_str());
}

inline std::string load_average() { return read_first_line("/proc/loadavg"); }

}  // namespace pccl_bench
