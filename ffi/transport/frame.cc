#include "transport/frame.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "common/errors.h"

namespace pccl {
namespace {

void put_u16(uint8_t* p, uint16_t v) { p[0] = v & 0xff; p[1] = v >> 8; }
void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t get_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t get_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

}  // namespace

void encode_frame_header(uint8_t out[kFrameHeaderSize], uint16_t type, uint32_t length) {
  put_u32(out, kFrameMagic);
  put_u16(out + 4, kProtocolVersion);
  put_u16(out + 6, type);
  put_u32(out + 8, length);
}

FrameHeader decode_frame_header(const uint8_t in[kFrameHeaderSize], uint32_t max_payload) {
  if (get_u32(in) != kFrameMagic) throw ProtocolViolation("bad frame magic: not a jax_pccl peer");
  uint16_t version = get_u16(in + 4);
  if (version != kProtocolVersion) {
    throw ProtocolViolation("protocol version mismatch: remote speaks v" + std::to_string(version) +
                            ", this build speaks v" + std::to_string(kProtocolVersion));
  }
  FrameHeader h;
  h.type = get_u16(in + 6);
  h.length = get_u32(in + 8);
  if (h.length > max_payload) {
    throw ProtocolViolation("frame of " + std::to_string(h.length) + " bytes exceeds limit " +
                            std::to_string(max_payload));
  }
  return h;
}

void write_frame(Socket& s, uint16_t type, const std::vector<uint8_t>& payload,
                 const Deadline& deadline, const Canceller* cancel) {
  // One buffer, one send: small control frames leave in a single segment.
  std::vector<uint8_t> buf(kFrameHeaderSize + payload.size());
  encode_frame_header(buf.data(), type, static_cast<uint32_t>(payload.size()));
  if (!payload.empty()) std::memcpy(buf.data() + kFrameHeaderSize, payload.data(), payload.size());
  s.send_all(buf.data(), buf.size(), deadline, cancel);
}

Frame read_frame(Socket& s, uint32_t max_payload, const Deadline& deadline,
                 const Canceller* cancel) {
  uint8_t head[kFrameHeaderSize];
  s.recv_all(head, sizeof(head), deadline, cancel);
  FrameHeader h = decode_frame_header(head, max_payload);
  Frame f;
  f.type = h.type;
  f.payload.resize(h.length);
  if (h.length > 0) s.recv_all(f.payload.data(), h.length, deadline, cancel);
  return f;
}

Frame read_frame_draining(Socket& s, uint32_t max_payload, const Deadline& deadline,
                          const Canceller& interrupt, const Canceller& closing, double grace_s) {
  FrameReader reader;
  Deadline grace = Deadline::never();
  bool interrupted = false;
  for (;;) {
    if (closing.cancelled()) throw Cancelled("operation cancelled by close()");
    size_t before = reader.buffered();
    if (reader.read_available(s, max_payload)) return reader.take();
    bool moved = reader.buffered() != before;
    if (interrupt.cancelled() && (!interrupted || moved)) {
      interrupted = true;  // the grace starts now, and again whenever bytes come
      grace = Deadline::after(grace_s);
    }
    if (interrupted && grace.expired()) throw Cancelled("operation interrupted");
    if (deadline.expired()) throw PeerFailure("receive timed out");
    // Once heard, the interrupt stays readable: stop polling it.
    pollfd fds[3] = {{s.fd(), POLLIN, 0}, {closing.fd(), POLLIN, 0},
                     {interrupted ? -1 : interrupt.fd(), POLLIN, 0}};
    int timeout = deadline.remaining_ms(1000);
    if (interrupted) timeout = std::min(timeout, grace.remaining_ms(1000));
    if (::poll(fds, 3, timeout) < 0 && errno != EINTR) {
      throw PcclError(std::string("poll() failed: ") + std::strerror(errno));
    }
  }
}

bool FrameReader::read_available(Socket& s, uint32_t max_payload) {
  for (;;) {
    size_t want = kFrameHeaderSize;
    if (buf_.size() >= kFrameHeaderSize) want += decode_frame_header(buf_.data(), max_payload).length;
    if (buf_.size() == want) return true;
    const size_t have = buf_.size();
    buf_.resize(want);
    ssize_t n = ::recv(s.fd(), buf_.data() + have, want - have, MSG_DONTWAIT);
    buf_.resize(have + (n > 0 ? static_cast<size_t>(n) : 0));
    if (n > 0) continue;
    if (n == 0) throw PeerFailure("connection closed by the remote");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    throw PeerFailure(std::string("receive failed: ") + std::strerror(errno));
  }
}

Frame FrameReader::take() {
  if (buf_.size() < kFrameHeaderSize) throw PcclError("FrameReader::take() before a whole frame");
  Frame f;
  f.type = get_u16(buf_.data() + 6);
  f.payload.assign(buf_.begin() + kFrameHeaderSize, buf_.end());
  buf_.clear();
  return f;
}

}  // namespace pccl
