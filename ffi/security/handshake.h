// Shared-secret authentication: a mutual challenge-response handshake with
// HMAC-SHA256 over fresh nonces. The secret never crosses the wire, and a
// recorded handshake cannot be replayed.
//
// This file is pure message-level logic with no sockets. The same objects
// serve blocking client code and the master's non-blocking poll loop: the
// caller moves the byte vectors, and this code only builds and checks them.
// Every message has a fixed size (kChallengeSize, kResponseSize, kResultSize),
// so a poll loop knows how many bytes to buffer before it hands them over.
//
// Protocol (version 1). The server is the side that accepts the TCP connection
// (the master, or a ring peer accepting its neighbour); the client is the side
// that connects. K = the shared secret, ctx = the context string ("master",
// "ring", ...), which both sides pass in locally and which never goes on the wire.
//
//   server                                                client
//     |  M1 CHALLENGE  {Ns, requires_auth}                    |
//     |------------------------------------------------------>|
//     |  M2 RESPONSE   {Nc, has_secret, Mc}                    |
//     |<------------------------------------------------------|
//     |  M3 RESULT     {status, Ms | reason}                   |
//     |------------------------------------------------------>|
//
//   Ns, Nc : 32-byte nonces from RAND_bytes, fresh for every handshake
//   Mc = HMAC-SHA256(K, "jax_pccl/v1/client" 0x00 || u32le(len ctx) || ctx || Ns || Nc)
//   Ms = HMAC-SHA256(K, "jax_pccl/v1/server" 0x00 || u32le(len ctx) || ctx || Nc || Ns)
//
//  - The client proves it holds K first. The server computes Ms only after Mc
//    has verified, so a client without the secret learns no server MAC.
//  - Mc covers the server's fresh Ns, so a recorded M2 fails against a new
//    challenge. Ms covers the client's fresh Nc, so a recorded M3 fails against
//    a new client. The two labels differ, so a MAC cannot be reflected back as
//    the other side's proof. ctx is in both MACs, so a proof made for a
//    "master" connection does not verify on a "ring" connection.
//  - MACs are compared with CRYPTO_memcmp, which takes constant time.
//  - A client never sends a MAC to a server that says it does not require
//    authentication (in that case Mc is all zeros).
//  - When one side has a secret and the other has none, the handshake still
//    runs to the end, so that both sides report a clear, specific error
//    instead of "connection closed".
//
// Wire layout. Every integer is one byte. Every message starts with
// magic "PCAU", version (1), and type:
//   M1 (39 bytes):  magic[4] ver type=1 flags   Ns[32]
//                   flags: bit0 = requires_auth; every other bit must be 0
//   M2 (71 bytes):  magic[4] ver type=2 flags   Nc[32] Mc[32]
//                   flags: bit0 = has_secret; every other bit must be 0.
//                   Mc is all zeros unless the client sends a proof
//   M3 (200 bytes): magic[4] ver type=3 status  Ms[32] reason_len reason[160]
//                   status 0 = accepted: Ms is the server proof (all zeros
//                     without auth), reason_len = 0
//                   status 1 = refused: Ms is all zeros, reason_len <= 160,
//                     reason is printable text
//                   The unused tail of reason[] must be zero bytes.
// Parsing is strict: a wrong size, magic, version, type, unknown flag bits,
// a nonzero field that must be zero, or an oversized reason is a ProtocolError.
//
// Outcomes (the client's and the server's errors are kGeneric PcclErrors):
//   both secret, same     -> accepted, mutually authenticated
//   both without secret   -> accepted, unauthenticated
//   server secret only    -> client: "...this peer has no secret but the remote requires one"
//                            server: "...remote did not authenticate..."
//   client secret only    -> client: "...this peer has a secret but the remote does not use one..."
//                            server: "...remote has a secret but this peer has none..."
//   different secrets     -> both: "authentication failed (wrong secret)..."
//   replayed M2 or M3, or a proof for another ctx -> "authentication failed (wrong secret)..."
#pragma once
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "common/errors.h"

namespace pccl {

constexpr size_t kHandshakeNonceSize = 32;
constexpr size_t kHandshakeMacSize = 32;  // HMAC-SHA256
constexpr size_t kHandshakeMaxReason = 160;
constexpr size_t kHandshakeHeaderSize = 6;  // magic[4] version type
constexpr size_t kChallengeSize = kHandshakeHeaderSize + 1 + kHandshakeNonceSize;  // 39
constexpr size_t kResponseSize =
    kHandshakeHeaderSize + 1 + kHandshakeNonceSize + kHandshakeMacSize;  // 71
constexpr size_t kResultSize =
    kHandshakeHeaderSize + 1 + kHandshakeMacSize + 1 + kHandshakeMaxReason;  // 200

// The key material of the shared secret. An empty secret means "no
// authentication". It cannot be printed (operator<< is deleted), and its bytes
// are wiped with OPENSSL_cleanse when it is destroyed or assigned over.
// The constructor wipes the string it was given (its own by-value copy, or the
// caller's buffer when the caller std::move()s it in). Copies of the secret that
// the caller still holds elsewhere (Python objects, a file buffer) are the
// caller's business.
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string key);
  Secret(const Secret& other);
  Secret(Secret&& other) noexcept;
  Secret& operator=(const Secret& other);
  Secret& operator=(Secret&& other) noexcept;
  ~Secret();

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }

  friend std::ostream& operator<<(std::ostream&, const Secret&) = delete;

 private:
  friend class HandshakeCrypto;
  void wipe() noexcept;
  std::unique_ptr<unsigned char[]> bytes_;
  size_t size_ = 0;
};

// The accepting side. Call challenge() once, send its bytes, feed the client's
// kResponseSize bytes to on_response(), send Result::reply (always non-empty),
// then proceed only if Result::ok. Remote input never makes it throw;
// calling the methods out of order throws PcclError (a programming error).
class ServerHandshake {
 public:
  struct Result {
    bool ok = false;
    bool authenticated = false;         // ok, and both sides proved the secret
    ErrorKind kind = ErrorKind::kGeneric;  // kProtocol for malformed input
    std::string error;                  // empty when ok
    std::vector<uint8_t> reply;         // M3, to send to the client in every case
  };

  ServerHandshake(const Secret& secret, std::string context);
  std::vector<uint8_t> challenge();
  Result on_response(const std::vector<uint8_t>& msg);

  // An M3 that refuses the client with `reason`: for a server that rejects a
  // client for its own reasons after sending the challenge (e.g. timeout, full).
  // The reason is cut to kHandshakeMaxReason bytes; unprintable bytes become '?'.
  // The client's on_result() then throws "connection refused by the remote: <reason>".
  static std::vector<uint8_t> refusal(const std::string& reason);

 private:
  Secret secret_;
  std::string context_;
  std::vector<uint8_t> server_nonce_;
  int state_ = 0;  // 0: new, 1: challenge sent, 2: done
};

// The connecting side. Feed the server's kChallengeSize bytes to
// on_challenge() and send what it returns; feed the server's kResultSize bytes
// to on_result(), which returns when the connection is accepted and throws
// PcclError otherwise.
//
// When on_challenge() already sees that the two sides cannot agree (a secret on
// one side only), it still returns a response, so the server can report a clear
// error too, and records the reason in local_error(); on_result() then throws
// that error whatever the server answers. If M3 never arrives (the server closed
// the connection), throw_if_refused() raises that same error.
class ClientHandshake {
 public:
  ClientHandshake(const Secret& secret, std::string context);
  // Throws ProtocolViolation on a malformed challenge.
  std::vector<uint8_t> on_challenge(const std::vector<uint8_t>& msg);
  // Throws PcclError (kGeneric) on refusal or failed server proof,
  // ProtocolViolation on a malformed message.
  void on_result(const std::vector<uint8_t>& msg);

  const std::string& local_error() const { return local_error_; }
  void throw_if_refused() const;
  bool authenticated() const { return authenticated_; }  // after on_result() returned

 private:
  Secret secret_;
  std::string context_;
  std::vector<uint8_t> server_nonce_;
  std::vector<uint8_t> client_nonce_;
  bool server_requires_auth_ = false;
  bool authenticated_ = false;
  std::string local_error_;
  int state_ = 0;  // 0: new, 1: response sent, 2: done
};

}  // namespace pccl
