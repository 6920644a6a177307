// Conversions between float32 and the two 16-bit float formats the engine
// reduces (IEEE binary16 "float16" and bfloat16). Bit-exact, portable code:
// we cannot rely on _Float16 / F16C being available on every build host.
#pragma once
#include <cstdint>
#include <cstring>

namespace pccl {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);  // memcpy: the only UB-free bit cast in C++17
  return u;
}

inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
//
// Both conversions are straight-line code so that g++ -O3 can vectorise the
// float16 reduction loops. Each does its one float operation on every path:
// under the default -ftrapping-math g++ will not vectorise a float operation
// it has moved into a branch, and it does move one into a branch when a
// plain `c ? x : y` makes its result dead on some path; mask_select() keeps
// the result live. The conversions assume the default round-to-nearest mode
// and stay exact under flush-to-zero/denormals-are-zero (no float32
// subnormal is involved).

// c ? a : b, computed with masks so that both a and b are always evaluated.
inline uint32_t mask_select(bool c, uint32_t a, uint32_t b) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return (a & m) | (b & ~m);
}

// Every float16 value is exact in float32, so this direction never rounds.
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;  // exponent and mantissa fields
  // Normal: move the fields into place and rebias the exponent (127 - 15).
  const uint32_t normal = (em << 13) + (112u << 23);
  // Zero/subnormal (exponent field 0): read the mantissa m as the float32
  // 2^-14 * (1 + m/1024), then subtract 2^-14 exactly: m * 2^-24.
  const uint32_t tiny = f32_bits(f32_from_bits(normal + (1u << 23)) - 0x1p-14f);
  uint32_t bits = mask_select(em < 0x0400u, tiny, normal);
  // Inf/NaN: rebias once more so the exponent is all ones; NaN is forced
  // quiet, as hardware conversions do.
  bits = mask_select(em >= 0x7C00u, normal + (112u << 23), bits);
  bits = mask_select(em > 0x7C00u, bits | 0x00400000u, bits);
  return f32_from_bits(sign | bits);
}

inline uint16_t f32_to_f16(float f) {
  const uint32_t x = f32_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7FFFFFFFu;
  // Let the FPU round: for |f| in [2^e, 2^(e+1)) and M = 2^(e+13), |f| + M
  // has an ulp of 2^(e-10), so the addition rounds |f| to 11 significant
  // bits, ties to even, and the low bits of the sum count float16 ulps above
  // M. Clamping e at -14 (M = 0.5) makes the same sum round below 2^-14 to
  // the fixed 2^-24 subnormal grid; capping e at 16 (overflow, inf below)
  // keeps M finite.
  const uint32_t biased = abs >> 23;
  const uint32_t be = biased < 113u ? 113u : (biased > 143u ? 143u : biased);  // e + 127
  const float magic = f32_from_bits((be + 13u) << 23);
  const uint32_t ulps = f32_bits(f32_from_bits(abs) + magic) - f32_bits(magic);
  // ulps is in [1024, 2048] for normals (2048 carries into the exponent
  // correctly) and in [0, 1024] for subnormals (1024 = the smallest normal).
  uint32_t h = ((be - 113u) << 10) + ulps;
  // >= 65520 (halfway between max 65504 and 2^16) rounds to inf; ties go to
  // the even neighbour, which is inf since 65504 has an odd mantissa.
  h = mask_select(abs >= 0x477FF000u, 0x7C00u, h);
  // NaN: keep the top payload bits, force quiet.
  h = mask_select(abs > 0x7F800000u, 0x7E00u | ((abs >> 13) & 0x3FFu), h);
  return static_cast<uint16_t>(sign | h);
}

// bfloat16 is the top half of a float32, so widening is a shift (exact; a NaN
// stays NaN and the next arithmetic operation quiets it anyway).
inline float bf16_to_f32(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) {
    // NaN: truncation could clear every payload bit and yield inf, so force quiet.
    return static_cast<uint16_t>((x >> 16) | 0x0040u);
  }
  // Round to nearest even on the low 16 bits. Carries propagate into the
  // exponent, and past the largest finite value they give exactly inf.
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace pccl
