// Fuzz target "frame": the frame header decoder and read_frame over a socket.
//
// Input: one byte choosing the payload limit the reader enforces (the limits
// the engine really uses), then the byte stream a remote sends.
// Properties:
//  - decode_frame_header accepts a header only if re-encoding it gives the
//    same 12 bytes (magic and version are fixed), and never above the limit;
//  - read_frame returns frames whose payload respects the limit and ends the
//    stream with PcclError (EOF, bad header), never anything else;
//  - FrameReader (the non-blocking reader of poll loops) returns exactly the
//    same frames from the same stream.
#include <cstring>
#include <memory>
#include <vector>

#include "common/deadline.h"
#include "common/errors.h"
#include "protocol/messages.h"
#include "security/handshake.h"
#include "security/handshake_io.h"
#include "tests/fuzz_socketpair.h"
#include "tests/fuzz_target.h"
#include "transport/frame.h"

namespace pccl_fuzz {
namespace {

constexpr const char* kName = "frame";
// Payload limits in use: ring PEER_HELLO, handshake response, pre-auth, control.
constexpr uint32_t kLimits[] = {0, 64, static_cast<uint32_t>(pccl::kResponseSize),
                                pccl::kMaxAuthFrame, pccl::kMaxControlPayload};

// The payload length the header announces, or -1 if it is rejected.
int64_t header_only(const uint8_t* data, size_t size, uint32_t limit) {
  if (size < pccl::kFrameHeaderSize) return -1;
  // An exact-size heap copy, so reading past the 12 bytes is an ASan report.
  std::unique_ptr<uint8_t[]> head(new uint8_t[pccl::kFrameHeaderSize]);
  std::memcpy(head.get(), data, pccl::kFrameHeaderSize);
  pccl::FrameHeader h;
  try {
    h = pccl::decode_frame_header(head.get(), limit);
  } catch (const pccl::PcclError&) {
    return -1;
  }
  FUZZ_CHECK(kName, h.length <= limit);
  uint8_t again[pccl::kFrameHeaderSize];
  pccl::encode_frame_header(again, h.type, h.length);
  FUZZ_CHECK(kName, std::memcmp(again, data, pccl::kFrameHeaderSize) == 0);
  return h.length;
}

// Every frame read_frame() returns from the stream, until its PcclError.
std::vector<pccl::Frame> read_stream(const uint8_t* data, size_t size, uint32_t limit) {
  FedSocket s = feed(data, size);
  std::vector<pccl::Frame> frames;
  size_t consumed = 0;
  try {
    for (;;) {
      pccl::Frame f = pccl::read_frame(s.reader, limit, pccl::Deadline::after(5.0), nullptr);
      FUZZ_CHECK(kName, f.payload.size() <= limit);
      consumed += pccl::kFrameHeaderSize + f.payload.size();
      FUZZ_CHECK(kName, consumed <= size);
      frames.push_back(std::move(f));
    }
  } catch (const pccl::PcclError&) {
    // The stream ends in an error: EOF (PeerFailure) or a bad header (Protocol).
  }
  return frames;
}

// The same through FrameReader, the poll loops' reader: all the bytes are
// already there, so it must never report "wait for more" before the end.
std::vector<pccl::Frame> reader_stream(const uint8_t* data, size_t size, uint32_t limit) {
  FedSocket s = feed(data, size);
  pccl::FrameReader reader;
  std::vector<pccl::Frame> frames;
  try {
    while (reader.read_available(s.reader, limit)) frames.push_back(reader.take());
    fail(kName, "FrameReader waited for bytes after EOF");
  } catch (const pccl::PcclError&) {
  }
  return frames;
}

bool same(const std::vector<pccl::Frame>& a, const std::vector<pccl::Frame>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].type != b[i].type || a[i].payload != b[i].payload) return false;
  }
  return true;
}

bool one_input(const uint8_t* data, size_t size) {
  if (size == 0) return false;
  uint32_t limit = kLimits[data[0] % (sizeof(kLimits) / sizeof(kLimits[0]))];
  const uint8_t* stream = data + 1;
  size_t n = size - 1;
  int64_t length = header_only(stream, n, limit);
  std::vector<pccl::Frame> frames = read_stream(stream, n, limit);
  // The blocking and the polling reader see the same frames.
  FUZZ_CHECK(kName, same(frames, reader_stream(stream, n, limit)));
  // The stream reader and the header decoder agree on the first frame.
  if (!frames.empty()) FUZZ_CHECK(kName, length >= 0);
  const size_t first_size = pccl::kFrameHeaderSize + static_cast<size_t>(length < 0 ? 0 : length);
  if (length >= 0 && first_size <= n && first_size <= kMaxStreamInput) {
    FUZZ_CHECK(kName, !frames.empty());
  }
  return !frames.empty();
}

Bytes framed(uint8_t limit_index, pccl::MsgType type, const Bytes& payload) {
  Bytes b{limit_index};
  uint8_t head[pccl::kFrameHeaderSize];
  pccl::encode_frame_header(head, static_cast<uint16_t>(type), static_cast<uint32_t>(payload.size()));
  b.insert(b.end(), head, head + sizeof(head));
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

std::vector<Bytes> seeds() {
  pccl::HelloMsg hello;
  hello.listen_port = 4242;
  hello.advertise_host = "127.0.0.1";
  pccl::PeerHelloMsg peer_hello{7, 3, 0};
  pccl::ServerHandshake server(pccl::Secret(), pccl::kAuthContextMaster);
  std::vector<Bytes> out = {
      framed(4, pccl::MsgType::kHello, hello.encode()),
      framed(1, pccl::MsgType::kPeerHello, peer_hello.encode()),
      framed(3, pccl::MsgType::kAuthChallenge, server.challenge()),
      framed(0, pccl::MsgType::kHeartbeat, {}),
      framed(4, pccl::MsgType::kError, pccl::ErrorMsg{"refused"}.encode()),
  };
  // Several frames in one stream.
  Bytes two = framed(4, pccl::MsgType::kVote, pccl::VoteMsg{5, {}}.encode());
  Bytes more = framed(4, pccl::MsgType::kHeartbeat, {});
  two.insert(two.end(), more.begin() + 1, more.end());
  out.push_back(two);
  return out;
}

}  // namespace

FuzzTarget frame_target() { return {kName, one_input, seeds}; }

}  // namespace pccl_fuzz
