// The messages of optimize_topology(): peers ask the master to reorder their
// ring (OPTIMIZE), the master tells each one which links to probe in which
// round (LINK_PLAN), each reports what its outgoing probes measured
// (LINK_REPORT), and the master answers with a new TOPOLOGY. Probe
// connections (LinkPurpose::kLinkProbe) carry PROBE_START, PROBE_PING and
// PROBE_RESULT between two peers. Every decoder is strict and bounded.
#pragma once
#include <cstdint>
#include <vector>

#include "protocol/messages.h"

namespace pccl {

// Bounds a client cannot exceed (decoders refuse more).
constexpr uint32_t kMaxProbeMillis = 60'000;
constexpr uint32_t kMaxProbePings = 16;

// peer -> master: reorder our group's ring; every accepted member sends it at
// the same epoch (a collective, like a vote).
struct OptimizeMsg {
  uint64_t epoch = 0;
  std::vector<uint8_t> encode() const;
  static OptimizeMsg decode(const std::vector<uint8_t>& b);
};

// One round of a peer's part of the plan: whom it probes (sends to) and whom
// it is probed by (receives from); 0: nobody.
struct ProbeRound {
  uint64_t to = 0;
  uint64_t from = 0;
};

// master -> each member: its own rounds (rounds are run in order, and every
// peer's round r runs at the same time as the others', see
// peer/link_prober.h). No rounds: every figure is fresh; report at once.
struct LinkPlanMsg {
  uint64_t epoch = 0;
  uint32_t probe_ms = 0;  // how long each probe sends, 1..kMaxProbeMillis
  uint16_t streams = 1;   // TCP connections per probe, 1..kMaxRingConnections
  std::vector<ProbeRound> rounds;  // at most kMaxRingMembers
  std::vector<uint8_t> encode() const;
  static LinkPlanMsg decode(const std::vector<uint8_t>& b);
};

// What one directed link from the reporting peer measured.
struct LinkFigure {
  uint64_t to = 0;
  uint64_t bytes_per_s = 0;  // 0 when !ok
  uint64_t rtt_us = 0;
  bool ok = false;  // false: the probe failed (refused, reset, timed out)
};

// peer -> master: the figures of the links this peer probed (its `to`s).
struct LinkReportMsg {
  uint64_t epoch = 0;
  std::vector<LinkFigure> figures;  // at most kMaxRingMembers
  std::vector<uint8_t> encode() const;
  static LinkReportMsg decode(const std::vector<uint8_t>& b);
};

// Probe connection, prober -> probed, right after PEER_HELLO: which round
// this connection belongs to, how many round trips to echo before the bulk
// bytes (pings on stream 0 only; the others send pings = 0), and how long
// the probed side counts bulk bytes from the first one on (0: none, the
// ping only). The window is the receiver's, not the sender's: bytes still
// queued when it ends are never waited for (on a slow path the sender's
// buffers would otherwise take seconds to drain).
struct ProbeStartMsg {
  uint32_t round = 0;
  uint32_t pings = 0;      // <= kMaxProbePings
  uint32_t window_ms = 0;  // <= kMaxProbeMillis
  std::vector<uint8_t> encode() const;
  static ProbeStartMsg decode(const std::vector<uint8_t>& b);
};

// Probe connection, probed -> prober, once the window has passed: what
// arrived within it, timed on the probed peer's clock (first and last byte, in
// microseconds of its steady clock), so streams of one probe can be summed.
// The window's last quarter is counted apart as well (tail_bytes, the bytes
// that arrived at or after tail_from_us): on a long fast path a short window
// is mostly TCP slow start, and the rate late in it is nearer the path's.
struct ProbeResultMsg {
  uint64_t bytes = 0;
  uint64_t first_us = 0;
  uint64_t last_us = 0;      // >= first_us
  uint64_t tail_bytes = 0;   // <= bytes
  uint64_t tail_from_us = 0; // in [first_us, last_us] when tail_bytes > 0
  std::vector<uint8_t> encode() const;
  static ProbeResultMsg decode(const std::vector<uint8_t>& b);
};

}  // namespace pccl
