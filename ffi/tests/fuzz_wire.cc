// Fuzz target "wire": WireReader (protocol/wire.h) against a reference model.
//
// Input: a count n, n operation codes (u8 u16 u32 u64 i64 str expect_end),
// then the buffer the reader works on.
// Properties: each read returns exactly the little-endian value (or string)
// at the model's position and throws ProtocolViolation exactly when the model
// says the buffer is too short, the string too long, or bytes remain at
// expect_end. The reader therefore never reads past its buffer.
#include <string>

#include "common/errors.h"
#include "protocol/wire.h"
#include "tests/fuzz_target.h"

namespace pccl_fuzz {
namespace {

constexpr const char* kName = "wire";
enum Op : uint8_t { kU8, kU16, kU32, kU64, kI64, kStr, kEnd, kOpCount };
constexpr size_t kMaxOps = 32;

// The reference: a plain cursor over the buffer.
struct Model {
  const Bytes& buf;
  size_t pos = 0;
  bool has(size_t n) const { return buf.size() - pos >= n; }
  uint64_t take(size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(buf[pos + i]) << (8 * i);
    pos += n;
    return v;
  }
};

size_t width(Op op) {
  switch (op) {
    case kU8: return 1;
    case kU16: return 2;
    case kU32: return 4;
    default: return 8;
  }
}

uint64_t read_int(pccl::WireReader& r, Op op) {
  switch (op) {
    case kU8: return r.u8();
    case kU16: return r.u16();
    case kU32: return r.u32();
    case kU64: return r.u64();
    default: return static_cast<uint64_t>(r.i64());
  }
}

// One operation on both; returns false once the reader (rightly) threw.
bool step(pccl::WireReader& r, Model& m, Op op) {
  bool model_ok;
  size_t str_len = 0;
  if (op == kEnd) {
    model_ok = m.pos == m.buf.size();
  } else if (op == kStr) {
    model_ok = m.has(2);
    if (model_ok) {
      str_len = m.take(2);
      model_ok = str_len <= pccl::kMaxWireString && m.has(str_len);
    }
  } else {
    model_ok = m.has(width(op));
  }
  try {
    if (op == kEnd) {
      r.expect_end();
    } else if (op == kStr) {
      std::string s = r.str();
      FUZZ_CHECK(kName, model_ok);
      FUZZ_CHECK(kName, s.size() == str_len);
      FUZZ_CHECK(kName, s == std::string(m.buf.begin() + m.pos, m.buf.begin() + m.pos + str_len));
      m.pos += str_len;
    } else {
      uint64_t v = read_int(r, op);
      FUZZ_CHECK(kName, model_ok);
      FUZZ_CHECK(kName, v == m.take(width(op)));
    }
  } catch (const pccl::PcclError& e) {
    FUZZ_CHECK(kName, !model_ok);
    FUZZ_CHECK(kName, e.kind() == pccl::ErrorKind::kProtocol);
    return false;
  }
  FUZZ_CHECK(kName, model_ok);
  return true;
}

bool one_input(const uint8_t* data, size_t size) {
  if (size == 0) return false;
  size_t n_ops = data[0] % (kMaxOps + 1);
  if (n_ops > size - 1) n_ops = size - 1;
  Bytes buf(data + 1 + n_ops, data + size);  // exact size: an over-read is an ASan report
  pccl::WireReader r(buf);
  Model m{buf};
  for (size_t i = 0; i < n_ops; ++i) {
    if (!step(r, m, static_cast<Op>(data[1 + i] % kOpCount))) return false;
  }
  return true;
}

Bytes program(std::initializer_list<uint8_t> ops, const Bytes& buf) {
  Bytes b(1, static_cast<uint8_t>(ops.size()));
  for (uint8_t op : ops) b.push_back(op);  // (not insert: gcc 12 warns wrongly)
  b.insert(b.end(), buf.begin(), buf.end());
  return b;
}

std::vector<Bytes> seeds() {
  Bytes mixed = pccl::WireWriter().u8(1).u16(2).u32(3).u64(4).str("host").i64(-5).take();
  Bytes longest = pccl::WireWriter().str(std::string(pccl::kMaxWireString, 'x')).take();
  return {
      program({kU8, kU16, kU32, kU64, kStr, kI64, kEnd}, mixed),
      program({kStr, kEnd}, longest),
      program({kStr, kStr, kEnd}, pccl::WireWriter().str("").str("a").take()),
      program({kU64, kEnd}, pccl::WireWriter().u64(~0ull).take()),
  };
}

}  // namespace

FuzzTarget wire_target() { return {kName, one_input, seeds}; }

}  // namespace pccl_fuzz
