// bfloat16: each element rounded to bfloat16 (to nearest even, once).
#include "collectives/quant/codecs.h"
#include "collectives/quant/float_traits.h"

namespace pccl::quant {
namespace {

// ---------------------------------------------------------------------------
// bfloat16

// float32 bits -> bfloat16, round to nearest even, NaN -> canonical 0x7FC0.
inline uint16_t bf16_from_bits(uint32_t x) {
  const uint32_t r = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;  // wraps only for NaN
  return static_cast<uint16_t>(mask_select((x & 0x7FFFFFFFu) > 0x7F800000u, 0x7FC0u, r));
}

// float64 -> bfloat16 with a single correct rounding: round to float32 with
// round-to-odd (float32 has >= 2 more bits than bfloat16 at every magnitude,
// subnormals included), then to nearest even. Round-to-odd = the RNE result,
// moved one ulp toward d when it is inexact and its last bit is even.
inline uint16_t bf16_from_f64(double d) {
  double c = d > FLT_MAX ? FLT_MAX : d;  // no out-of-range conversion (UB);
  c = c < -FLT_MAX ? -FLT_MAX : c;       // FLT_MAX's last bit is odd anyway
  const float f = static_cast<float>(c);
  const double back = f;
  uint32_t b = f32_bits(f);
  const bool adjust = back != d && d == d && (b & 1u) == 0;
  const bool away = std::fabs(d) > std::fabs(back);
  b = mask_select(adjust, away ? b + 1 : b - 1, b);
  return bf16_from_bits(b);
}

void encode_bf16_from_f32(const float* __restrict__ x, size_t n, uint8_t* __restrict__ out) {
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = bf16_from_bits(f32_bits(x[i]));
    std::memcpy(out + 2 * i, &h, 2);
  }
}

void encode_bf16_from_f64(const double* __restrict__ x, size_t n, uint8_t* __restrict__ out) {
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = bf16_from_f64(x[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

void encode_bf16_from_f16(const uint16_t* __restrict__ x, size_t n, uint8_t* __restrict__ out) {
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = bf16_from_bits(f32_bits(f16_to_f32(x[i])));  // exact, then one rounding
    std::memcpy(out + 2 * i, &h, 2);
  }
}

void decode_bf16_to_f32(const uint8_t* __restrict__ in, size_t n, float* __restrict__ out) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    out[i] = bf16_to_f32(h);
  }
}

void decode_bf16_to_f64(const uint8_t* __restrict__ in, size_t n, double* __restrict__ out) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    const uint32_t x = static_cast<uint32_t>(h) << 16;
    // NaN: canonical, not whatever the float -> double conversion makes of a payload.
    const uint32_t y = mask_select((x & 0x7FFFFFFFu) > 0x7F800000u, 0x7FC00000u, x);
    out[i] = static_cast<double>(f32_from_bits(y));
  }
}

// Finite values beyond float16's range saturate at +-65504 (see the header).
void decode_bf16_to_f16(const uint8_t* __restrict__ in, size_t n, uint16_t* __restrict__ out) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    const uint32_t x = static_cast<uint32_t>(h) << 16;
    const uint32_t a = x & 0x7FFFFFFFu;
    uint32_t r = f32_to_f16(f32_from_bits(x));
    r = mask_select(a > 0x477FE000u && a < 0x7F800000u, ((x >> 16) & 0x8000u) | 0x7BFFu, r);
    r = mask_select(a > 0x7F800000u, 0x7E00u, r);
    out[i] = static_cast<uint16_t>(r);
  }
}

}  // namespace

void encode_bfloat16(DType dtype, const void* src, size_t n, uint8_t* dst) {
  switch (dtype) {
    case DType::kFloat32: return encode_bf16_from_f32(static_cast<const float*>(src), n, dst);
    case DType::kFloat64: return encode_bf16_from_f64(static_cast<const double*>(src), n, dst);
    case DType::kFloat16: return encode_bf16_from_f16(static_cast<const uint16_t*>(src), n, dst);
    default: return;
  }
}

void decode_bfloat16(DType dtype, const uint8_t* src, size_t n, void* dst) {
  switch (dtype) {
    case DType::kFloat32: return decode_bf16_to_f32(src, n, static_cast<float*>(dst));
    case DType::kFloat64: return decode_bf16_to_f64(src, n, static_cast<double*>(dst));
    case DType::kFloat16: return decode_bf16_to_f16(src, n, static_cast<uint16_t*>(dst));
    default: return;
  }
}

}  // namespace pccl::quant
