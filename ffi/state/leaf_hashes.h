// Content hashes of many leaves at once. XXH64 is sequential within a leaf,
// so the parallelism is across leaves: a state of several large leaves
// hashes in a fraction of the single-core time.
#pragma once
#include <cstdint>
#include <vector>

#include "state/state_server.h"

namespace pccl {

std::vector<uint64_t> hash_leaves(const std::vector<ConstSpan>& leaves);

}  // namespace pccl
