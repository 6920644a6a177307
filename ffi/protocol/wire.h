// Bounds-checked little-endian (de)serialisation of message fields. A reader
// never reads past its buffer: a short or malformed payload throws
// ProtocolViolation instead.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pccl {

constexpr uint32_t kMaxWireString = 256;

class WireWriter {
 public:
  WireWriter& u8(uint8_t v) { buf_.push_back(v); return *this; }
  WireWriter& u16(uint16_t v) { return raw(v, 2); }
  WireWriter& u32(uint32_t v) { return raw(v, 4); }
  WireWriter& u64(uint64_t v) { return raw(v, 8); }
  WireWriter& i64(int64_t v) { return raw(static_cast<uint64_t>(v), 8); }
  WireWriter& str(const std::string& s);
  std::vector<uint8_t> take() { return std::move(buf_); }

 private:
  WireWriter& raw(uint64_t v, int bytes);
  std::vector<uint8_t> buf_;
};

class WireReader {
 public:
  explicit WireReader(const std::vector<uint8_t>& buf) : buf_(buf) {}
  uint8_t u8() { return static_cast<uint8_t>(raw(1)); }
  uint16_t u16() { return static_cast<uint16_t>(raw(2)); }
  uint32_t u32() { return static_cast<uint32_t>(raw(4)); }
  uint64_t u64() { return raw(8); }
  int64_t i64() { return static_cast<int64_t>(raw(8)); }
  std::string str();
  // Strict parsing: trailing bytes mean the sender and we disagree on the format.
  void expect_end() const;
  // For an optional trailing extension of a message: true when none follows.
  bool at_end() const { return pos_ == buf_.size(); }

 private:
  uint64_t raw(int bytes);
  const std::vector<uint8_t>& buf_;
  size_t pos_ = 0;
};

}  // namespace pccl
