#include "master/state_structure.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "common/content_hash.h"
#include "common/dtype.h"
#include "master/shared_state_election.h"
#include "protocol/wire.h"

namespace pccl {
namespace {

// A structure as one number, so that grouping P peers of L leaves costs
// O(P * L) however many distinct structures hostile peers bring. Equal keys
// are confirmed leaf by leaf (same_structure) before a peer is kept.
uint64_t structure_key(const SyncRequestMsg& r) {
  WireWriter w;
  w.u64(r.structure).u32(static_cast<uint32_t>(r.leaves.size()));
  for (const LeafInfo& l : r.leaves) {
    w.u64(l.nbytes).u8(l.dtype).u8(static_cast<uint8_t>(l.dims.size()));
    for (int64_t d : l.dims) w.i64(d);
  }
  std::vector<uint8_t> bytes = w.take();
  return xxh64(bytes.data(), bytes.size());
}

bool same_structure(const SyncRequestMsg& a, const SyncRequestMsg& b) {
  if (a.structure != b.structure || a.leaves.size() != b.leaves.size()) return false;
  for (size_t i = 0; i < a.leaves.size(); ++i) {
    if (!a.leaves[i].same_layout(b.leaves[i])) return false;
  }
  return true;
}

std::string describe_leaf(const LeafInfo& l) {
  std::ostringstream os;
  os << dtype_name(static_cast<DType>(l.dtype)) << "(";
  for (size_t i = 0; i < l.dims.size(); ++i) os << (i ? "," : "") << l.dims[i];
  if (l.dims.size() == 1) os << ",";
  os << ")";
  return os.str();
}

struct Holding {  // one structure and who holds it
  const SyncCandidate* first = nullptr;
  size_t peers = 0;
  uint64_t top_revision = 0;
  bool beats(const Holding& o) const {
    return peers != o.peers ? peers > o.peers : top_revision > o.top_revision;
  }
  bool ties(const Holding& o) const { return peers == o.peers && top_revision == o.top_revision; }
};

std::string tie_text(const Holding& a, const Holding& b, size_t structures) {
  std::ostringstream os;
  os << structures << " structures and none is held by more peers (" << a.peers
     << " each, up to revision " << a.top_revision << "), so nobody can tell which is odd: "
     << structure_difference(a.first->request, "peer " + std::to_string(a.first->peer_id),
                             b.first->request, "peer " + std::to_string(b.first->peer_id));
  return os.str();
}

}  // namespace

std::string structure_difference(const SyncRequestMsg& a, const std::string& a_name,
                                 const SyncRequestMsg& b, const std::string& b_name) {
  std::ostringstream os;
  if (a.leaves.size() != b.leaves.size()) {
    os << a_name << " has " << a.leaves.size() << " leaves, " << b_name << " has "
       << b.leaves.size() << " leaves";
    return os.str();
  }
  for (size_t i = 0; i < a.leaves.size(); ++i) {
    if (a.leaves[i].same_layout(b.leaves[i])) continue;
    os << "leaf " << i << " is " << describe_leaf(a.leaves[i]) << " in " << a_name << ", "
       << describe_leaf(b.leaves[i]) << " in " << b_name;
    return os.str();
  }
  if (a.structure != b.structure) {
    os << a_name << " and " << b_name << " have the same leaves (count, shapes, wire dtypes) "
       << "in different pytrees: key names, container types or numpy dtypes (bool travels as "
       << "uint8) differ";
  }
  return os.str();
}

StructureVote vote_structure(const std::vector<const SyncCandidate*>& peers) {
  StructureVote v;
  std::map<uint64_t, Holding> holdings;
  for (const SyncCandidate* p : peers) {
    Holding& h = holdings[structure_key(p->request)];
    if (h.first == nullptr) h.first = p;
    ++h.peers;
    h.top_revision = std::max(h.top_revision, p->request.revision);
  }
  if (holdings.empty()) return v;
  const Holding* best = &holdings.begin()->second;
  for (const auto& [key, h] : holdings) {
    if (h.beats(*best)) best = &h;
  }
  for (const auto& [key, h] : holdings) {
    if (&h != best && h.ties(*best)) {
      v.tie = tie_text(*best, h, holdings.size());
      return v;
    }
  }
  const SyncRequestMsg& run = best->first->request;
  for (const SyncCandidate* p : peers) {
    if (same_structure(p->request, run)) {
      v.kept.push_back(p);
      continue;
    }
    std::ostringstream why;
    why << "its shared state's structure differs from the run's (held by " << best->peers
        << " of " << peers.size() << " peers): "
        << structure_difference(p->request, "this peer's state", run, "the run's state");
    v.refusals.push_back({p->peer_id, static_cast<uint8_t>(ErrorKind::kMismatch), why.str()});
  }
  return v;
}

}  // namespace pccl
