#include "protocol/messages.h"

#include "common/errors.h"
#include "protocol/wire.h"

namespace pccl {

namespace {
constexpr uint8_t kHelloHasRevision = 1;  // trailer flag: resume_revision is meaningful
}  // namespace

std::vector<uint8_t> HelloMsg::encode() const {
  WireWriter w;
  w.u32(group).u16(listen_port).str(advertise_host).u64(resume_peer_id).u64(resume_epoch);
  if (has_resume_revision) w.u8(kHelloHasRevision).u64(resume_revision);
  return w.take();
}
HelloMsg HelloMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  HelloMsg m;
  m.group = r.u32();
  m.listen_port = r.u16();
  m.advertise_host = r.str();
  m.resume_peer_id = r.u64();
  m.resume_epoch = r.u64();
  if (m.resume_epoch > kMaxEpoch) {
    throw ProtocolViolation("HELLO claims epoch " + std::to_string(m.resume_epoch) +
                            ", above the bound " + std::to_string(kMaxEpoch));
  }
  if (!r.at_end()) {
    if (r.u8() != kHelloHasRevision) throw ProtocolViolation("unknown HELLO extension");
    m.has_resume_revision = true;
    m.resume_revision = r.u64();
    if (m.resume_revision > kMaxRevision) {
      throw ProtocolViolation("HELLO claims revision " + std::to_string(m.resume_revision) +
                              ", above the bound " + std::to_string(kMaxRevision));
    }
  }
  r.expect_end();
  return m;
}

std::vector<uint8_t> WelcomeMsg::encode() const {
  return WireWriter().u64(peer_id).u64(group_epoch).take();
}
WelcomeMsg WelcomeMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  WelcomeMsg m;
  m.peer_id = r.u64();
  m.group_epoch = r.u64();
  r.expect_end();
  return m;
}

std::vector<uint8_t> TopologyMsg::encode() const {
  WireWriter w;
  w.u32(group).u64(epoch).u8(more_pending).u32(total_world_size);
  w.u32(static_cast<uint32_t>(ring.size()));
  for (const auto& m : ring) w.u64(m.peer_id).str(m.host).u16(m.port);
  return w.take();
}
TopologyMsg TopologyMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  TopologyMsg m;
  m.group = r.u32();
  m.epoch = r.u64();
  m.more_pending = r.u8();
  m.total_world_size = r.u32();
  uint32_t n = r.u32();
  if (n > kMaxRingMembers) throw ProtocolViolation("ring too large");
  m.ring.resize(n);
  for (auto& member : m.ring) {
    member.peer_id = r.u64();
    member.host = r.str();
    member.port = r.u16();
  }
  r.expect_end();
  return m;
}

std::vector<uint8_t> VoteMsg::encode() const {
  WireWriter w;
  w.u64(epoch);
  // Optional trailer, absent when empty (an older master reads the epoch alone).
  if (!unreachable.empty()) {
    w.u8(static_cast<uint8_t>(unreachable.size()));
    for (uint64_t id : unreachable) w.u64(id);
  }
  return w.take();
}
VoteMsg VoteMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  VoteMsg m;
  m.epoch = r.u64();
  if (!r.at_end()) {
    uint8_t n = r.u8();
    if (n == 0 || n > kMaxUnreachableNeighbours) {
      throw ProtocolViolation("vote names " + std::to_string(n) + " unreachable neighbours");
    }
    m.unreachable.resize(n);
    for (uint64_t& id : m.unreachable) id = r.u64();
  }
  r.expect_end();
  return m;
}

std::vector<uint8_t> HeartbeatMsg::encode() const {
  return WireWriter().u32(total_world_size).take();
}
HeartbeatMsg HeartbeatMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  HeartbeatMsg m;
  m.total_world_size = r.u32();
  r.expect_end();
  if (m.total_world_size > kMaxRingMembers * kMaxGroups) throw ProtocolViolation("heartbeat: world size out of bounds");
  return m;
}

std::vector<uint8_t> PeerHeartbeatMsg::encode() const {
  return WireWriter()
      .u64(collectives_done)
      .u64(collectives_failed)
      .u64(bytes_sent)
      .u64(bytes_received)
      .u64(shared_state_syncs)
      .take();
}
PeerHeartbeatMsg PeerHeartbeatMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  PeerHeartbeatMsg m;
  m.collectives_done = r.u64();
  m.collectives_failed = r.u64();
  m.bytes_sent = r.u64();
  m.bytes_received = r.u64();
  m.shared_state_syncs = r.u64();
  r.expect_end();
  return m;
}

std::vector<uint8_t> ErrorMsg::encode() const { return WireWriter().str(message).take(); }
ErrorMsg ErrorMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  ErrorMsg m;
  m.message = r.str();
  r.expect_end();
  return m;
}

std::vector<uint8_t> PeerDroppedMsg::encode() const {
  return WireWriter().u64(peer_id).str(reason).take();
}
PeerDroppedMsg PeerDroppedMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  PeerDroppedMsg m;
  m.peer_id = r.u64();
  m.reason = r.str();
  r.expect_end();
  return m;
}

std::vector<uint8_t> PeerHelloMsg::encode() const {
  return WireWriter().u64(peer_id).u64(epoch).u32(group).u8(purpose).u16(stream).u16(streams)
      .u8(slots).take();
}
PeerHelloMsg PeerHelloMsg::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  PeerHelloMsg m;
  m.peer_id = r.u64();
  m.epoch = r.u64();
  m.group = r.u32();
  m.purpose = r.u8();
  if (m.purpose > static_cast<uint8_t>(LinkPurpose::kLinkProbe)) {
    throw ProtocolViolation("unknown link purpose " + std::to_string(m.purpose));
  }
  m.stream = r.u16();
  m.streams = r.u16();
  if (m.streams == 0 || m.streams > kMaxRingStreams || m.stream >= m.streams) {
    throw ProtocolViolation("bad ring stream " + std::to_string(m.stream) + " of " +
                            std::to_string(m.streams));
  }
  m.slots = r.u8();
  if (m.slots == 0 || m.slots > kConcurrentSlots || m.slots > m.streams) {
    throw ProtocolViolation("bad collective slot count " + std::to_string(m.slots));
  }
  r.expect_end();
  return m;
}

std::vector<uint8_t> CollectiveHeader::encode() const {
  WireWriter w;
  w.u8(kind).u64(seq).u64(epoch).u64(peer_id).u64(count);
  w.u8(dtype).u8(op).u8(quantization).u8(pending).u32(leaf_index).u32(leaf_count);
  w.u32(root).u32(world);
  w.u8(static_cast<uint8_t>(dims.size()));
  for (int64_t d : dims) w.i64(d);
  return w.take();
}
CollectiveHeader CollectiveHeader::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  CollectiveHeader h;
  h.kind = r.u8();
  h.seq = r.u64();
  h.epoch = r.u64();
  h.peer_id = r.u64();
  h.count = r.u64();
  h.dtype = r.u8();
  h.op = r.u8();
  h.quantization = r.u8();
  h.pending = r.u8();
  h.leaf_index = r.u32();
  h.leaf_count = r.u32();
  h.root = r.u32();
  h.world = r.u32();
  uint8_t ndim = r.u8();
  if (ndim > kMaxDims) throw ProtocolViolation("too many dimensions in collective header");
  h.dims.resize(ndim);
  for (auto& d : h.dims) d = r.i64();
  r.expect_end();
  return h;
}

std::vector<uint8_t> InlineCollective::encode(const CollectiveHeader& header, const void* data,
                                              size_t bytes) {
  if (bytes > kMaxInlineCollectiveData) throw PcclError("inline collective data too large");
  std::vector<uint8_t> head = header.encode();
  WireWriter w;
  w.u32(static_cast<uint32_t>(head.size()));
  std::vector<uint8_t> out = w.take();
  out.reserve(out.size() + head.size() + bytes);
  out.insert(out.end(), head.begin(), head.end());
  const auto* p = static_cast<const uint8_t*>(data);
  out.insert(out.end(), p, p + bytes);
  return out;
}

InlineCollective InlineCollective::decode(const std::vector<uint8_t>& b) {
  WireReader r(b);
  uint32_t head = r.u32();
  if (head > b.size() - 4) throw ProtocolViolation("inline collective header overruns the frame");
  if (b.size() - 4 - head > kMaxInlineCollectiveData) {
    throw ProtocolViolation("inline collective data too large");
  }
  InlineCollective m;
  m.header = CollectiveHeader::decode(std::vector<uint8_t>(b.begin() + 4, b.begin() + 4 + head));
  m.data.assign(b.begin() + 4 + head, b.end());
  return m;
}

}  // namespace pccl
