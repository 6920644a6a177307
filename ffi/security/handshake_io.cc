#include "security/handshake_io.h"

#include <openssl/crypto.h>

#include "common/errors.h"
#include "transport/frame.h"

namespace pccl {
namespace {

const char* type_name(MsgType t) {
  switch (t) {
    case MsgType::kAuthChallenge: return "AUTH_CHALLENGE";
    case MsgType::kAuthResponse: return "AUTH_RESPONSE";
    case MsgType::kAuthResult: return "AUTH_RESULT";
    default: return "?";
  }
}

void send_msg(Socket& s, MsgType type, const std::vector<uint8_t>& msg, const Deadline& deadline,
              const Canceller* cancel) {
  write_frame(s, static_cast<uint16_t>(type), msg, deadline, cancel);
}

}  // namespace

Secret take_secret(std::string& key) {
  Secret secret(key);
  if (!key.empty()) OPENSSL_cleanse(&key[0], key.size());
  key.clear();
  return secret;
}

void check_auth_frame(uint16_t type, const std::vector<uint8_t>& payload, MsgType expected,
                      size_t size) {
  if (type == static_cast<uint16_t>(MsgType::kError)) {
    throw PcclError("connection refused by the remote: " + ErrorMsg::decode(payload).message);
  }
  if (type != static_cast<uint16_t>(expected)) {
    throw ProtocolViolation(std::string("expected the handshake message ") + type_name(expected) +
                            ", got a frame of type " + std::to_string(type) +
                            " (the remote does not speak this handshake)");
  }
  if (payload.size() != size) {
    throw ProtocolViolation(std::string("malformed ") + type_name(expected) + ": " +
                            std::to_string(payload.size()) + " bytes, expected " +
                            std::to_string(size));
  }
}

bool client_handshake(Socket& s, const Secret& secret, const std::string& context,
                      const Deadline& deadline, const Canceller* cancel) {
  ClientHandshake hs(secret, context);
  std::vector<uint8_t> response;
  try {
    Frame f = read_frame(s, kMaxAuthFrame, deadline, cancel);
    check_auth_frame(f.type, f.payload, MsgType::kAuthChallenge, kChallengeSize);
    response = hs.on_challenge(f.payload);
  } catch (const PcclError& e) {
    if (e.kind() != ErrorKind::kPeerFailure) throw;
    throw PeerFailure(std::string("no authentication challenge from the remote: ") + e.what());
  }
  try {
    send_msg(s, MsgType::kAuthResponse, response, deadline, cancel);
    Frame f = read_frame(s, kMaxAuthFrame, deadline, cancel);
    check_auth_frame(f.type, f.payload, MsgType::kAuthResult, kResultSize);
    hs.on_result(f.payload);
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kCancelled) throw;
    hs.throw_if_refused();  // a secret on one side only: our own reason is the clearest
    if (e.kind() != ErrorKind::kPeerFailure) throw;
    throw PeerFailure(std::string("no authentication result from the remote: ") + e.what());
  }
  return hs.authenticated();
}

ServerHandshake::Result server_handshake_finish(Socket& s, ServerHandshake& hs,
                                                const Deadline& deadline,
                                                const Canceller* cancel) {
  Frame f;
  try {
    f = read_frame(s, kMaxAuthFrame, deadline, cancel);
  } catch (const PcclError& e) {
    if (e.kind() == ErrorKind::kProtocol || e.kind() == ErrorKind::kGeneric) {
      refuse_malformed_response(s, cancel);
    }
    throw;
  }
  return server_handshake_answer(s, hs, f, deadline, cancel);
}

ServerHandshake::Result server_handshake_answer(Socket& s, ServerHandshake& hs, const Frame& m2,
                                                const Deadline& deadline,
                                                const Canceller* cancel) {
  try {
    check_auth_frame(m2.type, m2.payload, MsgType::kAuthResponse, kResponseSize);
  } catch (const PcclError&) {
    refuse_malformed_response(s, cancel);
    throw;
  }
  ServerHandshake::Result r = hs.on_response(m2.payload);
  try {
    send_msg(s, MsgType::kAuthResult, r.reply, deadline, cancel);
  } catch (const PcclError&) {
    if (r.ok) throw;  // a refusal stays a refusal, whether or not it was delivered
  }
  return r;
}

void refuse_malformed_response(Socket& s, const Canceller* cancel) {
  try {
    send_msg(s, MsgType::kAuthResult, ServerHandshake::refusal("malformed handshake response"),
             Deadline::after(0.2), cancel);
  } catch (const PcclError&) {
    // best effort: the connection is dropped either way
  }
}

}  // namespace pccl
