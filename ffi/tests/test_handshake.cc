// Authentication handshake: mutual success, every mismatch refused on both
// sides with its own message, replays and cross-context proofs refused, and
// hostile input rejected without a crash.
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/errors.h"
#include "security/handshake.h"
#include "tests/check.h"

using namespace pccl;
using Bytes = std::vector<uint8_t>;

namespace {

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Outcome of one full handshake, as both sides see it.
struct Outcome {
  bool server_ok = false;
  bool server_authenticated = false;
  std::string server_error;
  ErrorKind server_kind = ErrorKind::kGeneric;
  bool client_ok = false;
  bool client_authenticated = false;
  std::string client_error;
  ErrorKind client_kind = ErrorKind::kGeneric;
  Bytes m1, m2, m3;
};

Outcome run(const Secret& server_secret, const std::string& server_ctx,
            const Secret& client_secret, const std::string& client_ctx) {
  Outcome o;
  ServerHandshake server(server_secret, server_ctx);
  ClientHandshake client(client_secret, client_ctx);
  o.m1 = server.challenge();
  try {
    o.m2 = client.on_challenge(o.m1);
  } catch (const PcclError& e) {
    o.client_error = e.what();
    o.client_kind = e.kind();
    return o;
  }
  ServerHandshake::Result r = server.on_response(o.m2);
  o.server_ok = r.ok;
  o.server_authenticated = r.authenticated;
  o.server_error = r.error;
  o.server_kind = r.kind;
  o.m3 = r.reply;
  try {
    client.on_result(o.m3);
    o.client_ok = true;
    o.client_authenticated = client.authenticated();
  } catch (const PcclError& e) {
    o.client_error = e.what();
    o.client_kind = e.kind();
  }
  return o;
}

void test_sizes() {
  ServerHandshake s(Secret("k"), "master");
  ClientHandshake c(Secret("k"), "master");
  Bytes m1 = s.challenge();
  CHECK_EQ(m1.size(), kChallengeSize);
  Bytes m2 = c.on_challenge(m1);
  CHECK_EQ(m2.size(), kResponseSize);
  auto r = s.on_response(m2);
  CHECK_EQ(r.reply.size(), kResultSize);
  CHECK_EQ(ServerHandshake::refusal("x").size(), kResultSize);
  CHECK_EQ(kChallengeSize, 39u);
  CHECK_EQ(kResponseSize, 71u);
  CHECK_EQ(kResultSize, 200u);
}

void test_right_secret() {
  for (const char* ctx : {"master", "ring"}) {
    Outcome o = run(Secret("correct horse"), ctx, Secret("correct horse"), ctx);
    CHECK(o.server_ok);
    CHECK(o.server_authenticated);
    CHECK(o.server_error.empty());
    if (!CHECK(o.client_ok)) std::cerr << "    client: " << o.client_error << "\n";
    CHECK(o.client_authenticated);
  }
  // Binary secret with NULs and high bytes.
  std::string bin("\0\xff\x01secret\0", 10);
  Outcome o = run(Secret(bin), "ring", Secret(bin), "ring");
  CHECK(o.server_ok && o.client_ok && o.server_authenticated && o.client_authenticated);
  // The secret never appears on the wire.
  std::string key = "a-very-recognisable-secret";
  o = run(Secret(key), "master", Secret(key), "master");
  for (const Bytes* m : {&o.m1, &o.m2, &o.m3}) {
    std::string s(m->begin(), m->end());
    CHECK(!contains(s, key));
  }
}

void test_no_secret_both() {
  Outcome o = run(Secret(), "master", Secret(""), "master");
  CHECK(o.server_ok);
  CHECK(!o.server_authenticated);
  CHECK(o.client_ok);
  CHECK(!o.client_authenticated);
  CHECK_EQ(o.m1[6], 0);  // requires_auth not set
}

void test_wrong_secret() {
  Outcome o = run(Secret("alpha"), "master", Secret("beta"), "master");
  CHECK(!o.server_ok);
  CHECK(!o.client_ok);
  CHECK(o.server_kind == ErrorKind::kGeneric);
  CHECK(o.client_kind == ErrorKind::kGeneric);
  if (!CHECK(contains(o.server_error, "authentication failed (wrong secret)")))
    std::cerr << "    server: " << o.server_error << "\n";
  if (!CHECK(contains(o.client_error, "authentication failed (wrong secret)")))
    std::cerr << "    client: " << o.client_error << "\n";
  // A secret that is a prefix of the other is still wrong.
  o = run(Secret("alpha"), "ring", Secret("alphabet"), "ring");
  CHECK(!o.server_ok && !o.client_ok);
  CHECK(contains(o.client_error, "authentication failed (wrong secret)"));
}

void test_secret_on_one_side() {
  // Server has a secret, client has none.
  Outcome o = run(Secret("s3cret"), "master", Secret(), "master");
  CHECK(!o.server_ok);
  CHECK(!o.client_ok);
  if (!CHECK(contains(o.client_error, "this peer has no secret but the remote requires one")))
    std::cerr << "    client: " << o.client_error << "\n";
  if (!CHECK(contains(o.server_error, "remote did not authenticate")))
    std::cerr << "    server: " << o.server_error << "\n";
  CHECK(!contains(o.server_error, "wrong secret"));
  // The client's response carries no MAC.
  CHECK_EQ(o.m2[6], 0);

  // Client has a secret, server has none.
  o = run(Secret(), "ring", Secret("s3cret"), "ring");
  CHECK(!o.server_ok);
  CHECK(!o.client_ok);
  if (!CHECK(contains(o.client_error, "this peer has a secret but the remote does not use one")))
    std::cerr << "    client: " << o.client_error << "\n";
  if (!CHECK(contains(o.server_error, "remote has a secret but this peer has none")))
    std::cerr << "    server: " << o.server_error << "\n";
  // No MAC handed to a server that does not claim the secret.
  Bytes mac(o.m2.begin() + 39, o.m2.end());
  CHECK(mac == Bytes(32, 0));
  CHECK_EQ(o.m2[6], 1);

  // The client knows before M3 arrives, and throw_if_refused() says it too.
  ServerHandshake s(Secret("x"), "ring");
  ClientHandshake c(Secret(), "ring");
  c.on_challenge(s.challenge());
  CHECK(contains(c.local_error(), "this peer has no secret but the remote requires one"));
  std::string what;
  CHECK(throws_kind([&] { c.throw_if_refused(); }, ErrorKind::kGeneric, &what));
  CHECK(contains(what, "this peer has no secret"));
  // And the local reason wins even if M3 is garbage.
  CHECK(throws_kind([&] { c.on_result(Bytes(3, 0)); }, ErrorKind::kGeneric, &what));
  CHECK(contains(what, "this peer has no secret"));

  // All four messages differ from each other.
  Outcome a = run(Secret("s"), "m", Secret(), "m");
  Outcome b = run(Secret(), "m", Secret("s"), "m");
  Outcome w = run(Secret("s"), "m", Secret("t"), "m");
  CHECK(a.client_error != b.client_error && a.client_error != w.client_error &&
        b.client_error != w.client_error);
  CHECK(a.server_error != b.server_error && a.server_error != w.server_error &&
        b.server_error != w.server_error);
}

void test_replay() {
  Secret k("shared");
  Outcome first = run(k, "master", k, "master");
  CHECK(first.server_ok && first.client_ok);

  // An attacker replays the captured M2 against a fresh server challenge.
  ServerHandshake s(k, "master");
  Bytes fresh = s.challenge();
  CHECK(fresh != first.m1);
  auto r = s.on_response(first.m2);
  CHECK(!r.ok);
  CHECK(contains(r.error, "authentication failed"));
  CHECK(!r.authenticated);
  // The refusal carries no server proof.
  CHECK(Bytes(r.reply.begin() + 7, r.reply.begin() + 39) == Bytes(32, 0));

  // A fake server replays a captured M1 and M3 to a fresh client.
  ClientHandshake c(k, "master");
  Bytes m2 = c.on_challenge(first.m1);
  CHECK(m2 != first.m2);  // fresh client nonce, so a fresh MAC
  std::string what;
  CHECK(throws_kind([&] { c.on_result(first.m3); }, ErrorKind::kGeneric, &what));
  CHECK(contains(what, "authentication failed (wrong secret)"));

  // Reflection: the client's own MAC sent back as the server's proof.
  ServerHandshake s2(k, "ring");
  ClientHandshake c2(k, "ring");
  Bytes m1b = s2.challenge();
  Bytes m2b = c2.on_challenge(m1b);
  Bytes fake = s2.on_response(m2b).reply;
  std::memcpy(fake.data() + 7, m2b.data() + 39, 32);
  CHECK(throws_kind([&] { c2.on_result(fake); }, ErrorKind::kGeneric, &what));
  CHECK(contains(what, "authentication failed"));
}

void test_context_binding() {
  Secret k("shared");
  // A client proving itself for a "ring" connection to a "master" server.
  Outcome o = run(k, "master", k, "ring");
  CHECK(!o.server_ok && !o.client_ok);
  CHECK(contains(o.server_error, "authentication failed"));
  o = run(k, "ring", k, "master");
  CHECK(!o.server_ok && !o.client_ok);
  o = run(k, "ring", k, "rinG");  // same length: the bytes themselves are bound
  CHECK(!o.server_ok && !o.client_ok);
  o = run(k, "", k, "ring");
  CHECK(!o.server_ok && !o.client_ok);

  // The same client nonce and server nonce, only the context differs: the
  // ring client's response is rejected by a master server whose challenge it
  // answered, while a master client's response to that challenge passes.
  ServerHandshake master(k, "master");
  Bytes m1 = master.challenge();
  ClientHandshake c_ring(k, "ring");
  Bytes m2_ring = c_ring.on_challenge(m1);
  auto r = master.on_response(m2_ring);
  CHECK(!r.ok);
  CHECK(contains(r.error, "authentication failed (wrong secret)"));

  // The server proof is bound too: a master server's accepted M3 does not
  // satisfy a ring client that answered the same challenge.
  ServerHandshake master2(k, "master");
  Bytes m1b = master2.challenge();
  ClientHandshake c_master(k, "master");
  ClientHandshake c_ring2(k, "ring");
  Bytes m2_master = c_master.on_challenge(m1b);
  c_ring2.on_challenge(m1b);
  auto r2 = master2.on_response(m2_master);
  CHECK(r2.ok);
  std::string what;
  CHECK(throws_kind([&] { c_ring2.on_result(r2.reply); }, ErrorKind::kGeneric, &what));
  CHECK(contains(what, "authentication failed"));
  CHECK(!throws_kind([&] { c_master.on_result(r2.reply); }, ErrorKind::kGeneric));
}

void test_nonces_fresh() {
  Secret k("k");
  std::vector<Bytes> server_nonces, client_nonces;
  for (int i = 0; i < 64; ++i) {
    Outcome o = run(k, "ring", k, "ring");
    server_nonces.emplace_back(o.m1.begin() + 7, o.m1.end());
    client_nonces.emplace_back(o.m2.begin() + 7, o.m2.begin() + 39);
  }
  bool all_distinct = true;
  for (size_t i = 0; i < server_nonces.size(); ++i) {
    if (server_nonces[i] == Bytes(32, 0)) all_distinct = false;
    for (size_t j = 0; j < i; ++j) {
      if (server_nonces[i] == server_nonces[j] || client_nonces[i] == client_nonces[j])
        all_distinct = false;
    }
    for (size_t j = 0; j < client_nonces.size(); ++j) {
      if (server_nonces[i] == client_nonces[j]) all_distinct = false;
    }
  }
  CHECK(all_distinct);
}

void test_refusal_message() {
  ServerHandshake s(Secret("k"), "master");
  ClientHandshake c(Secret("k"), "master");
  c.on_challenge(s.challenge());
  std::string what;
  CHECK(throws_kind([&] { c.on_result(ServerHandshake::refusal("master is shutting down")); },
                    ErrorKind::kGeneric, &what));
  CHECK(contains(what, "refused by the remote: master is shutting down"));

  // Long and unprintable reasons are bounded and sanitised.
  ServerHandshake s2(Secret(), "master");
  ClientHandshake c2(Secret(), "master");
  c2.on_challenge(s2.challenge());
  std::string nasty(1000, 'A');
  nasty[3] = '\n';
  nasty[4] = '\0';
  nasty[5] = '\x9b';
  Bytes m = ServerHandshake::refusal(nasty);
  CHECK_EQ(m.size(), kResultSize);
  CHECK(throws_kind([&] { c2.on_result(m); }, ErrorKind::kGeneric, &what));
  CHECK(contains(what, "AAA???AAA"));
  CHECK(what.size() < 300);

  // The server-side refusal of a malformed response is a ProtocolError with a reply.
  ServerHandshake s3(Secret("k"), "ring");
  s3.challenge();
  auto r = s3.on_response(Bytes(5, 0));
  CHECK(!r.ok);
  CHECK(r.kind == ErrorKind::kProtocol);
  CHECK(contains(r.error, "malformed"));
  CHECK_EQ(r.reply.size(), kResultSize);
  CHECK_EQ(r.reply[6], 1);
}

void test_misuse() {
  ServerHandshake s(Secret("k"), "m");
  CHECK(throws_kind([&] { s.on_response(Bytes(kResponseSize, 0)); }, ErrorKind::kGeneric));
  Bytes m1 = s.challenge();
  CHECK(throws_kind([&] { s.challenge(); }, ErrorKind::kGeneric));
  ClientHandshake c(Secret("k"), "m");
  CHECK(throws_kind([&] { c.on_result(Bytes(kResultSize, 0)); }, ErrorKind::kGeneric));
  Bytes m2 = c.on_challenge(m1);
  CHECK(throws_kind([&] { c.on_challenge(m1); }, ErrorKind::kGeneric));
  auto r = s.on_response(m2);
  CHECK(r.ok);
  CHECK(throws_kind([&] { s.on_response(m2); }, ErrorKind::kGeneric));
  c.on_result(r.reply);
  CHECK(throws_kind([&] { c.on_result(r.reply); }, ErrorKind::kGeneric));
}

void test_secret_type() {
  Secret a("abc");
  CHECK(!a.empty());
  CHECK_EQ(a.size(), 3u);
  Secret b = a;
  CHECK_EQ(b.size(), 3u);
  Secret c = std::move(b);
  CHECK_EQ(c.size(), 3u);
  CHECK(b.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  b = c;
  CHECK_EQ(b.size(), 3u);
  b = Secret();
  CHECK(b.empty());
  CHECK(Secret().empty());
  CHECK(Secret(std::string()).empty());
  // A copied secret still authenticates.
  Outcome o = run(c, "ring", a, "ring");
  CHECK(o.server_ok && o.client_ok);
}

// Returns true when the whole exchange failed cleanly (no acceptance anywhere).
bool handshake_fails_with(int stage, const Bytes& tampered, Secret k) {
  ServerHandshake s(k, "ring");
  ClientHandshake c(k, "ring");
  Bytes m1 = s.challenge();
  Bytes m2;
  try {
    m2 = c.on_challenge(stage == 1 ? tampered : m1);
  } catch (const PcclError&) {
    return true;
  }
  auto r = s.on_response(stage == 2 ? tampered : m2);
  bool client_ok = true;
  try {
    c.on_result(stage == 3 ? tampered : r.reply);
  } catch (const PcclError&) {
    client_ok = false;
  }
  return !(r.ok && client_ok);
}

void test_bit_flips() {
  // Every single-bit change to any message makes the handshake fail.
  Secret k("flip");
  Outcome good = run(k, "ring", k, "ring");
  CHECK(good.server_ok && good.client_ok);
  int failures_missed = 0, total = 0;
  for (int stage = 1; stage <= 3; ++stage) {
    const Bytes& base = stage == 1 ? good.m1 : stage == 2 ? good.m2 : good.m3;
    for (size_t byte = 0; byte < base.size(); ++byte) {
      for (int bit = 0; bit < 8; ++bit) {
        // Flip the bit in this run's own message, so only the flip differs.
        ++total;
        ServerHandshake s(k, "ring");
        ClientHandshake c(k, "ring");
        Bytes m1 = s.challenge();
        bool failed = false;
        Bytes m2;
        try {
          Bytes in1 = m1;
          if (stage == 1) in1[byte] ^= static_cast<uint8_t>(1u << bit);
          m2 = c.on_challenge(in1);
        } catch (const PcclError&) {
          failed = true;
        }
        if (!failed) {
          if (stage == 2) m2[byte] ^= static_cast<uint8_t>(1u << bit);
          auto r = s.on_response(m2);
          Bytes m3 = r.reply;
          if (stage == 3) m3[byte] ^= static_cast<uint8_t>(1u << bit);
          bool client_ok = true;
          try {
            c.on_result(m3);
          } catch (const PcclError&) {
            client_ok = false;
          }
          failed = !(r.ok && client_ok);
        }
        if (!failed) ++failures_missed;
      }
    }
  }
  CHECK_EQ(failures_missed, 0);
  CHECK_EQ(total, (39 + 71 + 200) * 8);
  // Replacing a message with one from another run fails as well.
  CHECK(handshake_fails_with(2, good.m2, k));
  CHECK(handshake_fails_with(3, good.m3, k));
}

void test_random_input() {
  std::mt19937_64 rng(12345);
  auto random_bytes = [&](size_t n) {
    Bytes b(n);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    return b;
  };
  auto random_size = [&](size_t exact) -> size_t {
    switch (rng() % 4) {
      case 0: return exact;
      case 1: return rng() % (exact + 1);         // truncated (or empty)
      case 2: return exact + 1 + rng() % 300;     // oversized
      default: return rng() % 1024;
    }
  };
  // With a valid header, so parsing goes past the first checks.
  auto with_header = [&](Bytes b, uint8_t type) {
    const uint8_t h[6] = {'P', 'C', 'A', 'U', 1, type};
    for (size_t i = 0; i < b.size() && i < 6; ++i) b[i] = h[i];
    return b;
  };
  long accepted = 0, clean = 0;
  const Secret secrets[2] = {Secret(), Secret("fuzz")};
  for (int i = 0; i < 6000; ++i) {
    const Secret& ks = secrets[rng() % 2];
    const Secret& kc = secrets[rng() % 2];
    const bool header = rng() % 2 == 0;
    const int target = static_cast<int>(rng() % 3);
    if (target == 0) {  // random challenge to a client
      ClientHandshake c(kc, "ring");
      Bytes m = random_bytes(random_size(kChallengeSize));
      if (header) m = with_header(m, 1);
      try {
        Bytes out = c.on_challenge(m);
        CHECK_EQ(out.size(), kResponseSize);
        // It parsed: random result bytes must still not be accepted with auth.
        Bytes m3 = random_bytes(random_size(kResultSize));
        if (header) m3 = with_header(m3, 3);
        try {
          c.on_result(m3);
          if (!kc.empty()) ++accepted;
        } catch (const PcclError&) {
          ++clean;
        }
      } catch (const PcclError&) {
        ++clean;
      }
    } else if (target == 1) {  // random response to a server
      ServerHandshake s(ks, "master");
      s.challenge();
      Bytes m = random_bytes(random_size(kResponseSize));
      if (header) m = with_header(m, 2);
      auto r = s.on_response(m);
      CHECK_EQ(r.reply.size(), kResultSize);
      if (r.ok && !ks.empty()) ++accepted;
      if (!r.ok) {
        ++clean;
        CHECK(!r.error.empty());
      }
    } else {  // random result to a client after a genuine challenge
      ServerHandshake s(ks, "master");
      ClientHandshake c(kc, "master");
      c.on_challenge(s.challenge());
      Bytes m3 = random_bytes(random_size(kResultSize));
      if (header) m3 = with_header(m3, 3);
      try {
        c.on_result(m3);
        if (!kc.empty()) ++accepted;
      } catch (const PcclError&) {
        ++clean;
      }
    }
  }
  CHECK_EQ(accepted, 0);  // no random input ever passes authentication
  CHECK(clean > 4000);
}

}  // namespace

int main() {
  test_sizes();
  test_right_secret();
  test_no_secret_both();
  test_wrong_secret();
  test_secret_on_one_side();
  test_replay();
  test_context_binding();
  test_nonces_fresh();
  test_refusal_message();
  test_misuse();
  test_secret_type();
  test_bit_flips();
  test_random_input();
  return check_summary("test_handshake");
}
