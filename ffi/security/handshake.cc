#include "security/handshake.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>
#include <utility>

namespace pccl {

namespace {

constexpr uint8_t kMagic[4] = {'P', 'C', 'A', 'U'};
constexpr uint8_t kVersion = 1;
constexpr uint8_t kTypeChallenge = 1;
constexpr uint8_t kTypeResponse = 2;
constexpr uint8_t kTypeResult = 3;
constexpr uint8_t kFlagAuth = 0x01;  // M1: requires_auth, M2: has_secret
constexpr uint8_t kStatusAccepted = 0;
constexpr uint8_t kStatusRefused = 1;

// Offsets inside the messages (see the layout in handshake.h).
constexpr size_t kOffFlags = kHandshakeHeaderSize;  // M1/M2 flags, M3 status
constexpr size_t kOffNonce = kOffFlags + 1;         // M1 Ns, M2 Nc
constexpr size_t kOffClientMac = kOffNonce + kHandshakeNonceSize;
constexpr size_t kOffServerMac = kOffFlags + 1;
constexpr size_t kOffReasonLen = kOffServerMac + kHandshakeMacSize;
constexpr size_t kOffReason = kOffReasonLen + 1;
static_assert(kOffClientMac + kHandshakeMacSize == kResponseSize, "M2 layout");
static_assert(kOffReason + kHandshakeMaxReason == kResultSize, "M3 layout");
static_assert(kHandshakeMaxReason <= 255, "reason_len is one byte");

const char kClientLabel[] = "jax_pccl/v1/client";
const char kServerLabel[] = "jax_pccl/v1/server";

const char kErrWrongSecret[] = "authentication failed (wrong secret)";

using Bytes = std::vector<uint8_t>;

Bytes header(uint8_t type, size_t size) {
  Bytes b(size, 0);
  std::memcpy(b.data(), kMagic, sizeof(kMagic));
  b[4] = kVersion;
  b[5] = type;
  return b;
}

const char* type_name(uint8_t type) {
  switch (type) {
    case kTypeChallenge: return "challenge";
    case kTypeResponse: return "response";
    case kTypeResult: return "result";
  }
  return "message";
}

// Checks size, magic, version and type; throws ProtocolViolation.
void check_header(const Bytes& msg, uint8_t type, size_t size) {
  const std::string what = std::string("handshake ") + type_name(type);
  if (msg.size() < kHandshakeHeaderSize || std::memcmp(msg.data(), kMagic, sizeof(kMagic)) != 0) {
    throw ProtocolViolation("malformed " + what +
                            ": not a jax_pccl handshake message (is the remote a jax_pccl "
                            "endpoint of the same kind?)");
  }
  if (msg[4] != kVersion) {
    throw ProtocolViolation("malformed " + what + ": unsupported handshake version " +
                            std::to_string(msg[4]) + " (this peer speaks version " +
                            std::to_string(kVersion) + ")");
  }
  if (msg[5] != type) {
    throw ProtocolViolation("malformed " + what + ": unexpected message type " +
                            std::to_string(msg[5]));
  }
  if (msg.size() != size) {
    throw ProtocolViolation("malformed " + what + ": " + std::to_string(msg.size()) +
                            " bytes, expected " + std::to_string(size));
  }
}

bool all_zero(const uint8_t* p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; ++i) acc |= p[i];
  return acc == 0;
}

Bytes random_nonce() {
  Bytes n(kHandshakeNonceSize);
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1) {
    throw PcclError(ErrorKind::kGeneric, "handshake: could not obtain random bytes (RAND_bytes)");
  }
  return n;
}

// Network text goes into exception messages and logs: keep it printable ASCII.
std::string sanitize_reason(const std::string& reason) {
  std::string out = reason.substr(0, kHandshakeMaxReason);
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

Bytes make_result(uint8_t status, const uint8_t* mac, const std::string& reason) {
  Bytes b = header(kTypeResult, kResultSize);
  b[kOffFlags] = status;
  if (mac != nullptr) std::memcpy(b.data() + kOffServerMac, mac, kHandshakeMacSize);
  const std::string r = sanitize_reason(reason);
  b[kOffReasonLen] = static_cast<uint8_t>(r.size());
  std::memcpy(b.data() + kOffReason, r.data(), r.size());
  return b;
}

}  // namespace

// The only code that reads the secret's bytes.
class HandshakeCrypto {
 public:
  // HMAC-SHA256(K, label 0x00 || u32le(len ctx) || ctx || first || second).
  static void mac(const Secret& secret, const char* label, const std::string& context,
                  const Bytes& first, const Bytes& second, uint8_t out[kHandshakeMacSize]) {
    if (secret.empty()) throw PcclError(ErrorKind::kGeneric, "handshake: MAC without a secret");
    Bytes msg;
    msg.reserve(std::strlen(label) + 1 + 4 + context.size() + first.size() + second.size());
    msg.insert(msg.end(), label, label + std::strlen(label) + 1);  // with its NUL
    const uint64_t n = context.size();
    if (n > 0xffffffffu) throw PcclError(ErrorKind::kGeneric, "handshake: context too long");
    for (int i = 0; i < 4; ++i) msg.push_back(static_cast<uint8_t>(n >> (8 * i)));
    msg.insert(msg.end(), context.begin(), context.end());
    msg.insert(msg.end(), first.begin(), first.end());
    msg.insert(msg.end(), second.begin(), second.end());
    unsigned int out_len = 0;
    if (HMAC(EVP_sha256(), secret.bytes_.get(), static_cast<int>(secret.size_), msg.data(),
             msg.size(), out, &out_len) == nullptr ||
        out_len != kHandshakeMacSize) {
      OPENSSL_cleanse(out, kHandshakeMacSize);
      throw PcclError(ErrorKind::kGeneric, "handshake: HMAC-SHA256 failed");
    }
  }

  // Constant-time check of `received` against the expected MAC.
  static bool verify(const Secret& secret, const char* label, const std::string& context,
                     const Bytes& first, const Bytes& second, const uint8_t* received) {
    uint8_t expected[kHandshakeMacSize];
    mac(secret, label, context, first, second, expected);
    const bool ok = CRYPTO_memcmp(expected, received, kHandshakeMacSize) == 0;
    OPENSSL_cleanse(expected, sizeof(expected));
    return ok;
  }
};

// ---- Secret ----

Secret::Secret(std::string key) {
  size_ = key.size();
  if (size_ > 0) {
    bytes_.reset(new unsigned char[size_]);
    std::memcpy(bytes_.get(), key.data(), size_);
  }
  if (!key.empty()) OPENSSL_cleanse(&key[0], key.size());
}

Secret::Secret(const Secret& other) : size_(other.size_) {
  if (size_ > 0) {
    bytes_.reset(new unsigned char[size_]);
    std::memcpy(bytes_.get(), other.bytes_.get(), size_);
  }
}

Secret::Secret(Secret&& other) noexcept : bytes_(std::move(other.bytes_)), size_(other.size_) {
  other.size_ = 0;
}

Secret& Secret::operator=(const Secret& other) {
  if (this != &other) {
    Secret copy(other);
    *this = std::move(copy);
  }
  return *this;
}

Secret& Secret::operator=(Secret&& other) noexcept {
  if (this != &other) {
    wipe();
    bytes_ = std::move(other.bytes_);
    size_ = other.size_;
    other.size_ = 0;
  }
  return *this;
}

Secret::~Secret() { wipe(); }

void Secret::wipe() noexcept {
  if (bytes_ && size_ > 0) OPENSSL_cleanse(bytes_.get(), size_);
  bytes_.reset();
  size_ = 0;
}

// ---- ServerHandshake ----

ServerHandshake::ServerHandshake(const Secret& secret, std::string context)
    : secret_(secret), context_(std::move(context)) {}

std::vector<uint8_t> ServerHandshake::challenge() {
  if (state_ != 0) throw PcclError(ErrorKind::kGeneric, "handshake: challenge() called twice");
  server_nonce_ = random_nonce();
  Bytes b = header(kTypeChallenge, kChallengeSize);
  b[kOffFlags] = secret_.empty() ? 0 : kFlagAuth;
  std::memcpy(b.data() + kOffNonce, server_nonce_.data(), kHandshakeNonceSize);
  state_ = 1;
  return b;
}

ServerHandshake::Result ServerHandshake::on_response(const std::vector<uint8_t>& msg) {
  if (state_ != 1) {
    throw PcclError(ErrorKind::kGeneric,
                    state_ == 0 ? "handshake: on_response() before challenge()"
                                : "handshake: on_response() called twice");
  }
  state_ = 2;
  Result r;
  auto refuse = [&](ErrorKind kind, std::string error, const std::string& reason) {
    r.ok = false;
    r.kind = kind;
    r.error = std::move(error);
    r.reply = make_result(kStatusRefused, nullptr, reason);
    return r;
  };

  try {
    check_header(msg, kTypeResponse, kResponseSize);
    const uint8_t flags = msg[kOffFlags];
    if ((flags & ~kFlagAuth) != 0) {
      throw ProtocolViolation("malformed handshake response: unknown flag bits " +
                              std::to_string(flags));
    }
    const bool client_has_secret = (flags & kFlagAuth) != 0;
    const uint8_t* client_mac = msg.data() + kOffClientMac;
    if (!client_has_secret && !all_zero(client_mac, kHandshakeMacSize)) {
      throw ProtocolViolation("malformed handshake response: a MAC without the has_secret flag");
    }
    const Bytes client_nonce(msg.begin() + kOffNonce, msg.begin() + kOffClientMac);

    if (secret_.empty()) {
      if (client_has_secret) {
        return refuse(ErrorKind::kGeneric,
                      "authentication refused: remote has a secret but this peer has none "
                      "(authentication is disabled here; give every peer and the master the "
                      "same secret, or none at all)",
                      "the remote does not use a secret but this peer has one");
      }
      r.ok = true;
      r.reply = make_result(kStatusAccepted, nullptr, "");
      return r;
    }
    if (!client_has_secret) {
      return refuse(ErrorKind::kGeneric,
                    "authentication refused: remote did not authenticate (this peer requires "
                    "a secret but the remote has none)",
                    "the remote requires a secret but this peer has none");
    }
    if (!HandshakeCrypto::verify(secret_, kClientLabel, context_, server_nonce_, client_nonce,
                                 client_mac)) {
      return refuse(ErrorKind::kGeneric,
                    std::string(kErrWrongSecret) +
                        ": the remote's proof did not verify (a different secret, or a "
                        "replayed or forged handshake)",
                    kErrWrongSecret);
    }
    uint8_t server_mac[kHandshakeMacSize];
    HandshakeCrypto::mac(secret_, kServerLabel, context_, client_nonce, server_nonce_, server_mac);
    r.ok = true;
    r.authenticated = true;
    r.reply = make_result(kStatusAccepted, server_mac, "");
    OPENSSL_cleanse(server_mac, sizeof(server_mac));
    return r;
  } catch (const PcclError& e) {
    return refuse(e.kind(), e.what(),
                  e.kind() == ErrorKind::kProtocol ? "malformed handshake response"
                                                   : "internal error in the handshake");
  }
}

std::vector<uint8_t> ServerHandshake::refusal(const std::string& reason) {
  return make_result(kStatusRefused, nullptr, reason);
}

// ---- ClientHandshake ----

ClientHandshake::ClientHandshake(const Secret& secret, std::string context)
    : secret_(secret), context_(std::move(context)) {}

std::vector<uint8_t> ClientHandshake::on_challenge(const std::vector<uint8_t>& msg) {
  if (state_ != 0) throw PcclError(ErrorKind::kGeneric, "handshake: on_challenge() called twice");
  state_ = 2;  // a malformed challenge ends the handshake
  check_header(msg, kTypeChallenge, kChallengeSize);
  const uint8_t flags = msg[kOffFlags];
  if ((flags & ~kFlagAuth) != 0) {
    throw ProtocolViolation("malformed handshake challenge: unknown flag bits " +
                            std::to_string(flags));
  }
  server_requires_auth_ = (flags & kFlagAuth) != 0;
  server_nonce_.assign(msg.begin() + kOffNonce, msg.end());
  client_nonce_ = random_nonce();

  Bytes b = header(kTypeResponse, kResponseSize);
  b[kOffFlags] = secret_.empty() ? 0 : kFlagAuth;
  std::memcpy(b.data() + kOffNonce, client_nonce_.data(), kHandshakeNonceSize);
  if (server_requires_auth_ && !secret_.empty()) {
    HandshakeCrypto::mac(secret_, kClientLabel, context_, server_nonce_, client_nonce_,
                         b.data() + kOffClientMac);
  } else if (server_requires_auth_) {
    local_error_ =
        "authentication refused: this peer has no secret but the remote requires one (give "
        "every peer and the master the same secret)";
  } else if (!secret_.empty()) {
    // Never hand a MAC to a server that does not claim to hold the secret.
    local_error_ =
        "authentication refused: this peer has a secret but the remote does not use one "
        "(authentication is disabled there; give every peer and the master the same secret, "
        "or none at all)";
  }
  state_ = 1;
  return b;
}

void ClientHandshake::throw_if_refused() const {
  if (!local_error_.empty()) throw PcclError(ErrorKind::kGeneric, local_error_);
}

void ClientHandshake::on_result(const std::vector<uint8_t>& msg) {
  if (state_ != 1) {
    throw PcclError(ErrorKind::kGeneric,
                    state_ == 0 ? "handshake: on_result() before on_challenge()"
                                : "handshake: on_result() called twice or after a failure");
  }
  state_ = 2;
  throw_if_refused();  // our own reason is the most precise one
  check_header(msg, kTypeResult, kResultSize);
  const uint8_t status = msg[kOffFlags];
  const uint8_t* server_mac = msg.data() + kOffServerMac;
  const size_t reason_len = msg[kOffReasonLen];
  if (status != kStatusAccepted && status != kStatusRefused) {
    throw ProtocolViolation("malformed handshake result: unknown status " + std::to_string(status));
  }
  if (reason_len > kHandshakeMaxReason ||
      !all_zero(msg.data() + kOffReason + reason_len, kHandshakeMaxReason - reason_len)) {
    throw ProtocolViolation("malformed handshake result: bad reason field");
  }
  if (status == kStatusRefused) {
    if (!all_zero(server_mac, kHandshakeMacSize)) {
      throw ProtocolViolation("malformed handshake result: a refusal that carries a MAC");
    }
    const std::string reason(reinterpret_cast<const char*>(msg.data() + kOffReason), reason_len);
    throw PcclError(ErrorKind::kGeneric,
                    "connection refused by the remote: " +
                        (reason.empty() ? std::string("no reason given") : sanitize_reason(reason)));
  }
  if (reason_len != 0) {
    throw ProtocolViolation("malformed handshake result: an acceptance that carries a reason");
  }
  if (!server_requires_auth_) {
    // Both sides without a secret (the other combinations set local_error_).
    if (!all_zero(server_mac, kHandshakeMacSize)) {
      throw ProtocolViolation("malformed handshake result: a MAC without authentication");
    }
    return;
  }
  if (!HandshakeCrypto::verify(secret_, kServerLabel, context_, client_nonce_, server_nonce_,
                               server_mac)) {
    throw PcclError(ErrorKind::kGeneric,
                    std::string(kErrWrongSecret) +
                        ": the remote could not prove it holds the secret (a different secret, "
                        "or a replayed or forged handshake)");
  }
  authenticated_ = true;
}

}  // namespace pccl
