// The plain fuzz driver (builds with any compiler): runs every parser target
// of fuzz_target.h for --seconds each on inputs from a seeded Mutator, and
// prints the executions per target. A broken property or a sanitizer report
// kills the process; the input that did it is written to
// fuzz-crash-<target>.bin first (reproduce with --run FILE --target NAME).
//
//   fuzz_parsers [--seconds N] [--seed S] [--target NAME]...
//   fuzz_parsers --run FILE --target NAME      replay one input
//   fuzz_parsers --write-corpus DIR            seeds as files, for libFuzzer
//
// Without sanitizers a bad read may go unnoticed: build with
// -DJAX_PCCL_SANITIZE=address for the runs that count.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/check.h"
#include "tests/fuzz_mutator.h"
#include "tests/fuzz_target.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PCCL_FUZZ_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define PCCL_FUZZ_SANITIZED 1
#endif
#endif
#ifdef PCCL_FUZZ_SANITIZED
#include <sanitizer/common_interface_defs.h>
#endif

using namespace pccl_fuzz;

namespace {

struct Options {
  double seconds = 2.0;
  uint64_t seed = 1;
  std::vector<std::string> targets;
  std::string run_file;
  std::string corpus_dir;
};

// The input under test, for the crash handlers (set before every execution).
const Bytes* g_current = nullptr;
char g_crash_path[256] = "fuzz-crash.bin";

// Async-signal-safe: open/write/close only.
void dump_current_input() {
  if (g_current == nullptr) return;
  int fd = ::open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  ssize_t ignored = ::write(fd, g_current->data(), g_current->size());
  (void)ignored;
  ::close(fd);
  static const char msg[] = "fuzz_parsers: crashing input written to ";
  ignored = ::write(2, msg, sizeof(msg) - 1);
  ignored = ::write(2, g_crash_path, std::strlen(g_crash_path));
  ignored = ::write(2, "\n", 1);
}

void on_fatal_signal(int sig) {
  dump_current_input();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void install_crash_handlers() {
  for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) std::signal(sig, on_fatal_signal);
#ifdef PCCL_FUZZ_SANITIZED
  __sanitizer_set_death_callback(dump_current_input);  // sanitizers exit without a signal
#endif
}

bool run_one(const FuzzTarget& t, const Bytes& input) {
  g_current = &input;
  bool accepted = t.one_input(input.data(), input.size());
  g_current = nullptr;
  return accepted;
}

void fuzz(const FuzzTarget& t, const Options& opt) {
  std::snprintf(g_crash_path, sizeof(g_crash_path), "fuzz-crash-%s.bin", t.name);
  std::vector<Bytes> seeds = t.seeds();
  long seeds_accepted = 0;
  for (const Bytes& s : seeds) seeds_accepted += run_one(t, s);
  // Valid encodings must parse: otherwise the target tests nothing useful.
  CHECK(seeds_accepted > 0);
  Mutator mutator(opt.seed, std::move(seeds));
  auto start = std::chrono::steady_clock::now();
  auto end = start + std::chrono::duration<double>(opt.seconds);
  long execs = 0, accepted = 0;
  while (execs % 64 != 0 || std::chrono::steady_clock::now() < end) {
    Bytes input = mutator.next();
    ++execs;
    if (run_one(t, input)) {
      ++accepted;
      mutator.keep(input);
    }
  }
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("fuzz %-17s %10ld executions in %6.1f s (%6.0f/s), %ld accepted, seed %llu\n",
              t.name, execs, took, execs / took, accepted,
              static_cast<unsigned long long>(opt.seed));
  std::fflush(stdout);
  CHECK(execs > 0);
}

bool selected(const Options& opt, const FuzzTarget& t) {
  if (opt.targets.empty()) return true;
  for (const auto& name : opt.targets) {
    if (name == t.name) return true;
  }
  return false;
}

int replay(const Options& opt) {
  std::ifstream in(opt.run_file, std::ios::binary);
  Bytes input((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const FuzzTarget& t : all_targets()) {
    if (!selected(opt, t)) continue;
    std::printf("%s: %zu bytes, %s\n", t.name, input.size(),
                run_one(t, input) ? "accepted" : "rejected");
  }
  return 0;
}

int write_corpus(const Options& opt) {
  for (const FuzzTarget& t : all_targets()) {
    if (!selected(opt, t)) continue;
    std::vector<Bytes> seeds = t.seeds();
    for (size_t i = 0; i < seeds.size(); ++i) {
      std::string path = opt.corpus_dir + "/" + t.name + "-seed-" + std::to_string(i);
      std::ofstream(path, std::ios::binary)
          .write(reinterpret_cast<const char*>(seeds[i].data()),
                 static_cast<std::streamsize>(seeds[i].size()));
    }
    std::printf("%s: %zu seeds written to %s\n", t.name, seeds.size(), opt.corpus_dir.c_str());
  }
  return 0;
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: fuzz_parsers [--seconds N] [--seed S] [--target NAME]...\n"
               "       fuzz_parsers --run FILE [--target NAME]\n"
               "       fuzz_parsers --write-corpus DIR [--target NAME]\n"
               "targets:");
  for (const FuzzTarget& t : all_targets()) std::fprintf(stderr, " %s", t.name);
  std::fprintf(stderr, "\n");
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage();
    std::string v = argv[++i];
    if (a == "--seconds") opt.seconds = std::stod(v);
    else if (a == "--seed") opt.seed = std::stoull(v);
    else if (a == "--target") opt.targets.push_back(v);
    else if (a == "--run") opt.run_file = v;
    else if (a == "--write-corpus") opt.corpus_dir = v;
    else usage();
  }
  for (const auto& name : opt.targets) {
    bool known = false;
    for (const FuzzTarget& t : all_targets()) known = known || name == t.name;
    if (!known) usage();
  }
  return opt;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse(argc, argv);
  if (!opt.run_file.empty()) return replay(opt);
  if (!opt.corpus_dir.empty()) return write_corpus(opt);
  install_crash_handlers();
  for (const FuzzTarget& t : all_targets()) {
    if (selected(opt, t)) fuzz(t, opt);
  }
  return check_summary("fuzz_parsers");
}
