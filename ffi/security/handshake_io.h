// The handshake of security/handshake.h on the wire. Every connection, to the
// master or between ring neighbours, starts with it, before any other frame.
// Each handshake message travels as one frame (protocol/messages.h):
//
//   accepting side                                   connecting side
//     | AUTH_CHALLENGE  (M1, kChallengeSize bytes)          |
//     |---------------------------------------------------->|
//     | AUTH_RESPONSE   (M2, kResponseSize bytes)           |
//     |<----------------------------------------------------|
//     | AUTH_RESULT     (M3, kResultSize bytes)             |
//     |---------------------------------------------------->|
//     | ... HELLO / PEER_HELLO and the rest, only if M3 accepted
//
// The handshake runs even when neither side has a secret (the messages then
// carry the "no auth" flags), so that a secret on one side only is refused
// with a clear error on both sides instead of running unauthenticated.
// A frame of the wrong type or with a payload of the wrong size is a
// ProtocolViolation; no frame larger than kMaxAuthFrame is read before the
// handshake has succeeded.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/canceller.h"
#include "common/deadline.h"
#include "protocol/messages.h"
#include "security/handshake.h"
#include "transport/frame.h"
#include "transport/socket.h"

namespace pccl {

// The context strings of the two kinds of connection: a proof made for one
// does not verify on the other.
inline constexpr const char* kAuthContextMaster = "master";
inline constexpr const char* kAuthContextRing = "ring";

// The largest frame payload read from a connection that has not completed the
// handshake (M3 and a short ERROR frame fit).
constexpr uint32_t kMaxAuthFrame = 512;

// A Secret made from `key`; `key`'s bytes are wiped and it is left empty.
Secret take_secret(std::string& key);

// Checks that a frame received during the handshake is `expected` with a
// payload of exactly `size` bytes. Throws ProtocolViolation otherwise; an
// ERROR frame becomes PcclError("connection refused by the remote: ...").
void check_auth_frame(uint16_t type, const std::vector<uint8_t>& payload, MsgType expected,
                      size_t size);

// The connecting side, blocking: reads M1, sends M2, reads M3. Returns whether
// both sides proved the secret (false: both run without one). Throws
//   PcclError (kGeneric)  refused, wrong secret, or a secret on one side only
//   ProtocolViolation     the remote sent something that is not the handshake
//   PeerFailure           connection closed or deadline passed before a verdict
//   Cancelled             `cancel` fired
bool client_handshake(Socket& s, const Secret& secret, const std::string& context,
                      const Deadline& deadline, const Canceller* cancel);

// The accepting side's second half, blocking (the caller has sent M1 from
// hs.challenge()): reads M2, sends M3 (a refusal too) and returns the outcome.
// Throws PeerFailure / Cancelled when the connection fails first; a malformed
// frame is answered with a refusal and then thrown as ProtocolViolation.
ServerHandshake::Result server_handshake_finish(Socket& s, ServerHandshake& hs,
                                                const Deadline& deadline,
                                                const Canceller* cancel);

// The same, for a caller that has already read the M2 frame without blocking
// (a poll loop, with FrameReader): checks it, sends M3 and returns the outcome.
// A malformed frame is answered with a refusal and thrown as ProtocolViolation.
ServerHandshake::Result server_handshake_answer(Socket& s, ServerHandshake& hs, const Frame& m2,
                                                const Deadline& deadline,
                                                const Canceller* cancel);

// Sends an AUTH_RESULT refusing a malformed handshake response (best effort:
// the connection is dropped either way).
void refuse_malformed_response(Socket& s, const Canceller* cancel);

}  // namespace pccl
