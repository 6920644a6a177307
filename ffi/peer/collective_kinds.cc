#include "peer/collective_kinds.h"

#include <iterator>
#include <string>

#include "collectives/inline_allreduce.h"
#include "collectives/ring_all_gather.h"
#include "collectives/ring_broadcast.h"
#include "collectives/ring_quantized.h"
#include "collectives/ring_reduce_scatter.h"
#include "common/errors.h"

namespace pccl {
namespace {

size_t same_count(size_t count, uint32_t) { return count; }
size_t times_world(size_t count, uint32_t n) { return count * n; }
size_t per_rank(size_t count, uint32_t n) { return n == 0 ? 0 : count / n; }

void no_check(const CollectiveCall&, int) {}

// --- all_reduce --------------------------------------------------------------

void check_all_reduce(const CollectiveCall& call, int) {
  if (call.quantization != Quantization::kNone &&
      !quantization_applies(call.quantization, call.dtype)) {
    throw PcclError(std::string("quantization ") + quantization_name(call.quantization) +
                    " does not apply to dtype " + dtype_name(call.dtype));
  }
}

RingTraffic all_reduce_ring(const RingPeers& ring, const RingOptions& options,
                            const CollectiveCall& call, const void* in, void* out) {
  if (call.quantization == Quantization::kNone) {
    return ring_all_reduce(ring, options, in, out, call.count, call.dtype, call.op);
  }
  return ring_all_reduce_quantized(ring, options, in, out, call.count, call.dtype, call.op,
                                   call.quantization);
}

void all_reduce_inline(const CollectiveCall& call, int, const std::vector<const uint8_t*>& inputs,
                       void* out) {
  reduce_in_rank_order(inputs, out, call.count, call.dtype, call.op);
}

// --- all_gather --------------------------------------------------------------

RingTraffic all_gather_ring(const RingPeers& ring, const RingOptions& options,
                            const CollectiveCall& call, const void* in, void* out) {
  return ring_all_gather(ring, options, in, out, call.count, call.dtype);
}

void all_gather_finish(const CollectiveCall& call, int, const std::vector<const uint8_t*>& inputs,
                       void* out) {
  all_gather_inline(inputs, out, call.count, call.dtype);
}

// --- broadcast ---------------------------------------------------------------

void check_broadcast(const CollectiveCall& call, int n) {
  if (call.root >= static_cast<uint32_t>(n)) {
    throw PcclError("broadcast: root " + std::to_string(call.root) + " is not a rank of this group (" +
                    std::to_string(n) + " peers)");
  }
}

RingTraffic broadcast_ring(const RingPeers& ring, const RingOptions& options,
                           const CollectiveCall& call, const void* in, void* out) {
  return ring_broadcast(ring, options, in, out, call.count, call.dtype, static_cast<int>(call.root));
}

void broadcast_finish(const CollectiveCall& call, int, const std::vector<const uint8_t*>& inputs,
                      void* out) {
  broadcast_inline(inputs[call.root], out, call.count, call.dtype);
}

// --- reduce_scatter ----------------------------------------------------------

void check_reduce_scatter(const CollectiveCall& call, int n) {
  if (call.count % static_cast<size_t>(n) != 0) {
    throw PcclError("reduce_scatter: " + std::to_string(call.count) +
                    " elements do not split evenly over " + std::to_string(n) + " peers");
  }
}

RingTraffic reduce_scatter_ring(const RingPeers& ring, const RingOptions& options,
                                const CollectiveCall& call, const void* in, void* out) {
  return ring_reduce_scatter(ring, options, in, out, call.count, call.dtype, call.op);
}

void reduce_scatter_finish(const CollectiveCall& call, int rank,
                           const std::vector<const uint8_t*>& inputs, void* out) {
  reduce_scatter_inline(inputs, rank, out, call.count, call.dtype, call.op);
}

const CollectiveKindInfo kKinds[] = {
    {CollectiveKind::kAllReduce, "all_reduce", true, false, false, same_count, check_all_reduce,
     all_reduce_ring, all_reduce_inline},
    {CollectiveKind::kAllGather, "all_gather", false, false, true, times_world, no_check,
     all_gather_ring, all_gather_finish},
    {CollectiveKind::kBroadcast, "broadcast", false, true, false, same_count, check_broadcast,
     broadcast_ring, broadcast_finish},
    {CollectiveKind::kReduceScatter, "reduce_scatter", true, false, true, per_rank,
     check_reduce_scatter, reduce_scatter_ring, reduce_scatter_finish},
};

}  // namespace

CollectiveCall all_reduce_call(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                               const LeafDescriptor& leaf, Quantization quantization) {
  CollectiveCall call;
  call.in = in;
  call.out = out;
  call.count = count;
  call.dtype = dtype;
  call.op = op;
  call.leaf = leaf;
  call.quantization = quantization;
  return call;
}

const CollectiveKindInfo& collective_kind(CollectiveKind kind) {
  for (const CollectiveKindInfo& k : kKinds) {
    if (k.kind == kind) return k;
  }
  throw PcclError("not a data collective: kind " + std::to_string(static_cast<int>(kind)));
}

std::vector<CollectiveKindInfo> collective_kinds() {
  return std::vector<CollectiveKindInfo>(std::begin(kKinds), std::end(kKinds));
}

size_t input_bytes(const CollectiveCall& call) { return call.count * dtype_size(call.dtype); }

size_t output_bytes(const CollectiveCall& call) {
  const CollectiveKindInfo& k = collective_kind(call.kind);
  return k.output_count(call.count, call.world) * dtype_size(call.dtype);
}

}  // namespace pccl
