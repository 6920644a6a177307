// Length-prefixed, versioned frames: the unit of every control message.
//   magic u32 'PCCL' | version u16 | type u16 | payload length u32 | payload
// The length is checked against a per-connection maximum before anything is
// allocated, so a hostile length prefix costs nothing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "transport/socket.h"

namespace pccl {

constexpr uint32_t kFrameMagic = 0x4C434350u;  // bytes "PCCL" in little-endian order
// Bumped on every change to a message's layout or meaning, so that mixed
// builds fail at the first frame with a version error. v2: PEER_HELLO carries
// the concurrency slots byte; COLLECTIVE_INLINE (small all-reduce data
// attached to the header exchange) exists. v3: SYNC_REQUEST carries the
// pytree's structure digest after the strategy byte. v4: WELCOME carries the
// group's epoch. v5: PROBE_START carries the probe window. v6: the collective
// header carries root and world (all-gather, broadcast, reduce-scatter).
// v7: PROBE_RESULT carries the window's last quarter apart (tail bytes).
constexpr uint16_t kProtocolVersion = 7;
constexpr size_t kFrameHeaderSize = 12;
constexpr uint32_t kMaxControlPayload = 1u << 20;

struct FrameHeader {
  uint16_t type = 0;
  uint32_t length = 0;
};

struct Frame {
  uint16_t type = 0;
  std::vector<uint8_t> payload;
};

void encode_frame_header(uint8_t out[kFrameHeaderSize], uint16_t type, uint32_t length);
// Throws ProtocolViolation on bad magic, other version or oversized payload.
FrameHeader decode_frame_header(const uint8_t in[kFrameHeaderSize], uint32_t max_payload);

void write_frame(Socket& s, uint16_t type, const std::vector<uint8_t>& payload,
                 const Deadline& deadline, const Canceller* cancel);
Frame read_frame(Socket& s, uint32_t max_payload, const Deadline& deadline,
                 const Canceller* cancel);
// read_frame for a collective's last frames: `closing` ends the wait at
// once, but `interrupt` (the master says a member left) only once no byte
// has arrived for `grace_s`. A neighbour that sent its last frame and exited
// is announced by the master, and that notice can overtake the frame itself.
Frame read_frame_draining(Socket& s, uint32_t max_payload, const Deadline& deadline,
                          const Canceller& interrupt, const Canceller& closing, double grace_s);

// Frame reading for poll loops, which must never block on one remote: a client
// that stalls mid-frame then costs a small buffer, not the loop's time. It
// takes only the bytes of the frame in progress off the socket, never beyond
// it, so the socket can be handed on afterwards with its stream intact.
class FrameReader {
 public:
  // Reads what has arrived, without blocking. Returns true once a whole frame
  // is buffered. Throws ProtocolViolation on a bad header (decode_frame_header
  // checks it, against max_payload, before anything is allocated) and
  // PeerFailure when the remote has closed the connection or failed.
  bool read_available(Socket& s, uint32_t max_payload);
  // The completed frame; the reader then starts on the next one.
  Frame take();
  size_t buffered() const { return buf_.size(); }

 private:
  std::vector<uint8_t> buf_;
};

}  // namespace pccl
