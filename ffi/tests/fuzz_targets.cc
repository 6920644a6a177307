#include <cstdio>
#include <cstdlib>

#include "tests/fuzz_target.h"

namespace pccl_fuzz {

std::vector<FuzzTarget> all_targets() {
  return {frame_target(), messages_target(), state_messages_target(), topology_messages_target(),
          wire_target(), handshake_target()};
}

void fail(const char* target, const char* property) {
  std::fprintf(stderr, "fuzz target %s: property violated: %s\n", target, property);
  std::fflush(stderr);
  std::abort();
}

}  // namespace pccl_fuzz
