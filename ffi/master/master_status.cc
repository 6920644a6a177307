// Master::status_json() and the reply to `jax-pccl status` (master.h):
// peers, groups with their rings and link figures, recent events.
#include <chrono>
#include <cmath>
#include <sstream>

#include "master/master.h"

namespace pccl {
namespace {

std::string json_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') { out += '\\'; out += ch; }
    else if (static_cast<unsigned char>(ch) < 0x20) out += ' ';
    else out += ch;
  }
  return out;
}

}  // namespace

void Master::write_topology_json(std::ostringstream& os, const MasterCore::Group& g,
                                 bool with_links) const {
  // Ids as JSON numbers are exact: they have 53 bits (MasterCore::new_peer_id).
  os << "\"ring\":[";
  for (size_t i = 0; i < g.ring.size(); ++i) os << (i ? "," : "") << g.ring[i];
  os << "],\"links\":[";
  double now = core_.now_s();
  bool first = true;
  for (const auto& [link, r] : g.links.records()) {
    if (!with_links) break;
    os << (first ? "" : ",") << "{\"from\":" << link.first << ",\"to\":" << link.second
       << ",\"ok\":" << (r.ok ? "true" : "false") << ",\"bytes_per_s\":" << r.bytes_per_s
       << ",\"rtt_ms\":" << r.rtt_us * 1e-3 << ",\"age_s\":" << now - r.measured_at_s << "}";
    first = false;
  }
  os << "],\"optimized\":";
  if (g.choice.epoch == 0) {
    os << "null";
  } else {
    os << "{\"epoch\":" << g.choice.epoch << ",\"probed_links\":" << g.choice.probed_links
       << ",\"exact\":" << (g.choice.exact ? "true" : "false")
       << ",\"background\":" << (g.choice.background ? "true" : "false")
       << ",\"background_ring_waiting\":" << (g.improved ? "true" : "false")
       << ",\"bottleneck_s\":";
    if (std::isfinite(g.choice.bottleneck_s)) os << g.choice.bottleneck_s; else os << "null";
    os << "}";
  }
}

std::string Master::status_json() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_json_locked(true);
}

std::string Master::status_json_locked(bool with_links) const {
  std::ostringstream os;
  double uptime = std::chrono::duration<double>(Deadline::Clock::now() - started_at_).count();
  os << "{\"address\":\"" << json_escape(config_.host) << ":" << port_ << "\",";
  os << "\"uptime_s\":" << uptime << ",\"world_size\":" << core_.total_world_size() << ",";
  os << "\"dropped_connections\":" << dropped_connections_ << ",";
  os << "\"authentication\":\"" << (secret_.empty() ? "none" : "shared_secret") << "\",";
  os << "\"auth_refusals\":" << auth_refusals_ << ",";
  os << "\"open_connections\":" << conns_.size() << ",\"peers\":[";
  bool first = true;
  for (const auto& [id, p] : core_.peers()) {
    if (!first) os << ",";
    first = false;
    os << "{\"id\":" << id << ",\"address\":\"" << json_escape(p.host) << ":" << p.port
       << "\",\"group\":" << p.group << ",\"state\":\""
       << (p.state == MasterCore::PeerState::kAccepted ? "accepted" : "pending")
       << "\",\"heard_s_ago\":" << heard_s_ago(id) << ",\"collectives_done\":"
       << p.counters.collectives_done << ",\"collectives_failed\":" << p.counters.collectives_failed
       << ",\"bytes_sent\":" << p.counters.bytes_sent << ",\"bytes_received\":"
       << p.counters.bytes_received << ",\"shared_state_syncs\":" << p.counters.shared_state_syncs
       << ",\"bytes_per_s\":" << p.bytes_per_s << "}";
  }
  os << "],\"groups\":[";
  first = true;
  for (const auto& [gid, g] : core_.groups()) {
    if (!first) os << ",";
    first = false;
    os << "{\"group\":" << gid << ",\"epoch\":" << g.epoch << ",\"world_size\":" << g.ring.size()
       << ",\"pending\":" << g.pending.size() << ",\"shared_state_revision\":";
    if (g.has_revision) os << g.revision; else os << "null";
    os << ",";
    write_topology_json(os, g, with_links);
    os << "}";
  }
  // Top level: the default group's, the one most runs use (per group above).
  auto g0 = core_.groups().find(0);
  os << "],\"shared_state_revision\":";
  if (g0 != core_.groups().end() && g0->second.has_revision) os << g0->second.revision; else os << "null";
  os << ",\"links_omitted\":" << (with_links ? "false" : "true") << ",\"events\":[";
  double now = core_.now_s();
  first = true;
  for (const MasterCore::Event& e : core_.events()) {
    os << (first ? "" : ",") << "{\"s_ago\":" << now - e.t_s << ",\"text\":\""
       << json_escape(e.text) << "\"}";
    first = false;
  }
  os << "]}";
  return os.str();
}

double Master::heard_s_ago(uint64_t peer_id) const {
  auto fd = peer_fds_.find(peer_id);
  if (fd == peer_fds_.end()) return -1;  // its connection is gone (being forgotten)
  auto c = conns_.find(fd->second);
  if (c == conns_.end()) return -1;
  return std::chrono::duration<double>(Deadline::Clock::now() - c->second.last_heard).count();
}

std::string Master::status_reply() const {
  // One frame to a status client: without the links if they would not fit
  // (a matrix of 1024 peers' links is about 100 MB).
  std::string full = status_json_locked(true);
  return full.size() <= kMaxStatusReply ? full : status_json_locked(false);
}

}  // namespace pccl
