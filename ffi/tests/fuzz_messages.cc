// Fuzz target "messages": every decoder of protocol/messages.h.
//
// Input: one byte choosing the message type, then its payload.
// Properties:
//  - decode() returns or throws PcclError, nothing else;
//  - parsing is strict, so whatever decodes re-encodes to exactly the same
//    bytes (no field ignored, no trailing byte tolerated).
#include "common/errors.h"
#include "protocol/messages.h"
#include "tests/fuzz_target.h"

namespace pccl_fuzz {
namespace {

constexpr const char* kName = "messages";

template <typename Msg>
bool round_trip(const Bytes& payload) {
  return decodes_exactly<Msg>(kName, payload, [](const Msg&) {});
}

// The header with a caller's input attached (a static encode, so by hand).
bool inline_round_trip(const Bytes& payload) {
  pccl::InlineCollective m;
  try {
    m = pccl::InlineCollective::decode(payload);
  } catch (const pccl::PcclError&) {
    return false;
  }
  FUZZ_CHECK(kName, pccl::InlineCollective::encode(m.header, m.data.data(), m.data.size()) == payload);
  return true;
}

using Decoder = bool (*)(const Bytes&);
constexpr Decoder kDecoders[] = {
    round_trip<pccl::HelloMsg>,       round_trip<pccl::WelcomeMsg>,
    round_trip<pccl::TopologyMsg>,    round_trip<pccl::VoteMsg>,
    round_trip<pccl::ErrorMsg>,       round_trip<pccl::PeerDroppedMsg>,
    round_trip<pccl::PeerHelloMsg>,   round_trip<pccl::CollectiveHeader>,
    inline_round_trip,                round_trip<pccl::HeartbeatMsg>,
    round_trip<pccl::PeerHeartbeatMsg>,
};

bool one_input(const uint8_t* data, size_t size) { return dispatch_tagged(kDecoders, data, size); }

std::vector<Bytes> seeds() {
  pccl::HelloMsg hello;
  hello.group = 3;
  hello.listen_port = 4242;
  hello.advertise_host = "10.0.0.7";
  hello.resume_peer_id = 99;
  hello.resume_epoch = 4;
  pccl::TopologyMsg topo;
  topo.group = 1;
  topo.epoch = 12;
  topo.more_pending = 1;
  topo.total_world_size = 2;
  topo.ring = {{1, "127.0.0.1", 5000}, {9, "::1", 6000}};
  pccl::CollectiveHeader coll;
  coll.seq = 5;
  coll.count = 1024;
  coll.kind = 3;
  coll.root = 2;
  coll.world = 4;
  coll.dims = {32, 32};
  return {
      tagged(0, hello.encode()),
      tagged(1, pccl::WelcomeMsg{77}.encode()),
      tagged(2, topo.encode()),
      tagged(3, pccl::VoteMsg{12, {}}.encode()),
      tagged(4, pccl::ErrorMsg{"first message must be HELLO"}.encode()),
      tagged(5, pccl::PeerDroppedMsg{9, "no heartbeat"}.encode()),
      tagged(6, pccl::PeerHelloMsg{1, 12, 3}.encode()),
      tagged(7, coll.encode()),
      tagged(8, pccl::InlineCollective::encode(coll, "abcdefgh", 8)),
      tagged(9, pccl::HeartbeatMsg{3}.encode()),
      tagged(10, pccl::PeerHeartbeatMsg{7, 1, 1 << 20, 3 << 20, 2}.encode()),
  };
}

}  // namespace

FuzzTarget messages_target() { return {kName, one_input, seeds}; }

}  // namespace pccl_fuzz
