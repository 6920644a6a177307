// Fuzz target "state_messages": every decoder of
// protocol/shared_state_messages.h (master <-> peer sync control, peer <->
// peer fetch requests and data headers).
//
// Input: one byte choosing the message type, then its payload.
// Properties: decode() returns or throws PcclError, nothing else; whatever
// decodes re-encodes to exactly the same bytes; decoded plans only reference
// holders and holder sets that exist.
#include "common/errors.h"
#include "protocol/shared_state_messages.h"
#include "tests/fuzz_target.h"

namespace pccl_fuzz {
namespace {

constexpr const char* kName = "state_messages";

template <typename Msg>
bool round_trip(const Bytes& payload) {
  return decodes_exactly<Msg>(kName, payload, [](const Msg&) {});
}

bool plan_round_trip(const Bytes& payload) {
  return decodes_exactly<pccl::SyncPlanMsg>(kName, payload, [](const pccl::SyncPlanMsg& m) {
    for (uint32_t set : m.leaf_holder_set) FUZZ_CHECK(kName, set < m.holder_sets.size());
    for (const auto& set : m.holder_sets) {
      for (uint16_t h : set) FUZZ_CHECK(kName, h < m.holders.size());
    }
  });
}

using Decoder = bool (*)(const Bytes&);
constexpr Decoder kDecoders[] = {
    round_trip<pccl::SyncRequestMsg>, plan_round_trip,
    round_trip<pccl::SyncDoneMsg>,    round_trip<pccl::SyncCompleteMsg>,
    round_trip<pccl::StateFetchMsg>,  round_trip<pccl::StateDataMsg>,
};

bool one_input(const uint8_t* data, size_t size) { return dispatch_tagged(kDecoders, data, size); }

std::vector<Bytes> seeds() {
  pccl::SyncRequestMsg req;
  req.request_id = 3;
  req.revision = 41;
  req.strategy = 2;
  req.leaves = {{0x1234, 4096, 0, {32, 32}}, {0x99, 8, 7, {}}};
  pccl::SyncPlanMsg plan;
  plan.request_id = 3;
  plan.round = 5;
  plan.revision = 41;
  plan.holders = {{11, "127.0.0.1", 4000}, {12, "::1", 4001}};
  plan.holder_sets = {{0, 1}, {1}};
  plan.leaf_hash = {0x1234, 0x99};
  plan.leaf_holder_set = {0, 1};
  plan.refusals = {{13, 0, "revision 50 has not been reached"}};
  pccl::StateFetchMsg fetch;
  fetch.ranges = {{0, 0, 4 << 20}, {1, 8, 16}};
  return {
      tagged(0, req.encode()),
      tagged(1, plan.encode()),
      tagged(2, pccl::SyncDoneMsg{5, 0, "every holder failed"}.encode()),
      tagged(3, pccl::SyncCompleteMsg{5, 1, ""}.encode()),
      tagged(4, fetch.encode()),
      tagged(5, pccl::StateDataMsg{{0, 0, 4096}, 1}.encode()),
  };
}

}  // namespace

FuzzTarget state_messages_target() { return {kName, one_input, seeds}; }

}  // namespace pccl_fuzz
