// Per-dtype traits of the floating codecs and the dispatch over them
// (shared by every format, collectives/quant/*.cc).
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "common/dtype.h"
#include "common/half.h"

static_assert(std::numeric_limits<float>::is_iec559 && std::numeric_limits<double>::is_iec559,
              "the codecs need IEEE 754 binary32/binary64");
static_assert(FLT_EVAL_METHOD == 0, "excess precision (x87) would make vector and scalar code differ");
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire format is little-endian");

namespace pccl::quant {

// ---------------------------------------------------------------------------
// Per-dtype traits. S: storage, C: compute type of the hot loops, H: metadata;
// Bits/Key: the storage as unsigned bits and as a signed order key.
// kScaleBits / kScaleEmin define zero_point's scale set (see zp_params).

struct F32T {
  using S = float;
  using C = float;
  using H = float;
  using Bits = uint32_t;
  using Key = int32_t;
  static constexpr Bits kExpMask = 0x7F800000u;
  static constexpr int kScaleBits = 16;  // 8-bit code * 16-bit scale fits 24 bits
  static constexpr int kScaleEmin = -149;
  static constexpr double kMax = FLT_MAX;
  static C widen(S v) { return v; }
  static S narrow(double d) { return static_cast<float>(d); }  // |d| <= kMax, inf or NaN
  static S nan() { return f32_from_bits(0x7FC00000u); }
};

struct F64T {
  using S = double;
  using C = double;
  using H = double;
  using Bits = uint64_t;
  using Key = int64_t;
  static constexpr Bits kExpMask = 0x7FF0000000000000ull;
  static constexpr int kScaleBits = 43;  // code * scale exact, and 9-bit checks in zp_params
  static constexpr int kScaleEmin = -1074;
  static constexpr double kMax = DBL_MAX;
  static C widen(S v) { return v; }
  static S narrow(double d) { return d; }
  static S nan() {
    double d;
    const uint64_t bits = 0x7FF8000000000000ull;
    std::memcpy(&d, &bits, sizeof d);
    return d;
  }
};

struct F16T {
  using S = uint16_t;
  using C = float;
  using H = float;
  using Bits = uint16_t;
  using Key = int16_t;
  static constexpr Bits kExpMask = 0x7C00u;
  static constexpr int kScaleBits = 3;  // 255 * 7 < 2^11
  static constexpr int kScaleEmin = -24;
  static constexpr double kMax = 65504.0;
  static C widen(S v) { return f16_to_f32(v); }
  static S narrow(double d) { return f32_to_f16(static_cast<float>(d)); }
  static S nan() { return 0x7E00u; }
};

struct BF16T {
  using S = uint16_t;
  using C = float;
  using H = float;
  using Bits = uint16_t;
  using Key = int16_t;
  static constexpr Bits kExpMask = 0x7F80u;
  static constexpr int kScaleBits = 1;  // powers of two: 8-bit code * 2^e fits 8 bits
  static constexpr int kScaleEmin = -133;
  static constexpr double kMax = 0x1.FEp127;  // largest finite bfloat16
  static C widen(S v) { return bf16_to_f32(v); }
  static S narrow(double d) { return f32_to_bf16(static_cast<float>(d)); }
  static S nan() { return 0x7FC0u; }
};

template <typename H>
void store(uint8_t* p, H v) {
  std::memcpy(p, &v, sizeof v);
}

template <typename H>
H load(const uint8_t* p) {
  H v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename H>
H canonical_nan() {
  if constexpr (sizeof(H) == 4) return f32_from_bits(0x7FC00000u);
  else return F64T::nan();
}

// double -> C without the undefined behaviour of an out-of-range conversion.
template <typename C>
C to_compute(double d) {
  if constexpr (sizeof(C) == 4) {
    d = d > FLT_MAX ? FLT_MAX : d;
    d = d < -FLT_MAX ? -FLT_MAX : d;
  }
  return static_cast<C>(d);
}

template <typename Tr>
constexpr double max_compute() {
  return sizeof(typename Tr::C) == 4 ? FLT_MAX : DBL_MAX;
}

// Runs Fn<traits of dtype>::run(args...) for the four floating dtypes.
template <template <typename> class Fn, typename... Args>
void by_dtype(DType dtype, Args... args) {
  switch (dtype) {
    case DType::kFloat32: return Fn<F32T>::run(args...);
    case DType::kFloat64: return Fn<F64T>::run(args...);
    case DType::kFloat16: return Fn<F16T>::run(args...);
    case DType::kBFloat16: return Fn<BF16T>::run(args...);
    default: return;
  }
}

}  // namespace pccl::quant
