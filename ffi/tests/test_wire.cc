// Frames and messages: exact round trips, and hostile input rejected cleanly.
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/errors.h"
#include "protocol/messages.h"
#include "protocol/wire.h"
#include "tests/check.h"
#include "transport/frame.h"

using namespace pccl;

namespace {

void test_topology_round_trip() {
  TopologyMsg t;
  t.group = 7;
  t.epoch = 42;
  t.more_pending = 1;
  t.total_world_size = 3;
  t.ring = {{1, "127.0.0.1", 5000}, {9, "::1", 6000}, {12, "host.example", 1}};
  TopologyMsg u = TopologyMsg::decode(t.encode());
  CHECK_EQ(u.group, 7u);
  CHECK_EQ(u.epoch, 42u);
  CHECK_EQ(u.more_pending, 1);
  CHECK_EQ(u.ring.size(), 3u);
  CHECK_EQ(u.ring[1].host, std::string("::1"));
  CHECK_EQ(u.ring[2].peer_id, 12u);
  CHECK_EQ(u.ring[2].port, 1);
}

void test_collective_header_round_trip() {
  CollectiveHeader h;
  h.kind = 1;
  h.seq = 99;
  h.epoch = 3;
  h.peer_id = 5;
  h.count = 1ull << 40;
  h.dtype = 3;
  h.op = 4;
  h.pending = 1;
  h.leaf_index = 2;
  h.leaf_count = 5;
  h.root = 70000;
  h.world = 1024;
  h.dims = {2, -1, 1ll << 33};
  CollectiveHeader g = CollectiveHeader::decode(h.encode());
  CHECK_EQ(g.kind, 1);
  CHECK_EQ(g.root, 70000u);
  CHECK_EQ(g.world, 1024u);
  CHECK_EQ(g.seq, 99u);
  CHECK_EQ(g.count, 1ull << 40);
  CHECK(g.dims == h.dims);
  CHECK_EQ(g.leaf_count, 5u);
}

void test_inline_collective_round_trip_and_bounds() {
  CollectiveHeader h;
  h.seq = 7;
  h.count = 3;
  h.dims = {3};
  const float data[3] = {1.5f, -2.0f, 3.25f};
  std::vector<uint8_t> wire = InlineCollective::encode(h, data, sizeof(data));
  InlineCollective m = InlineCollective::decode(wire);
  CHECK_EQ(m.header.seq, 7u);
  CHECK(m.header.dims == h.dims);
  CHECK_EQ(m.data.size(), sizeof(data));
  CHECK(std::memcmp(m.data.data(), data, sizeof(data)) == 0);
  // Cutting into the length prefix or the header is refused; cutting into
  // the data only shortens it (the receiver checks it against the header).
  size_t head = wire.size() - sizeof(data);
  for (size_t n = 0; n < head; ++n) {
    std::vector<uint8_t> cut(wire.begin(), wire.begin() + n);
    CHECK(throws_kind([&] { InlineCollective::decode(cut); }, ErrorKind::kProtocol));
  }
  std::vector<uint8_t> overrun = wire;
  overrun[0] = 0xFF;  // header length beyond the frame
  CHECK(throws_kind([&] { InlineCollective::decode(overrun); }, ErrorKind::kProtocol));
  std::vector<uint8_t> huge = InlineCollective::encode(h, nullptr, 0);
  huge.resize(huge.size() + kMaxInlineCollectiveData + 1);
  CHECK(throws_kind([&] { InlineCollective::decode(huge); }, ErrorKind::kProtocol));
  std::vector<uint8_t> big(kMaxInlineCollectiveData + 1);
  CHECK(throws_kind([&] { InlineCollective::encode(h, big.data(), big.size()); },
                    ErrorKind::kGeneric));
}

void test_every_truncation_is_rejected() {
  TopologyMsg t;
  t.ring = {{1, "127.0.0.1", 5000}, {2, "127.0.0.2", 5001}};
  std::vector<uint8_t> full = t.encode();
  for (size_t n = 0; n < full.size(); ++n) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + n);
    CHECK(throws_kind([&] { TopologyMsg::decode(cut); }, ErrorKind::kProtocol));
  }
  std::vector<uint8_t> longer = full;
  longer.push_back(0);
  CHECK(throws_kind([&] { TopologyMsg::decode(longer); }, ErrorKind::kProtocol));
}

void test_hostile_counts_rejected_before_allocation() {
  WireWriter w;
  w.u32(0).u64(1).u8(0).u32(1).u32(0xFFFFFFFFu);  // claims 4 billion ring members
  CHECK(throws_kind([&] { TopologyMsg::decode(w.take()); }, ErrorKind::kProtocol));
  WireWriter h;
  h.u8(0).u64(0).u64(0).u64(0).u64(0).u8(0).u8(0).u8(0).u8(0).u32(0).u32(1).u8(200);
  CHECK(throws_kind([&] { CollectiveHeader::decode(h.take()); }, ErrorKind::kProtocol));
  WireWriter s;
  s.u32(0).u16(1).u16(60000);  // string length far beyond the limit
  CHECK(throws_kind([&] { HelloMsg::decode(s.take()); }, ErrorKind::kProtocol));
}

// The revision trailer is optional (older peers send none) and every claim
// in a HELLO is bounded, so the master never computes claim + 1 near 2^64.
void test_hello_trailer_and_claim_bounds() {
  HelloMsg old_peer{2, 4000, "h", 9, 5};
  HelloMsg a = HelloMsg::decode(old_peer.encode());
  CHECK(!a.has_resume_revision && a.resume_epoch == 5u && a.resume_peer_id == 9u);
  HelloMsg resumed = old_peer;
  resumed.has_resume_revision = true;
  resumed.resume_revision = 7;
  HelloMsg b = HelloMsg::decode(resumed.encode());
  CHECK(b.has_resume_revision && b.resume_revision == 7u);
  CHECK(HelloMsg::decode(resumed.encode()).encode() == resumed.encode());
  HelloMsg claim = resumed;
  claim.resume_epoch = kMaxEpoch + 1;
  CHECK(throws_kind([&] { HelloMsg::decode(claim.encode()); }, ErrorKind::kProtocol));
  claim = resumed;
  claim.resume_revision = kMaxRevision + 1;
  CHECK(throws_kind([&] { HelloMsg::decode(claim.encode()); }, ErrorKind::kProtocol));
  std::vector<uint8_t> unknown = old_peer.encode();
  unknown.push_back(2);  // an extension this version does not know
  for (int i = 0; i < 8; ++i) unknown.push_back(0);
  CHECK(throws_kind([&] { HelloMsg::decode(unknown); }, ErrorKind::kProtocol));
}

void test_frame_header_checks() {
  uint8_t head[kFrameHeaderSize];
  encode_frame_header(head, 3, 100);
  FrameHeader h = decode_frame_header(head, 1000);
  CHECK_EQ(h.type, 3);
  CHECK_EQ(h.length, 100u);
  CHECK(throws_kind([&] { decode_frame_header(head, 99); }, ErrorKind::kProtocol));
  uint8_t bad_magic[kFrameHeaderSize];
  std::memcpy(bad_magic, head, sizeof(head));
  bad_magic[0] ^= 0xff;
  CHECK(throws_kind([&] { decode_frame_header(bad_magic, 1000); }, ErrorKind::kProtocol));
  uint8_t other_version[kFrameHeaderSize];
  std::memcpy(other_version, head, sizeof(head));
  other_version[4] = 9;
  try {
    decode_frame_header(other_version, 1000);
    CHECK(false);
  } catch (const PcclError& e) {
    std::string msg = e.what();
    CHECK(msg.find("v9") != std::string::npos &&
          msg.find("v" + std::to_string(kProtocolVersion)) != std::string::npos);
  }
}

void test_random_bytes_never_crash_decoders() {
  std::mt19937 rng(1234);
  int rejected = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> junk(rng() % 80);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    try { TopologyMsg::decode(junk); } catch (const PcclError&) { ++rejected; }
    try { CollectiveHeader::decode(junk); } catch (const PcclError&) { ++rejected; }
    try { HelloMsg::decode(junk); } catch (const PcclError&) { ++rejected; }
  }
  CHECK(rejected > 50000);  // nearly all junk is refused, none crashes
}

}  // namespace

int main() {
  test_topology_round_trip();
  test_collective_header_round_trip();
  test_inline_collective_round_trip_and_bounds();
  test_every_truncation_is_rejected();
  test_hostile_counts_rejected_before_allocation();
  test_hello_trailer_and_claim_bounds();
  test_frame_header_checks();
  test_random_bytes_never_crash_decoders();
  return check_summary("test_wire");
}
