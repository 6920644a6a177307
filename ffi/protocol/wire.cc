#include "protocol/wire.h"

#include "common/errors.h"

namespace pccl {

WireWriter& WireWriter::raw(uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) buf_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  return *this;
}

WireWriter& WireWriter::str(const std::string& s) {
  if (s.size() > kMaxWireString) throw PcclError("string too long for the wire: " + s.substr(0, 32));
  u16(static_cast<uint16_t>(s.size()));
  buf_.insert(buf_.end(), s.begin(), s.end());
  return *this;
}

uint64_t WireReader::raw(int bytes) {
  if (buf_.size() - pos_ < static_cast<size_t>(bytes)) {
    throw ProtocolViolation("truncated message");
  }
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(buf_[pos_ + i]) << (8 * i);
  pos_ += bytes;
  return v;
}

std::string WireReader::str() {
  uint16_t n = u16();
  if (n > kMaxWireString) throw ProtocolViolation("string field too long");
  if (buf_.size() - pos_ < n) throw ProtocolViolation("truncated string field");
  std::string s(reinterpret_cast<const char*>(buf_.data() + pos_), n);
  pos_ += n;
  return s;
}

void WireReader::expect_end() const {
  if (pos_ != buf_.size()) throw ProtocolViolation("unexpected trailing bytes in message");
}

}  // namespace pccl
