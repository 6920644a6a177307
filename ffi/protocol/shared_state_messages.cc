#include "protocol/shared_state_messages.h"

#include "common/errors.h"
#include "protocol/wire.h"

namespace pccl {
namespace {

constexpr uint8_t kMaxErrorKind = static_cast<uint8_t>(ErrorKind::kCancelled);

uint32_t bounded_count(WireReader& r, uint32_t max, const char* what) {
  uint32_t n = r.u32();
  if (n > max) throw ProtocolViolation(std::string("too many ") + what + " in a shared-state message");
  return n;
}

void write_leaf(WireWriter& w, const LeafInfo& l) {
  w.u64(l.hash).u64(l.nbytes).u8(l.dtype).u8(static_cast<uint8_t>(l.dims.size()));
  for (int64_t d : l.dims) w.i64(d);
}

LeafInfo read_leaf(WireReader& r) {
  LeafInfo l;
  l.hash = r.u64();
  l.nbytes = r.u64();
  l.dtype = r.u8();
  uint8_t ndim = r.u8();
  if (ndim > kMaxDims) throw ProtocolViolation("too many dimensions in a shared-state leaf");
  l.dims.resize(ndim);
  for (auto& d : l.dims) d = r.i64();
  return l;
}

void write_range(WireWriter& w, const StateRange& g) { w.u32(g.leaf).u64(g.offset).u64(g.length); }

StateRange read_range(WireReader& r) {
  StateRange g;
  g.leaf = r.u32();
  g.offset = r.u64();
  g.length = r.u64();
  return g;
}

uint8_t read_kind(WireReader& r) {
  uint8_t k = r.u8();
  if (k > kMaxErrorKind) throw ProtocolViolation("unknown error kind in a shared-state plan");
  return k;
}

}  // namespace

const char* sync_strategy_name(SyncStrategy s) {
  switch (s) {
    case SyncStrategy::kEnforcePopular: return "enforce_popular";
    case SyncStrategy::kReceiveOnly: return "receive_only";
    case SyncStrategy::kSendOnly: return "send_only";
  }
  return "?";
}

std::vector<uint8_t> SyncRequestMsg::encode() const {
  WireWriter w;
  w.u64(request_id).u64(revision).u8(strategy).u64(structure);
  w.u32(static_cast<uint32_t>(leaves.size()));
  for (const auto& l : leaves) write_leaf(w, l);
  return w.take();
}
SyncRequestMsg SyncRequestMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  SyncRequestMsg m;
  m.request_id = r.u64();
  m.revision = r.u64();
  m.strategy = r.u8();
  if (m.strategy > static_cast<uint8_t>(SyncStrategy::kSendOnly)) {
    throw ProtocolViolation("unknown shared-state strategy " + std::to_string(m.strategy));
  }
  m.structure = r.u64();
  m.leaves.resize(bounded_count(r, kMaxSharedStateLeaves, "leaves"));
  for (auto& l : m.leaves) l = read_leaf(r);
  r.expect_end();
  return m;
}

std::vector<uint8_t> SyncPlanMsg::encode() const {
  WireWriter w;
  w.u64(request_id).u64(round).u64(revision).u8(failed).u8(settled).u8(error_kind).str(message);
  w.u32(static_cast<uint32_t>(holders.size()));
  for (const auto& h : holders) w.u64(h.peer_id).str(h.host).u16(h.port);
  w.u32(static_cast<uint32_t>(holder_sets.size()));
  for (const auto& set : holder_sets) {
    w.u32(static_cast<uint32_t>(set.size()));
    for (uint16_t i : set) w.u16(i);
  }
  w.u32(static_cast<uint32_t>(leaf_hash.size()));
  for (size_t i = 0; i < leaf_hash.size(); ++i) w.u64(leaf_hash[i]).u32(leaf_holder_set[i]);
  w.u32(static_cast<uint32_t>(refusals.size()));
  for (const auto& f : refusals) w.u64(f.peer_id).u8(f.kind).str(f.message);
  return w.take();
}
SyncPlanMsg SyncPlanMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  SyncPlanMsg m;
  m.request_id = r.u64();
  m.round = r.u64();
  m.revision = r.u64();
  m.failed = r.u8();
  m.settled = r.u8();
  m.error_kind = read_kind(r);
  m.message = r.str();
  m.holders.resize(bounded_count(r, kMaxRingMembers, "holders"));
  for (auto& h : m.holders) {
    h.peer_id = r.u64();
    h.host = r.str();
    h.port = r.u16();
  }
  m.holder_sets.resize(bounded_count(r, kMaxSharedStateLeaves, "holder sets"));
  for (auto& set : m.holder_sets) {
    set.resize(bounded_count(r, static_cast<uint32_t>(m.holders.size()), "set members"));
    for (auto& i : set) {
      i = r.u16();
      if (i >= m.holders.size()) throw ProtocolViolation("holder index out of range");
    }
  }
  uint32_t leaves = bounded_count(r, kMaxSharedStateLeaves, "leaves");
  m.leaf_hash.resize(leaves);
  m.leaf_holder_set.resize(leaves);
  for (uint32_t i = 0; i < leaves; ++i) {
    m.leaf_hash[i] = r.u64();
    m.leaf_holder_set[i] = r.u32();
    if (m.leaf_holder_set[i] >= m.holder_sets.size()) {
      throw ProtocolViolation("holder set index out of range");
    }
  }
  m.refusals.resize(bounded_count(r, kMaxRingMembers, "refusals"));
  for (auto& f : m.refusals) {
    f.peer_id = r.u64();
    f.kind = read_kind(r);
    f.message = r.str();
  }
  r.expect_end();
  return m;
}

std::vector<uint8_t> SyncDoneMsg::encode() const {
  return WireWriter().u64(round).u8(ok).str(message).take();
}
SyncDoneMsg SyncDoneMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  SyncDoneMsg m;
  m.round = r.u64();
  m.ok = r.u8();
  m.message = r.str();
  r.expect_end();
  return m;
}

std::vector<uint8_t> SyncCompleteMsg::encode() const {
  return WireWriter().u64(round).u8(ok).str(message).take();
}
SyncCompleteMsg SyncCompleteMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  SyncCompleteMsg m;
  m.round = r.u64();
  m.ok = r.u8();
  m.message = r.str();
  r.expect_end();
  return m;
}

std::vector<uint8_t> StateFetchMsg::encode() const {
  WireWriter w;
  w.u32(static_cast<uint32_t>(ranges.size()));
  for (const auto& g : ranges) write_range(w, g);
  return w.take();
}
StateFetchMsg StateFetchMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  StateFetchMsg m;
  m.ranges.resize(bounded_count(r, kMaxFetchRanges, "ranges"));
  for (auto& g : m.ranges) g = read_range(r);
  r.expect_end();
  return m;
}

std::vector<uint8_t> StateDataMsg::encode() const {
  WireWriter w;
  write_range(w, range);
  w.u8(ok);
  return w.take();
}
StateDataMsg StateDataMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  StateDataMsg m;
  m.range = read_range(r);
  m.ok = r.u8();
  r.expect_end();
  return m;
}

}  // namespace pccl
