#include "protocol/topology_messages.h"

#include <string>

#include "common/errors.h"
#include "protocol/wire.h"

namespace pccl {

namespace {

uint32_t bounded_count(WireReader& r, uint32_t max, const char* what) {
  uint32_t n = r.u32();
  if (n > max) throw ProtocolViolation(std::string(what) + ": " + std::to_string(n) + " entries");
  return n;
}

}  // namespace

std::vector<uint8_t> OptimizeMsg::encode() const { return WireWriter().u64(epoch).take(); }
OptimizeMsg OptimizeMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  OptimizeMsg m;
  m.epoch = r.u64();
  r.expect_end();
  return m;
}

std::vector<uint8_t> LinkPlanMsg::encode() const {
  WireWriter w;
  w.u64(epoch).u32(probe_ms).u16(streams).u32(static_cast<uint32_t>(rounds.size()));
  for (const ProbeRound& round : rounds) w.u64(round.to).u64(round.from);
  return w.take();
}
LinkPlanMsg LinkPlanMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  LinkPlanMsg m;
  m.epoch = r.u64();
  m.probe_ms = r.u32();
  if (m.probe_ms == 0 || m.probe_ms > kMaxProbeMillis) {
    throw ProtocolViolation("link plan: probe of " + std::to_string(m.probe_ms) + " ms");
  }
  m.streams = r.u16();
  if (m.streams == 0 || m.streams > kMaxRingConnections) {
    throw ProtocolViolation("link plan: " + std::to_string(m.streams) + " streams per probe");
  }
  m.rounds.resize(bounded_count(r, kMaxRingMembers, "link plan rounds"));
  for (ProbeRound& round : m.rounds) {
    round.to = r.u64();
    round.from = r.u64();
  }
  r.expect_end();
  return m;
}

std::vector<uint8_t> LinkReportMsg::encode() const {
  WireWriter w;
  w.u64(epoch).u32(static_cast<uint32_t>(figures.size()));
  for (const LinkFigure& f : figures) w.u64(f.to).u64(f.bytes_per_s).u64(f.rtt_us).u8(f.ok ? 1 : 0);
  return w.take();
}
LinkReportMsg LinkReportMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  LinkReportMsg m;
  m.epoch = r.u64();
  m.figures.resize(bounded_count(r, kMaxRingMembers, "link report"));
  for (LinkFigure& f : m.figures) {
    f.to = r.u64();
    f.bytes_per_s = r.u64();
    f.rtt_us = r.u64();
    uint8_t ok = r.u8();
    if (ok > 1) throw ProtocolViolation("link report: bad ok flag");
    f.ok = ok == 1;
    if (!f.ok && f.bytes_per_s != 0) throw ProtocolViolation("link report: a failed probe with a rate");
  }
  r.expect_end();
  return m;
}

std::vector<uint8_t> ProbeStartMsg::encode() const {
  return WireWriter().u32(round).u32(pings).u32(window_ms).take();
}
ProbeStartMsg ProbeStartMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  ProbeStartMsg m;
  m.round = r.u32();
  if (m.round >= kMaxRingMembers) throw ProtocolViolation("probe: round out of bounds");
  m.pings = r.u32();
  if (m.pings > kMaxProbePings) throw ProtocolViolation("probe: too many pings");
  m.window_ms = r.u32();
  if (m.window_ms > kMaxProbeMillis) throw ProtocolViolation("probe: window out of bounds");
  r.expect_end();
  return m;
}

std::vector<uint8_t> ProbeResultMsg::encode() const {
  return WireWriter().u64(bytes).u64(first_us).u64(last_us).u64(tail_bytes).u64(tail_from_us)
      .take();
}
ProbeResultMsg ProbeResultMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  ProbeResultMsg m;
  m.bytes = r.u64();
  m.first_us = r.u64();
  m.last_us = r.u64();
  m.tail_bytes = r.u64();
  m.tail_from_us = r.u64();
  if (m.last_us < m.first_us) throw ProtocolViolation("probe result: last byte before the first");
  if (m.tail_bytes > m.bytes) throw ProtocolViolation("probe result: more bytes in the tail than in all");
  if (m.tail_bytes > 0 && (m.tail_from_us < m.first_us || m.tail_from_us > m.last_us)) {
    throw ProtocolViolation("probe result: the tail starts outside the window");
  }
  r.expect_end();
  return m;
}

}  // namespace pccl
