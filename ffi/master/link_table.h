// What the master knows about the directed links between the members of one
// group: rates and round trips measured by optimize_topology()'s probes, with
// their age. It plans which links to probe next: every directed pair whose
// figure is missing, failed or older than the maximum age, in rounds in which
// each member sends one probe and receives one (round s: the member at ring
// position i probes position i + s), so the whole matrix takes N - 1 rounds
// and each round loads every peer the way a ring all-reduce does.
#pragma once
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "protocol/topology_messages.h"
#include "topology/ring_solver.h"

namespace pccl {

struct LinkRecord {
  uint64_t bytes_per_s = 0;
  uint64_t rtt_us = 0;
  bool ok = false;
  double measured_at_s = 0;
};

class LinkTable {
 public:
  using Pair = std::pair<uint64_t, uint64_t>;  // (from, to)

  void record(uint64_t from, const LinkFigure& figure, double now_s);
  // A link found broken outside a probe (both ends reported each other
  // unreachable): unusable in both directions until a probe succeeds.
  void mark_broken(uint64_t a, uint64_t b, double now_s);
  bool broken(const Pair& link) const;  // a failed figure is on record
  // Whether the ring (in order, closing back to the first) uses a broken link.
  bool ring_uses_broken(const std::vector<uint64_t>& ring) const;
  void forget_peer(uint64_t id);  // a member left: its figures go with it
  // A usable figure younger than max_age_s (a failed probe is never fresh:
  // the next optimisation probes that link again, so a repaired link returns).
  bool fresh(const Pair& link, double now_s, double max_age_s) const;
  // Each member's rounds (same count for all; empty when every figure is fresh).
  std::map<uint64_t, std::vector<ProbeRound>> plan(const std::vector<uint64_t>& members,
                                                   double now_s, double max_age_s) const;
  // cost[i][j] for members[i] -> members[j] (link_seconds; infinity when unknown or failed).
  CostMatrix costs(const std::vector<uint64_t>& members) const;
  // The same, but a link without any figure costs `unknown_s` (routing
  // around broken links before everything is measured).
  CostMatrix costs(const std::vector<uint64_t>& members, double unknown_s) const;
  const std::map<Pair, LinkRecord>& records() const { return records_; }

 private:
  std::map<Pair, LinkRecord> records_;
};

}  // namespace pccl
