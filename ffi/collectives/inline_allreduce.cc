#include "collectives/inline_allreduce.h"

#include <cstring>

#include "collectives/reduce_kernels.h"
#include "protocol/messages.h"

namespace pccl {
namespace {

// Past this many peers a peer would receive more than 8 inputs per call;
// the ring's 2(N-1)/N volume wins back what the extra hops cost.
constexpr int kMaxInlinePeers = 8;

}  // namespace

bool use_inline_all_reduce(size_t bytes, int peers, Quantization quantization) {
  return quantization == Quantization::kNone && peers > 1 && peers <= kMaxInlinePeers &&
         bytes <= kMaxInlineCollectiveData;
}

void reduce_in_rank_order(const std::vector<const uint8_t*>& inputs, void* out, size_t count,
                          DType dtype, ReduceOp op) {
  if (inputs.empty() || count == 0) return;
  std::memcpy(out, inputs[0], count * dtype_size(dtype));
  for (size_t r = 1; r < inputs.size(); ++r) reduce(dtype, op, out, out, inputs[r], count);
  if (op == ReduceOp::kAvg) divide_in_place(dtype, out, count, static_cast<uint32_t>(inputs.size()));
}

}  // namespace pccl
