// Fuzz target "topology_messages": every decoder of
// protocol/topology_messages.h (optimize_topology(): master <-> peer control,
// and the probe connections between peers). PROBE_PING has no payload, so no
// decoder: the probed side refuses a non-empty one itself.
//
// Input: one byte choosing the message type, then its payload.
// Properties: decode() returns or throws PcclError, nothing else; whatever
// decodes re-encodes to exactly the same bytes; and what decodes is within
// the bounds the header promises, since the master and the prober size their
// work by these fields (probe time and streams, counts of rounds and figures,
// pings) and compute rates from them (a failed figure has no rate, a result's
// last byte is never before its first).
#include "common/errors.h"
#include "protocol/topology_messages.h"
#include "tests/fuzz_target.h"

namespace pccl_fuzz {
namespace {

constexpr const char* kName = "topology_messages";

bool optimize_round_trip(const Bytes& payload) {
  return decodes_exactly<pccl::OptimizeMsg>(kName, payload, [](const pccl::OptimizeMsg&) {});
}

bool plan_round_trip(const Bytes& payload) {
  return decodes_exactly<pccl::LinkPlanMsg>(kName, payload, [](const pccl::LinkPlanMsg& m) {
    FUZZ_CHECK(kName, m.probe_ms >= 1 && m.probe_ms <= pccl::kMaxProbeMillis);
    FUZZ_CHECK(kName, m.streams >= 1 && m.streams <= pccl::kMaxRingConnections);
    FUZZ_CHECK(kName, m.rounds.size() <= pccl::kMaxRingMembers);
  });
}

bool report_round_trip(const Bytes& payload) {
  return decodes_exactly<pccl::LinkReportMsg>(kName, payload, [](const pccl::LinkReportMsg& m) {
    FUZZ_CHECK(kName, m.figures.size() <= pccl::kMaxRingMembers);
    for (const pccl::LinkFigure& f : m.figures) FUZZ_CHECK(kName, f.ok || f.bytes_per_s == 0);
  });
}

bool start_round_trip(const Bytes& payload) {
  return decodes_exactly<pccl::ProbeStartMsg>(kName, payload, [](const pccl::ProbeStartMsg& m) {
    FUZZ_CHECK(kName, m.round < pccl::kMaxRingMembers);
    FUZZ_CHECK(kName, m.pings <= pccl::kMaxProbePings);
  });
}

bool result_round_trip(const Bytes& payload) {
  return decodes_exactly<pccl::ProbeResultMsg>(kName, payload, [](const pccl::ProbeResultMsg& m) {
    FUZZ_CHECK(kName, m.last_us >= m.first_us);
    FUZZ_CHECK(kName, m.tail_bytes <= m.bytes);
    FUZZ_CHECK(kName, m.tail_bytes == 0 || (m.first_us <= m.tail_from_us && m.tail_from_us <= m.last_us));
  });
}

using Decoder = bool (*)(const Bytes&);
constexpr Decoder kDecoders[] = {
    optimize_round_trip, plan_round_trip, report_round_trip, start_round_trip, result_round_trip,
};

bool one_input(const uint8_t* data, size_t size) { return dispatch_tagged(kDecoders, data, size); }

std::vector<Bytes> seeds() {
  pccl::LinkPlanMsg plan;
  plan.epoch = 7;
  plan.probe_ms = 1000;
  plan.streams = 4;
  plan.rounds = {{11, 13}, {0, 12}, {12, 0}};  // 0: nobody that round
  pccl::LinkPlanMsg empty_plan;                // every figure fresh: no rounds
  empty_plan.epoch = 8;
  empty_plan.probe_ms = pccl::kMaxProbeMillis;
  empty_plan.streams = pccl::kMaxRingConnections;
  pccl::LinkReportMsg report;
  report.epoch = 7;
  report.figures = {{11, 125'000'000, 180, true}, {12, 0, 0, false}};
  return {
      tagged(0, pccl::OptimizeMsg{7}.encode()),
      tagged(1, plan.encode()),
      tagged(1, empty_plan.encode()),
      tagged(2, report.encode()),
      tagged(2, pccl::LinkReportMsg{9, {}}.encode()),
      tagged(3, pccl::ProbeStartMsg{2, 3, 1000}.encode()),
      tagged(3, pccl::ProbeStartMsg{0, 0, 0}.encode()),
      tagged(4, pccl::ProbeResultMsg{1 << 26, 1000, 251'000, 1 << 25, 188'000}.encode()),
      tagged(4, pccl::ProbeResultMsg{0, 5, 5}.encode()),
  };
}

}  // namespace

FuzzTarget topology_messages_target() { return {kName, one_input, seeds}; }

}  // namespace pccl_fuzz
