// libFuzzer entry point for one target of fuzz_target.h, chosen at build time
// (PCCL_FUZZ_TARGET, e.g. "frame"): coverage-guided fuzzing of the same
// harness the plain driver runs. Built by -DJAX_PCCL_LIBFUZZER=ON (clang only),
// one executable per target: fuzz_<target>_libfuzzer CORPUS_DIR -max_total_time=600
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tests/fuzz_target.h"

#ifndef PCCL_FUZZ_TARGET
#error "define PCCL_FUZZ_TARGET to the name of a fuzz target"
#endif

namespace {

pccl_fuzz::FuzzTarget g_target{};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  for (const auto& t : pccl_fuzz::all_targets()) {
    if (std::strcmp(t.name, PCCL_FUZZ_TARGET) == 0) g_target = t;
  }
  if (g_target.one_input == nullptr) {
    std::fprintf(stderr, "unknown fuzz target %s\n", PCCL_FUZZ_TARGET);
    std::abort();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  g_target.one_input(data, size);
  return 0;
}
