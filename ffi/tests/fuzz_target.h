// Fuzz targets for the parsers that read bytes from the network: frames
// (transport/frame.h), messages (protocol/messages.h,
// shared_state_messages.h, topology_messages.h), the field reader
// (protocol/wire.h) and the authentication handshake (security/handshake*.h).
//
// A target takes arbitrary bytes, feeds them to one parser and checks its
// contract: it either decodes or throws PcclError, never anything else, and
// what it does decode obeys the properties listed with each target (exact
// round trips, limits respected, no forged authentication). A broken property
// aborts, which both drivers report as a crash:
//   fuzz_parsers.cc    plain main with a seeded mutator (any compiler)
//   fuzz_libfuzzer.cc  libFuzzer entry point (clang, -DJAX_PCCL_LIBFUZZER=ON)
// Run them under -DJAX_PCCL_SANITIZE=address so an over-read is a crash too.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/errors.h"

namespace pccl_fuzz {

using Bytes = std::vector<uint8_t>;

struct FuzzTarget {
  const char* name;
  // Returns whether the parser accepted the input (for the drivers' tallies).
  bool (*one_input)(const uint8_t* data, size_t size);
  // Valid encodings (in the target's input format) that mutation starts from.
  std::vector<Bytes> (*seeds)();
};

FuzzTarget frame_target();
FuzzTarget messages_target();
FuzzTarget state_messages_target();
FuzzTarget topology_messages_target();
FuzzTarget wire_target();
FuzzTarget handshake_target();

// Every target, in a fixed order.
std::vector<FuzzTarget> all_targets();

// Prints the broken property and aborts: the fuzzer keeps the input as a crash.
[[noreturn]] void fail(const char* target, const char* property);

}  // namespace pccl_fuzz

#define FUZZ_CHECK(target, cond) \
  do {                           \
    if (!(cond)) ::pccl_fuzz::fail((target), #cond); \
  } while (0)

namespace pccl_fuzz {

// For message targets: decode() returns or throws PcclError, and parsing is
// strict, so whatever decodes re-encodes to exactly the same bytes. Returns
// whether it decoded; `check(msg)` adds the message's own properties.
template <typename Msg, typename Check>
bool decodes_exactly(const char* target, const Bytes& payload, Check check) {
  Msg m;
  try {
    m = Msg::decode(payload);
  } catch (const pccl::PcclError&) {
    return false;
  }
  FUZZ_CHECK(target, m.encode() == payload);
  check(m);
  return true;
}

// Message target inputs: one byte choosing the decoder, then the payload.
inline Bytes tagged(uint8_t which, Bytes payload) {
  payload.insert(payload.begin(), which);
  return payload;
}

// Runs the decoder the first byte chooses on the rest (an exact-size copy,
// so an over-read is an ASan report).
template <size_t N>
bool dispatch_tagged(bool (*const (&decoders)[N])(const Bytes&), const uint8_t* data, size_t size) {
  if (size == 0) return false;
  Bytes payload(data + 1, data + size);
  return decoders[data[0] % N](payload);
}

}  // namespace pccl_fuzz
