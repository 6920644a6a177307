#include "master/link_table.h"

#include <limits>

#include "topology/ring_planner.h"

namespace pccl {

void LinkTable::record(uint64_t from, const LinkFigure& figure, double now_s) {
  records_[{from, figure.to}] = {figure.bytes_per_s, figure.rtt_us, figure.ok, now_s};
}

void LinkTable::mark_broken(uint64_t a, uint64_t b, double now_s) {
  records_[{a, b}] = {0, 0, false, now_s};
  records_[{b, a}] = {0, 0, false, now_s};
}

bool LinkTable::broken(const Pair& link) const {
  auto it = records_.find(link);
  return it != records_.end() && !it->second.ok;
}

bool LinkTable::ring_uses_broken(const std::vector<uint64_t>& ring) const {
  for (size_t i = 0; ring.size() > 1 && i < ring.size(); ++i) {
    if (broken({ring[i], ring[(i + 1) % ring.size()]})) return true;
  }
  return false;
}

void LinkTable::forget_peer(uint64_t id) {
  for (auto it = records_.begin(); it != records_.end();) {
    it = it->first.first == id || it->first.second == id ? records_.erase(it) : std::next(it);
  }
}

bool LinkTable::fresh(const Pair& link, double now_s, double max_age_s) const {
  auto it = records_.find(link);
  return it != records_.end() && it->second.ok && now_s - it->second.measured_at_s <= max_age_s;
}

std::map<uint64_t, std::vector<ProbeRound>> LinkTable::plan(const std::vector<uint64_t>& members,
                                                            double now_s, double max_age_s) const {
  std::map<uint64_t, std::vector<ProbeRound>> rounds;
  size_t n = members.size();
  for (uint64_t m : members) rounds[m];
  for (size_t shift = 1; shift < n; ++shift) {
    std::vector<ProbeRound> round(n);
    bool any = false;
    for (size_t i = 0; i < n; ++i) {
      uint64_t from = members[i], to = members[(i + shift) % n];
      if (fresh({from, to}, now_s, max_age_s)) continue;
      round[i].to = to;
      round[(i + shift) % n].from = from;
      any = true;
    }
    if (!any) continue;
    for (size_t i = 0; i < n; ++i) rounds[members[i]].push_back(round[i]);
  }
  return rounds;
}

CostMatrix LinkTable::costs(const std::vector<uint64_t>& members) const {
  return costs(members, std::numeric_limits<double>::infinity());
}

CostMatrix LinkTable::costs(const std::vector<uint64_t>& members, double unknown_s) const {
  size_t n = members.size();
  CostMatrix cost(n, std::vector<double>(n, 0.0));
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      if (i == j) continue;
      auto it = records_.find({members[i], members[j]});
      if (it == records_.end()) {
        cost[i][j] = unknown_s;
      } else if (!it->second.ok) {
        cost[i][j] = std::numeric_limits<double>::infinity();
      } else {
        cost[i][j] = link_seconds(static_cast<double>(it->second.bytes_per_s),
                                  it->second.rtt_us * 1e-6);
      }
    }
  }
  return cost;
}

}  // namespace pccl
