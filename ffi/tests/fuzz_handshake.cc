// Fuzz target "handshake": the authentication messages (security/handshake.h)
// and their framing on a socket (security/handshake_io.h).
//
// Input: a mode byte, a byte of secret flags (bit 0: this side has the
// secret, bit 1: the other side has it), then the remote's bytes.
// Modes and their properties (besides "returns or throws PcclError"):
//   0 ServerHandshake::on_response  never throws; the reply is one M3; with a
//                                   secret it never accepts (a MAC over our
//                                   fresh nonce cannot be guessed)
//   1 ClientHandshake::on_challenge the response is one M2, and carries no MAC
//                                   unless the challenge asked for one
//   2 ClientHandshake::on_result    with a secret it never accepts
//   3 check_auth_frame              accepts only the expected type and size
//   4 client_handshake on a socket  with a secret it never returns
//   5 server_handshake_finish       with a secret it never accepts
#include <algorithm>

#include "common/deadline.h"
#include "common/errors.h"
#include "security/handshake.h"
#include "security/handshake_io.h"
#include "tests/fuzz_socketpair.h"
#include "tests/fuzz_target.h"
#include "transport/frame.h"

namespace pccl_fuzz {
namespace {

constexpr const char* kName = "handshake";
constexpr int kModes = 6;

pccl::Secret secret_if(bool has) { return has ? pccl::Secret("fuzz secret") : pccl::Secret(); }

bool server_response(bool has_secret, const Bytes& msg) {
  pccl::ServerHandshake server(secret_if(has_secret), pccl::kAuthContextMaster);
  server.challenge();
  pccl::ServerHandshake::Result r;
  try {
    r = server.on_response(msg);
  } catch (...) {
    fail(kName, "on_response threw on remote input");
  }
  FUZZ_CHECK(kName, r.reply.size() == pccl::kResultSize);
  FUZZ_CHECK(kName, r.ok == r.error.empty());
  FUZZ_CHECK(kName, !r.authenticated || r.ok);
  FUZZ_CHECK(kName, !(has_secret && r.ok));
  return r.ok;
}

bool client_challenge(bool has_secret, const Bytes& msg) {
  pccl::ClientHandshake client(secret_if(has_secret), pccl::kAuthContextRing);
  Bytes response;
  try {
    response = client.on_challenge(msg);
  } catch (const pccl::PcclError&) {
    return false;
  }
  FUZZ_CHECK(kName, response.size() == pccl::kResponseSize);
  bool asked_for_mac = (msg[pccl::kHandshakeHeaderSize] & 1) != 0;
  bool mac_zero = std::all_of(response.end() - pccl::kHandshakeMacSize, response.end(),
                              [](uint8_t b) { return b == 0; });
  FUZZ_CHECK(kName, asked_for_mac || mac_zero);
  return true;
}

bool client_result(bool has_secret, bool server_secret, const Bytes& msg) {
  pccl::ServerHandshake server(secret_if(server_secret), pccl::kAuthContextRing);
  pccl::ClientHandshake client(secret_if(has_secret), pccl::kAuthContextRing);
  client.on_challenge(server.challenge());
  try {
    client.on_result(msg);
  } catch (const pccl::PcclError&) {
    return false;
  }
  FUZZ_CHECK(kName, !has_secret);
  FUZZ_CHECK(kName, !client.authenticated());
  return true;
}

bool auth_frame(uint8_t flags, const Bytes& msg) {
  if (msg.size() < 2) return false;
  static constexpr pccl::MsgType kTypes[] = {pccl::MsgType::kAuthChallenge,
                                             pccl::MsgType::kAuthResponse,
                                             pccl::MsgType::kAuthResult};
  static constexpr size_t kSizes[] = {pccl::kChallengeSize, pccl::kResponseSize,
                                      pccl::kResultSize};
  size_t which = flags % 3;
  uint16_t type = static_cast<uint16_t>(msg[0] | (msg[1] << 8));
  Bytes payload(msg.begin() + 2, msg.end());
  try {
    pccl::check_auth_frame(type, payload, kTypes[which], kSizes[which]);
  } catch (const pccl::PcclError&) {
    return false;
  }
  FUZZ_CHECK(kName, type == static_cast<uint16_t>(kTypes[which]));
  FUZZ_CHECK(kName, payload.size() == kSizes[which]);
  return true;
}

bool client_on_socket(bool has_secret, const Bytes& msg) {
  FedSocket s = feed(msg.data(), msg.size());
  bool authenticated;
  try {
    authenticated = pccl::client_handshake(s.reader, secret_if(has_secret),
                                           pccl::kAuthContextMaster, pccl::Deadline::after(5.0),
                                           nullptr);
  } catch (const pccl::PcclError&) {
    return false;
  }
  FUZZ_CHECK(kName, !has_secret);
  FUZZ_CHECK(kName, !authenticated);
  return true;
}

bool server_on_socket(bool has_secret, const Bytes& msg) {
  FedSocket s = feed(msg.data(), msg.size());
  pccl::ServerHandshake server(secret_if(has_secret), pccl::kAuthContextMaster);
  server.challenge();
  pccl::ServerHandshake::Result r;
  try {
    r = pccl::server_handshake_finish(s.reader, server, pccl::Deadline::after(5.0), nullptr);
  } catch (const pccl::PcclError&) {
    return false;
  }
  FUZZ_CHECK(kName, !(has_secret && r.ok));
  return r.ok;
}

bool one_input(const uint8_t* data, size_t size) {
  if (size < 2) return false;
  const int mode = data[0] % kModes;
  const uint8_t flags = data[1];
  const bool mine = flags & 1, theirs = flags & 2;
  Bytes msg(data + 2, data + size);  // exact size: an over-read is an ASan report
  switch (mode) {
    case 0: return server_response(mine, msg);
    case 1: return client_challenge(mine, msg);
    case 2: return client_result(mine, theirs, msg);
    case 3: return auth_frame(flags >> 2, msg);
    case 4: return client_on_socket(mine, msg);
    default: return server_on_socket(mine, msg);
  }
}

// ---- seeds: real handshakes, recorded ----

Bytes input(uint8_t mode, uint8_t flags, const Bytes& msg) {
  Bytes b(2 + msg.size());
  b[0] = mode;
  b[1] = flags;
  std::copy(msg.begin(), msg.end(), b.begin() + 2);
  return b;
}

Bytes framed(pccl::MsgType type, const Bytes& payload) {
  Bytes b(pccl::kFrameHeaderSize);
  pccl::encode_frame_header(b.data(), static_cast<uint16_t>(type),
                            static_cast<uint32_t>(payload.size()));
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

struct Recorded {
  Bytes m1, m2, m3;
};

Recorded record(bool server_secret, bool client_secret) {
  pccl::ServerHandshake server(secret_if(server_secret), pccl::kAuthContextMaster);
  pccl::ClientHandshake client(secret_if(client_secret), pccl::kAuthContextMaster);
  Recorded r;
  r.m1 = server.challenge();
  r.m2 = client.on_challenge(r.m1);
  r.m3 = server.on_response(r.m2).reply;
  return r;
}

std::vector<Bytes> seeds() {
  std::vector<Bytes> out;
  for (int flags = 0; flags < 4; ++flags) {
    Recorded r = record(flags & 1, flags & 2);
    out.push_back(input(0, static_cast<uint8_t>(flags), r.m2));
    out.push_back(input(1, static_cast<uint8_t>(flags >> 1), r.m1));
    out.push_back(input(2, static_cast<uint8_t>(flags), r.m3));
    Bytes m1 = framed(pccl::MsgType::kAuthChallenge, r.m1);
    Bytes m3 = framed(pccl::MsgType::kAuthResult, r.m3);
    m1.insert(m1.end(), m3.begin(), m3.end());
    out.push_back(input(4, static_cast<uint8_t>(flags >> 1), m1));
    out.push_back(input(5, static_cast<uint8_t>(flags), framed(pccl::MsgType::kAuthResponse, r.m2)));
  }
  Bytes refusal = pccl::ServerHandshake::refusal("connection limit reached");
  out.push_back(input(2, 0, refusal));
  Recorded plain = record(false, false);
  Bytes typed(2 + plain.m2.size());
  typed[0] = static_cast<uint8_t>(pccl::MsgType::kAuthResponse);
  std::copy(plain.m2.begin(), plain.m2.end(), typed.begin() + 2);
  out.push_back(input(3, 1 << 2, typed));
  return out;
}

}  // namespace

FuzzTarget handshake_target() { return {kName, one_input, seeds}; }

}  // namespace pccl_fuzz
