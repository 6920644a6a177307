// Quantization codecs; formats and guarantees are documented in quantization.h.
//
// How the uint8 formats stay deterministic and stable
// ---------------------------------------------------
// Both uint8 formats are a 256-entry grid of input-dtype values, D[code],
// that depends only on the chunk's metadata. Decoding is a table lookup,
// out[i] = D[code[i]], so it is exactly as deterministic as building D.
//
// encode(decode(encode(x))) == encode(x) needs two things:
//  1. The metadata recomputed from the decoded chunk equals the original.
//     minmax: code 0 decodes to exactly min and 255 to exactly max, and every
//     D[code] lies in [min, max], so the decoded chunk has the same min and max.
//     zero_point: see zp_params() below (discrete scales + outward rounding of
//     the chunk's extremes).
//  2. With the same metadata, each decoded value D[e] re-encodes to e.
//     Several codes may decode to the same value (when the range spans few
//     representable values); the encoder then emits the smallest code of each
//     such class ("canonical" code, canon[] below). The fast, vectorised
//     quantiser is an arithmetic formula; before using it on a chunk, the
//     encoder runs it on all 256 grid values and checks that each canonical e
//     maps back to e. If that fails (rare: degenerate ranges), the chunk is
//     quantised by an exact nearest-grid-value search instead, which maps
//     every grid value to itself by construction. The re-encode of a decoded
//     chunk gets the same metadata, hence the same grid and the same choice.
//
// Cross-machine determinism: every result is a fixed sequence of correctly
// rounded IEEE operations. No expression has the form a*b+c with an inexact
// product, so a compiler that fuses multiply-adds (g++ -ffp-contract=fast with
// FMA available, the default on aarch64) computes the same values; the one
// exception (the quartered-range path) is argued at quantise(). The FP
// environment is forced to the default for the duration of each call.
#include "collectives/quantization.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/half.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define PCCL_QUANT_X86 1
#elif defined(__aarch64__)
#define PCCL_QUANT_ARM64 1
#else
#include <cfenv>
#endif

static_assert(std::numeric_limits<float>::is_iec559 && std::numeric_limits<double>::is_iec559,
              "the codecs need IEEE 754 binary32/binary64");
static_assert(FLT_EVAL_METHOD == 0, "excess precision (x87) would make vector and scalar code differ");
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire format is little-endian");

namespace pccl {
namespace {

// ---------------------------------------------------------------------------
// Floating-point environment: round to nearest, no FTZ/DAZ, traps masked.
// XLA's CPU threads run with FTZ/DAZ on, for instance; subnormal-scale chunks
// would then decode differently on a peer whose thread has them off.

class ScopedDefaultFpEnv {
 public:
#if PCCL_QUANT_X86
  ScopedDefaultFpEnv() : saved_(_mm_getcsr()) {
    // Clear FTZ (bit 15), rounding control (14:13) and DAZ (bit 6); set the
    // six exception masks (12:7).
    const unsigned want = (saved_ & ~0xE040u) | 0x1F80u;
    changed_ = want != saved_;
    if (changed_) _mm_setcsr(want);
  }
  ~ScopedDefaultFpEnv() {
    if (changed_) _mm_setcsr(saved_);
  }

 private:
  unsigned saved_;
  bool changed_;
#elif PCCL_QUANT_ARM64
  ScopedDefaultFpEnv() {
    uint64_t v;
    asm volatile("mrs %0, fpcr" : "=r"(v) : : "memory");
    saved_ = v;
    // Clear FZ (24), RMode (23:22), FZ16 (19), the trap enables (15, 12:8)
    // and FEAT_AFP's AH/FIZ (1:0; RES0 where not implemented).
    const uint64_t want = v & ~((1ull << 24) | (3ull << 22) | (1ull << 19) | (1ull << 15) |
                                (0x1Full << 8) | 3ull);
    changed_ = want != saved_;
    if (changed_) asm volatile("msr fpcr, %0" : : "r"(want) : "memory");
  }
  ~ScopedDefaultFpEnv() {
    if (changed_) asm volatile("msr fpcr, %0" : : "r"(saved_) : "memory");
  }

 private:
  uint64_t saved_;
  bool changed_;
#else
  ScopedDefaultFpEnv() {
    std::feholdexcept(&saved_);  // saves, clears flags, non-stop mode
    std::fesetround(FE_TONEAREST);
  }
  ~ScopedDefaultFpEnv() { std::fesetenv(&saved_); }

 private:
  std::fenv_t saved_;
#endif
};

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

// ---------------------------------------------------------------------------
// Chunk extremes, on integer keys: flipping the magnitude bits of negative
// values makes the signed-integer order of the bit patterns that of the
// values (-0 just below +0), and integer min/max reductions vectorise where
// float ones (NaN and signed-zero semantics) do not without -ffast-math.
// Non-finite values (all-ones exponent) are detected separately.

template <typename U, typename K>
inline K order_key(U b) {
  constexpr int kTop = sizeof(U) * 8 - 1;
  const U negative_mask = static_cast<U>(U{0} - static_cast<U>(b >> kTop));
  return static_cast<K>(static_cast<U>(b ^ static_cast<U>(negative_mask >> 1)));
}

template <typename Tr>
struct Extremes {
  typename Tr::C lo, hi;
  bool finite;
};

template <typename Tr>
Extremes<Tr> scan(const typename Tr::S* __restrict__ x, size_t n) {
  using S = typename Tr::S;
  using U = typename Tr::Bits;
  using K = typename Tr::Key;
  static_assert(sizeof(S) == sizeof(U) && sizeof(U) == sizeof(K), "key types");
  K lo = std::numeric_limits<K>::max(), hi = std::numeric_limits<K>::min();
  U bad = 0;
  for (size_t i = 0; i < n; ++i) {
    U b;
    std::memcpy(&b, x + i, sizeof b);
    const K k = order_key<U, K>(b);
    lo = k < lo ? k : lo;
    hi = k > hi ? k : hi;
    bad |= static_cast<U>((b & Tr::kExpMask) == Tr::kExpMask);
  }
  // The key map is an involution on the bit pattern.
  const U blo = static_cast<U>(order_key<U, K>(static_cast<U>(lo)));
  const U bhi = static_cast<U>(order_key<U, K>(static_cast<U>(hi)));
  S slo, shi;
  std::memcpy(&slo, &blo, sizeof slo);
  std::memcpy(&shi, &bhi, sizeof shi);
  // + 0 turns -0 into +0, so the metadata never depends on which zero it met.
  using C = typename Tr::C;
  return {Tr::widen(slo) + C(0), Tr::widen(shi) + C(0), bad == 0};
}

// ---------------------------------------------------------------------------
// The grid and the quantiser.

template <typename Tr>
struct Grid {
  using S = typename Tr::S;
  using C = typename Tr::C;
  S table[256];           // D[code], in the input dtype
  uint8_t canon[256];     // smallest code decoding to the same value
  bool canon_identity;
  int qlo, qhi;           // codes the encoder may emit
  C vmin, vmax;           // the chunk's extremes ...
  int qmin, qmax;         // ... always get these codes
  bool quarter;           // quantiser works on v/4 (ranges near the overflow limit)
  C base, half, inv;      // code = trunc(((v or v/4) - base + half) * inv), clamped
};

template <typename Tr>
void build_canon(Grid<Tr>& g) {
  g.canon_identity = true;
  for (int q = 0; q < 256; ++q) g.canon[q] = static_cast<uint8_t>(q);
  for (int q = g.qlo + 1; q <= g.qhi; ++q) {
    if (Tr::widen(g.table[q]) == Tr::widen(g.table[q - 1])) {
      g.canon[q] = g.canon[q - 1];
      g.canon_identity = false;
    }
  }
}

template <typename C>
struct QParams {
  C base, half, inv, lo, hi, vmin, vmax, fmin, fmax;
};

// The quantiser for one element, as a float in [qlo, qhi] holding an integer
// after truncation. ((v - base) + half) * inv rounds half up without an a*b+c
// (which a compiler could fuse). The clamps have the operand order of SSE
// max/min (NaN goes to lo). kQuarter: for ranges near the overflow limit it
// works on v/4, so that no intermediate (up to 255.5 steps) overflows. Then
// v * 0.25 - base may be fused, but it is only used when the step is >= 2^118
// or so, and the two results can differ only for subnormal v, which the
// following "+ half" absorbs either way.
// kForce: the chunk's extremes get fixed codes (zero_point's outward rounding;
// minmax needs none, its extremes are grid values D[0] and D[255]).
template <typename C, bool kQuarter, bool kForce>
inline C quantise(C v, const QParams<C>& p) {
  const C x = kQuarter ? v * C(0.25) : v;
  C t = ((x - p.base) + p.half) * p.inv;
  t = t > p.lo ? t : p.lo;
  t = t < p.hi ? t : p.hi;
  if (kForce) {
    t = v == p.vmin ? p.fmin : t;
    t = v == p.vmax ? p.fmax : t;
  }
  return t;
}

template <typename Tr, bool kQuarter, bool kForce>
void quantise_fast(const typename Tr::S* __restrict__ x, size_t n, uint8_t* __restrict__ out,
                   const QParams<typename Tr::C> p) {
  using C = typename Tr::C;
  for (size_t i = 0; i < n; ++i) {
    const C t = quantise<C, kQuarter, kForce>(Tr::widen(x[i]), p);
    out[i] = static_cast<uint8_t>(static_cast<int32_t>(t));
  }
}

// Every canonical grid value must quantise back to its own code (with the
// same forcing the hot loop applies).
template <typename Tr, bool kQuarter, bool kForce>
bool fast_path_is_stable(const Grid<Tr>& g, const QParams<typename Tr::C>& p) {
  for (int e = g.qlo; e <= g.qhi; ++e) {
    if (g.canon[e] != e) continue;
    const auto t = quantise<typename Tr::C, kQuarter, kForce>(Tr::widen(g.table[e]), p);
    if (g.canon[static_cast<int>(t)] != e) return false;
  }
  return true;
}

// Exact fallback: nearest distinct grid value (ties up), canonical code.
// Differences of two float32 values are exact in double; for float64 they
// may round, but a grid value's distance to itself is 0, which is all the
// stability argument needs.
template <typename Tr>
void quantise_slow(const typename Tr::S* __restrict__ x, size_t n, uint8_t* __restrict__ out,
                   const Grid<Tr>& g) {
  using C = typename Tr::C;
  double vals[256];
  uint8_t codes[256];
  int m = 0;
  for (int q = g.qlo; q <= g.qhi; ++q) {
    if (g.canon[q] != q) continue;
    vals[m] = static_cast<double>(Tr::widen(g.table[q]));
    codes[m++] = static_cast<uint8_t>(q);
  }
  const uint8_t cmin = g.canon[g.qmin], cmax = g.canon[g.qmax];
  for (size_t i = 0; i < n; ++i) {
    const C v = Tr::widen(x[i]);
    uint8_t code;
    if (v == g.vmax) {
      code = cmax;
    } else if (v == g.vmin) {
      code = cmin;
    } else {
      const double d = static_cast<double>(v);
      int lo = 0, hi = m - 1;  // largest j with vals[j] <= d (0 if none)
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (vals[mid] <= d) lo = mid;
        else hi = mid - 1;
      }
      if (lo + 1 < m && d - vals[lo] >= vals[lo + 1] - d) ++lo;
      code = codes[lo];
    }
    out[i] = code;
  }
}

template <typename Tr, bool kQuarter, bool kForce>
bool quantise_with(const typename Tr::S* x, size_t n, uint8_t* out, const Grid<Tr>& g,
                   const QParams<typename Tr::C>& p) {
  if (!fast_path_is_stable<Tr, kQuarter, kForce>(g, p)) return false;
  quantise_fast<Tr, kQuarter, kForce>(x, n, out, p);
  return true;
}

// force: whether the chunk's extremes get fixed codes (zero_point only).
template <typename Tr>
void quantise(const typename Tr::S* x, size_t n, uint8_t* out, const Grid<Tr>& g, bool force) {
  using C = typename Tr::C;
  const QParams<C> p{g.base,  g.half,  g.inv, static_cast<C>(g.qlo), static_cast<C>(g.qhi),
                     g.vmin,  g.vmax,  static_cast<C>(g.qmin), static_cast<C>(g.qmax)};
  bool fast;
  if (force) {
    fast = g.quarter ? quantise_with<Tr, true, true>(x, n, out, g, p)
                     : quantise_with<Tr, false, true>(x, n, out, g, p);
  } else {
    fast = g.quarter ? quantise_with<Tr, true, false>(x, n, out, g, p)
                     : quantise_with<Tr, false, false>(x, n, out, g, p);
  }
  if (!fast) return quantise_slow<Tr>(x, n, out, g);
  if (!g.canon_identity) {
    uint8_t canon[256];
    std::memcpy(canon, g.canon, sizeof canon);
    for (size_t i = 0; i < n; ++i) out[i] = canon[out[i]];
  }
}

template <typename S>
void lookup(const uint8_t* __restrict__ codes, size_t n, const S* __restrict__ table,
            S* __restrict__ out) {
  for (size_t i = 0; i < n; ++i) out[i] = table[codes[i]];
}

template <typename Tr>
void fill_nan(typename Tr::S* table) {
  for (int q = 0; q < 256; ++q) table[q] = Tr::nan();
}

// ---------------------------------------------------------------------------
// minmax_uint8

// D[q] = min + (max - min) * q / 255 in double, rounded to the dtype and
// clamped to [min, max]; D[0] = min, D[255] = max exactly. Monotone in q.
// (max - min) * q must not overflow: float64 ranges above DBL_MAX/512 are
// computed on values scaled by 2^-9 and scaled back (exact, and no a*b+c).
template <typename Tr>
void minmax_table(typename Tr::H hmin, typename Tr::H hmax, typename Tr::S* table) {
  if (hmin != hmin || hmax != hmax) return fill_nan<Tr>(table);
  const double lo = hmin, hi = hmax;
  const bool big = !(std::fabs(hi - lo) <= DBL_MAX / 512);  // float64 input only
  const double k = big ? 0x1p-9 : 1.0;
  const double slo = lo * k, shi = hi * k, range = shi - slo;
  for (int q = 1; q < 255; ++q) {
    double v = slo + (range * q) / 255;
    v = v > shi ? shi : v;
    v = v < slo ? slo : v;
    v = big ? v * 0x1p9 : v;
    v = v > hi ? hi : v;
    v = v < lo ? lo : v;
    table[q] = Tr::narrow(v);
  }
  table[0] = Tr::narrow(lo);
  table[255] = Tr::narrow(hi);
}

template <typename Tr>
void encode_minmax(const void* src, size_t n, uint8_t* dst) {
  using C = typename Tr::C;
  using H = typename Tr::H;
  const auto* x = static_cast<const typename Tr::S*>(src);
  uint8_t* codes = dst + 2 * sizeof(H);
  const Extremes<Tr> r = scan<Tr>(x, n);
  if (!r.finite) {
    store(dst, canonical_nan<H>());
    store(dst + sizeof(H), canonical_nan<H>());
    std::memset(codes, 0, n);
    return;
  }
  store(dst, static_cast<H>(r.lo));
  store(dst + sizeof(H), static_cast<H>(r.hi));
  if (r.lo == r.hi) {
    std::memset(codes, 0, n);
    return;
  }
  Grid<Tr> g;
  minmax_table<Tr>(static_cast<H>(r.lo), static_cast<H>(r.hi), g.table);
  g.qlo = g.qmin = 0;
  g.qhi = g.qmax = 255;
  g.vmin = r.lo;
  g.vmax = r.hi;
  build_canon(g);
  const double lo = r.lo, hi = r.hi;
  const double range = hi - lo;
  g.quarter = !(range <= max_compute<Tr>() / 2);
  if (!g.quarter) {
    g.base = r.lo;
    g.half = to_compute<C>(range / 510);
    g.inv = to_compute<C>(255 / range);
  } else {
    const double r4 = hi * 0.25 - lo * 0.25;
    g.base = to_compute<C>(lo * 0.25);
    g.half = to_compute<C>(r4 / 510);
    g.inv = to_compute<C>(255 / r4);
  }
  quantise<Tr>(x, n, codes, g, /*force=*/false);
}

template <typename Tr>
void decode_minmax(const uint8_t* src, size_t n, void* dst) {
  using H = typename Tr::H;
  typename Tr::S table[256];
  minmax_table<Tr>(load<H>(src), load<H>(src + sizeof(H)), table);
  lookup(src + 2 * sizeof(H), n, table, static_cast<typename Tr::S*>(dst));
}

// ---------------------------------------------------------------------------
// zero_point_uint8
//
// Why re-encoding reproduces (scale, zp). Let lo = min(x, 0), hi = max(x, 0).
// A scale s is feasible when the grid {k*s} covers [lo, hi] with 256 codes:
// ceil(hi/s) - floor(lo/s) <= 255; feasibility is monotone in s. The encoder
// takes the smallest feasible s in a discrete set S (numbers with at most
// kScaleBits significant bits, multiples of 2^kScaleEmin) and zp = -floor(lo/s).
// The chunk's minimum is rounded DOWN and its maximum UP to the grid, others to
// nearest. So the decoded chunk's [lo', hi'] contains [lo, hi] and its ends
// lie on the same grid: s is feasible for it, and any smaller feasible scale
// would have been feasible for [lo, hi], so s is chosen again, and
// zp = -floor(lo'/s) = -floor(lo/s). The kScaleBits limit makes every grid
// value k*s (|k| <= 255) exact in the input dtype, and k*s (|k| <= 301) exact
// in double, so floor/ceil below are computed exactly. Grid values beyond the
// dtype's range are clamped to its largest finite value; the argument still
// holds since floor/ceil of the clamped value are those of the true extreme.

struct ZpParams {
  double scale;
  int zp, qmin, qmax;
};

struct ScaleSet {
  int bits, emin;
  double smallest() const { return std::ldexp(1.0, emin); }
  double spacing(double s) const {  // distance to the next member above s
    int e;
    std::frexp(s, &e);
    return std::ldexp(1.0, e - bits > emin ? e - bits : emin);
  }
  double round_up(double x) const {  // smallest member >= x
    if (!(x > smallest())) return smallest();
    const double u = spacing(x);
    return std::ceil(x / u) * u;
  }
  double next(double s) const { return s + spacing(s); }
  double prev(double s) const {  // 0 if none
    if (s <= smallest()) return 0;
    int e;
    const double f = std::frexp(s, &e);
    const int below = f == 0.5 ? e - 1 - bits : e - bits;  // a power of two: finer below
    return s - std::ldexp(1.0, below > emin ? below : emin);
  }
};

// floor(x / s), exactly, for |x / s| <= ~301: the rounded quotient is off by
// at most one, and the products k*s that correct it are exact. Scales near
// the overflow limit are scaled down first (k*s could overflow); a tiny x then
// keeps its sign, which is all that matters for its floor.
long floor_div(double x, double s) {
  if (s > 0x1p1000) {
    s *= 0x1p-64;
    const double y = x * 0x1p-64;
    x = (x != 0 && std::fabs(y) < 0x1p-1000) ? std::copysign(0x1p-1000, x) : y;
  }
  long k = static_cast<long>(std::floor(x / s));
  while (static_cast<double>(k) * s > x) --k;
  while (static_cast<double>(k + 1) * s <= x) ++k;
  return k;
}

long ceil_div(double x, double s) { return -floor_div(-x, s); }

bool zp_feasible(double lo, double hi, double s) {
  if (!(s > 0 && s <= DBL_MAX)) return false;
  const double ql = lo / s, qh = hi / s;
  if (!(ql >= -300 && qh <= 300)) return false;
  return ceil_div(hi, s) - floor_div(lo, s) <= 255;
}

template <typename Tr>
ZpParams zp_params(double vmin, double vmax) {
  using H = typename Tr::H;
  if (vmin == vmax) {
    // Constant chunk: decode it exactly, as code 128 (or 1) times a scale.
    if (vmin == 0) return {std::ldexp(1.0, Tr::kScaleEmin), 0, 0, 0};
    const double c = std::fabs(vmin);
    double s = c / 128;
    int k = 128;
    if (static_cast<double>(static_cast<H>(s)) * 128 != c) {
      s = c;
      k = 1;
    }
    if (vmin > 0) return {s, 0, k, k};
    return {s, k, 0, 0};
  }
  const double lo = vmin < 0 ? vmin : 0, hi = vmax > 0 ? vmax : 0;
  const double a = -lo, b = hi;  // >= 0, not both 0
  const ScaleSet set{Tr::kScaleBits, Tr::kScaleEmin};
  // Estimate: the smallest real scale is min over zp of max(a/zp, b/(255-zp)),
  // reached next to zp = 255 a / (a + b). Halves if a + b overflows.
  const double sum = a + b;
  double zstar = 255 * (sum <= DBL_MAX ? a / sum : (a * 0.5) / (a * 0.5 + b * 0.5));
  zstar = zstar >= 0 ? zstar : 0;  // (cannot be NaN; belt and braces before the cast)
  zstar = zstar <= 255 ? zstar : 255;
  const int z0 = static_cast<int>(std::floor(zstar));
  double s0 = DBL_MAX;
  for (int zp = z0 - 1; zp <= z0 + 2; ++zp) {
    if (zp < 0 || zp > 255 || (a > 0 && zp == 0) || (b > 0 && zp == 255)) continue;
    const double c1 = a > 0 ? a / zp : 0, c2 = b > 0 ? b / (255 - zp) : 0;
    const double c = c1 > c2 ? c1 : c2;
    s0 = c < s0 ? c : s0;
  }
  double s = set.round_up(s0);
  for (int it = 0; it < 64 && !zp_feasible(lo, hi, s); ++it) s = set.next(s);
  for (int it = 0; it < 64; ++it) {
    const double p = set.prev(s);
    if (!(p > 0) || !zp_feasible(lo, hi, p)) break;
    s = p;
  }
  if (!zp_feasible(lo, hi, s)) s = set.round_up(a / 253 + b / 253);  // never expected
  const int zp = static_cast<int>(-floor_div(lo, s));
  return {s, zp, static_cast<int>(floor_div(vmin, s)) + zp,
          static_cast<int>(ceil_div(vmax, s)) + zp};
}

// D[q] = (q - zp) * scale: exact, clamped to the dtype's finite range.
template <typename Tr>
void zp_table(typename Tr::H hscale, int zp, typename Tr::S* table) {
  if (hscale != hscale) return fill_nan<Tr>(table);
  const double s = hscale;
  for (int q = 0; q < 256; ++q) {
    double v = static_cast<double>(q - zp) * s;
    v = v > Tr::kMax ? Tr::kMax : v;
    v = v < -Tr::kMax ? -Tr::kMax : v;
    table[q] = Tr::narrow(v);
  }
}

template <typename Tr>
void encode_zp(const void* src, size_t n, uint8_t* dst) {
  using C = typename Tr::C;
  using H = typename Tr::H;
  const auto* x = static_cast<const typename Tr::S*>(src);
  uint8_t* codes = dst + 2 * sizeof(H);
  std::memset(dst, 0, 2 * sizeof(H));
  const Extremes<Tr> r = scan<Tr>(x, n);
  if (!r.finite) {
    store(dst, canonical_nan<H>());
    std::memset(codes, 0, n);
    return;
  }
  const ZpParams z = zp_params<Tr>(r.lo, r.hi);
  store(dst, static_cast<H>(z.scale));
  dst[sizeof(H)] = static_cast<uint8_t>(z.zp);
  if (z.qmin == z.qmax) {  // constant chunk
    std::memset(codes, z.qmin, n);
    return;
  }
  Grid<Tr> g;
  zp_table<Tr>(static_cast<H>(z.scale), z.zp, g.table);
  g.qlo = g.qmin = z.qmin;
  g.qhi = g.qmax = z.qmax;
  g.vmin = r.lo;
  g.vmax = r.hi;
  build_canon(g);
  const double s = z.scale;
  g.quarter = !(255 * s <= max_compute<Tr>() / 2);
  if (!g.quarter) {
    g.base = to_compute<C>(-z.zp * s);
    g.half = to_compute<C>(s * 0.5);
    g.inv = to_compute<C>(1 / s);
  } else {
    g.base = to_compute<C>(-(z.zp * (s * 0.25)));
    g.half = to_compute<C>(s * 0.125);
    g.inv = to_compute<C>(4 / s);
  }
  quantise<Tr>(x, n, codes, g, /*force=*/true);
}

template <typename Tr>
void decode_zp(const uint8_t* src, size_t n, void* dst) {
  using H = typename Tr::H;
  typename Tr::S table[256];
  zp_table<Tr>(load<H>(src), src[sizeof(H)], table);
  lookup(src + 2 * sizeof(H), n, table, static_cast<typename Tr::S*>(dst));
}

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

// ---------------------------------------------------------------------------
// Dispatch. The work runs in noinline functions, so that no floating-point
// operation can be scheduled outside the ScopedDefaultFpEnv of the caller.

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

template <typename Tr>
struct EncodeMinMax {
  static void run(const void* s, size_t n, uint8_t* d) { encode_minmax<Tr>(s, n, d); }
};
template <typename Tr>
struct DecodeMinMax {
  static void run(const uint8_t* s, size_t n, void* d) { decode_minmax<Tr>(s, n, d); }
};
template <typename Tr>
struct EncodeZp {
  static void run(const void* s, size_t n, uint8_t* d) { encode_zp<Tr>(s, n, d); }
};
template <typename Tr>
struct DecodeZp {
  static void run(const uint8_t* s, size_t n, void* d) { decode_zp<Tr>(s, n, d); }
};

__attribute__((noinline)) void encode_work(Quantization q, DType dtype, const void* src,
                                           size_t n, uint8_t* dst) {
  switch (q) {
    case Quantization::kMinMaxUInt8: return by_dtype<EncodeMinMax>(dtype, src, n, dst);
    case Quantization::kZeroPointUInt8: return by_dtype<EncodeZp>(dtype, src, n, dst);
    case Quantization::kBFloat16:
      switch (dtype) {
        case DType::kFloat32: return encode_bf16_from_f32(static_cast<const float*>(src), n, dst);
        case DType::kFloat64: return encode_bf16_from_f64(static_cast<const double*>(src), n, dst);
        case DType::kFloat16: return encode_bf16_from_f16(static_cast<const uint16_t*>(src), n, dst);
        default: return;
      }
    case Quantization::kNone: return;
  }
}

__attribute__((noinline)) void decode_work(Quantization q, DType dtype, const uint8_t* src,
                                           size_t n, void* dst) {
  switch (q) {
    case Quantization::kMinMaxUInt8: return by_dtype<DecodeMinMax>(dtype, src, n, dst);
    case Quantization::kZeroPointUInt8: return by_dtype<DecodeZp>(dtype, src, n, dst);
    case Quantization::kBFloat16:
      switch (dtype) {
        case DType::kFloat32: return decode_bf16_to_f32(src, n, static_cast<float*>(dst));
        case DType::kFloat64: return decode_bf16_to_f64(src, n, static_cast<double*>(dst));
        case DType::kFloat16: return decode_bf16_to_f16(src, n, static_cast<uint16_t*>(dst));
        default: return;
      }
    case Quantization::kNone: return;
  }
}

size_t header_bytes(DType dtype) { return dtype == DType::kFloat64 ? 16 : 8; }

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
  if (q == Quantization::kBFloat16) return 2 * count;
  return header_bytes(dtype) + count;
}

void encode_chunk(Quantization q, DType dtype, const void* src, size_t count, uint8_t* dst) {
  if (count == 0) return;
  if (!quantization_applies(q, dtype)) {
    std::memcpy(dst, src, count * dtype_size(dtype));
    return;
  }
  ScopedDefaultFpEnv env;
  encode_work(q, dtype, src, count, dst);
}

void decode_chunk(Quantization q, DType dtype, const uint8_t* src, size_t count, void* dst) {
  if (count == 0) return;
  if (!quantization_applies(q, dtype)) {
    std::memcpy(dst, src, count * dtype_size(dtype));
    return;
  }
  ScopedDefaultFpEnv env;
  decode_work(q, dtype, src, count, dst);
}

}  // namespace pccl
