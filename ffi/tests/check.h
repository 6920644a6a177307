// Minimal assertion helpers for the engine's standalone C++ tests (no gtest).
// A failed check prints file:line and the values, counts, and carries on, so
// one run reports every failure; check_summary() turns the tally into an exit code.
#pragma once
#include <atomic>
#include <cstdio>
#include <iostream>
#include <string>
#include <type_traits>

#include "common/errors.h"

namespace pccl_test {

// Atomic: tests check from several peer threads at once (a race TSan reports).
inline std::atomic<long> g_passed{0};
inline std::atomic<long> g_failed{0};

// Print chars as numbers: int8_t/uint8_t are char types to iostreams.
template <typename T>
auto printable(const T& v) {
  if constexpr (std::is_integral_v<T> && sizeof(T) == 1) return static_cast<int>(v);
  else return v;
}

inline bool record(bool ok, const char* file, int line, const char* what, const char* expr) {
  if (ok) { ++g_passed; return true; }
  ++g_failed;
  std::cerr << file << ":" << line << ": " << what << " failed: " << expr << "\n";
  return false;
}

template <typename A, typename B>
bool check_eq(const A& a, const B& b, const char* file, int line, const char* expr) {
  if (record(a == b, file, line, "CHECK_EQ", expr)) return true;
  std::cerr << "    left = " << printable(a) << ", right = " << printable(b) << "\n";
  return false;
}

}  // namespace pccl_test

// Both return whether the check passed, so a test can print extra context.
#define CHECK(cond) ::pccl_test::record(static_cast<bool>(cond), __FILE__, __LINE__, "CHECK", #cond)
#define CHECK_EQ(a, b) ::pccl_test::check_eq((a), (b), __FILE__, __LINE__, #a " == " #b)

// Bulk loops count their own failures (printing the first few) and then make
// one CHECK, so a broken kernel or codec does not print thousands of lines.
// Element-level cases behind the Tally checks, for the log; atomic: peer
// threads finish their tallies at once.
inline std::atomic<long> g_bulk_cases{0};

struct Tally {
  std::string what;
  long bad = 0, total = 0;
  // detail() builds the message only on failure: keeps the bulk loops fast.
  template <typename F>
  void expect(bool ok, F&& detail) {
    ++total;
    if (!ok && bad++ < 5) std::fprintf(stderr, "  %s: %s\n", what.c_str(), detail().c_str());
  }
  void finish() {
    g_bulk_cases += total;
    if (!CHECK_EQ(bad, 0L)) std::fprintf(stderr, "  ^ in %s (%ld cases)\n", what.c_str(), total);
  }
};

// Whether fn() throws a PcclError of `kind` (its message into *what, if given).
template <typename Fn>
bool throws_kind(Fn fn, pccl::ErrorKind kind, std::string* what = nullptr) {
  try {
    fn();
  } catch (const pccl::PcclError& e) {
    if (what) *what = e.what();
    return e.kind() == kind;
  }
  return false;
}

// Prints "<name>: N passed, M failed" and returns the process exit code.
inline int check_summary(const char* test_name) {
  std::printf("%s: %ld passed, %ld failed\n", test_name, pccl_test::g_passed.load(),
              pccl_test::g_failed.load());
  return pccl_test::g_failed == 0 ? 0 : 1;
}
