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
//
// This header holds what both uint8 formats share (the chunk's extremes, the
// 256-value grid, the quantiser and its exact fallback, the decode lookup);
// minmax_uint8.cc and zero_point_uint8.cc build their grids.
#pragma once
#include <cstddef>
#include <cstdint>

#include "collectives/quant/float_traits.h"

namespace pccl::quant {

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

}  // namespace pccl::quant
