// The kinds of data collective a communicator runs, each described once:
// its name, which arguments it uses, its output size, and how it runs over
// the ring or inline (inputs attached to the header exchange). The
// communicator's placement, agreement, failure handling and async slots are
// the same for all of them (communicator.cc); adding a kind is its
// algorithm file (collectives/ring_<kind>.cc) and one entry here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "collectives/quantization.h"
#include "collectives/ring_allreduce.h"
#include "common/dtype.h"
#include "protocol/messages.h"

namespace pccl {

// Shape information carried in the collective header, so that peers can
// name exactly what differs when they disagree.
struct LeafDescriptor {
  std::vector<int64_t> dims;
  uint32_t leaf_index = 0;
  uint32_t leaf_count = 1;
};

// One collective over the caller's buffers: `count` elements in, as many
// out as the kind makes of them (output_count).
struct CollectiveCall {
  CollectiveKind kind = CollectiveKind::kAllReduce;
  const void* in = nullptr;
  void* out = nullptr;
  size_t count = 0;
  DType dtype = DType::kFloat32;
  ReduceOp op = ReduceOp::kSum;  // kinds that reduce
  uint32_t root = 0;             // broadcast
  // The group size the output was sized for; a group of another size fails
  // the call on every peer alike (CollectiveMismatch). 0: any (all-reduce
  // and broadcast only: their output does not depend on it).
  uint32_t world = 0;
  LeafDescriptor leaf;
  Quantization quantization = Quantization::kNone;  // all-reduce of floating dtypes only
};

// An all-reduce's call (world: any).
CollectiveCall all_reduce_call(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                               const LeafDescriptor& leaf = {},
                               Quantization quantization = Quantization::kNone);

struct CollectiveKindInfo {
  CollectiveKind kind;
  const char* name;   // as the user API spells it: "all_gather"
  bool reduces;       // uses op
  bool rooted;        // uses root
  bool sized_by_world;  // output_count depends on the group size: world is required
  // Output elements for `count` in over a group of `n`.
  size_t (*output_count)(size_t count, uint32_t n);
  // The checks of the agreed call's arguments against the group (throws
  // PcclError), before any data moves: every peer throws alike.
  void (*check)(const CollectiveCall& call, int n);
  RingTraffic (*ring)(const RingPeers& ring, const RingOptions& options, const CollectiveCall& call,
                      const void* in, void* out);
  // inputs[r]: rank r's input (ours included).
  void (*finish_inline)(const CollectiveCall& call, int rank,
                        const std::vector<const uint8_t*>& inputs, void* out);
};

// The kind's description; throws PcclError for a kind that moves no data.
const CollectiveKindInfo& collective_kind(CollectiveKind kind);
// Every kind that moves data (the bindings export their codes by name).
std::vector<CollectiveKindInfo> collective_kinds();
// Input bytes of `call`: count elements of its dtype.
size_t input_bytes(const CollectiveCall& call);
// Output bytes of `call` as sized by its caller (call.world, or its input size).
size_t output_bytes(const CollectiveCall& call);

}  // namespace pccl
