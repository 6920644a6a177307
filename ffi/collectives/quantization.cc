// The quantization codecs' entry points (quantization.h): the table of wire
// formats, each in collectives/quant/ (one file per format, what they share
// in uint8_grid.h and float_traits.h), and the floating-point environment
// every call runs in (quant/fp_env.h).
#include "collectives/quantization.h"

#include <cstring>

#include "collectives/quant/codecs.h"
#include "collectives/quant/fp_env.h"

namespace pccl {
namespace {

struct Codec {
  size_t (*encoded_bytes)(DType dtype, size_t count);
  void (*encode)(DType dtype, const void* src, size_t n, uint8_t* dst);
  void (*decode)(DType dtype, const uint8_t* src, size_t n, void* dst);
};

size_t uint8_codes(DType dtype, size_t count) { return quant::uint8_header_bytes(dtype) + count; }
size_t two_bytes_each(DType, size_t count) { return 2 * count; }

// Indexed by Quantization; kNone never reaches it (quantization_applies).
constexpr Codec kCodecs[kNumQuantizations] = {
    {nullptr, nullptr, nullptr},
    {uint8_codes, quant::encode_minmax_uint8, quant::decode_minmax_uint8},
    {uint8_codes, quant::encode_zero_point_uint8, quant::decode_zero_point_uint8},
    {two_bytes_each, quant::encode_bfloat16, quant::decode_bfloat16},
};

const Codec& codec(Quantization q) { return kCodecs[static_cast<uint8_t>(q)]; }

}  // namespace

bool quantization_valid(uint8_t raw) { return raw < kNumQuantizations; }

const char* quantization_name(Quantization q) {
  switch (q) {
    case Quantization::kNone: return "none";
    case Quantization::kMinMaxUInt8: return "minmax_uint8";
    case Quantization::kZeroPointUInt8: return "zero_point_uint8";
    case Quantization::kBFloat16: return "bfloat16";
  }
  return "invalid";
}

bool quantization_applies(Quantization q, DType dtype) {
  if (!dtype_valid(static_cast<uint8_t>(dtype)) || !dtype_is_float(dtype)) return false;
  switch (q) {
    case Quantization::kMinMaxUInt8:
    case Quantization::kZeroPointUInt8: return true;
    case Quantization::kBFloat16: return dtype != DType::kBFloat16;
    case Quantization::kNone: return false;
  }
  return false;
}

size_t encoded_bytes(Quantization q, DType dtype, size_t count) {
  if (count == 0) return 0;
  if (!quantization_applies(q, dtype)) return count * dtype_size(dtype);
  return codec(q).encoded_bytes(dtype, count);
}

void encode_chunk(Quantization q, DType dtype, const void* src, size_t count, uint8_t* dst) {
  if (count == 0) return;
  if (!quantization_applies(q, dtype)) {
    std::memcpy(dst, src, count * dtype_size(dtype));
    return;
  }
  ScopedDefaultFpEnv env;
  codec(q).encode(dtype, src, count, dst);
}

void decode_chunk(Quantization q, DType dtype, const uint8_t* src, size_t count, void* dst) {
  if (count == 0) return;
  if (!quantization_applies(q, dtype)) {
    std::memcpy(dst, src, count * dtype_size(dtype));
    return;
  }
  ScopedDefaultFpEnv env;
  codec(q).decode(dtype, src, count, dst);
}

}  // namespace pccl
