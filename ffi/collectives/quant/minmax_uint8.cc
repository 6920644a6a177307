// minmax_uint8: codes on a 256-value grid from the chunk's min to its max.
#include "collectives/quant/codecs.h"
#include "collectives/quant/uint8_grid.h"

namespace pccl::quant {
namespace {

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

template <typename Tr>
struct Encode {
  static void run(const void* s, size_t n, uint8_t* d) { encode_minmax<Tr>(s, n, d); }
};
template <typename Tr>
struct Decode {
  static void run(const uint8_t* s, size_t n, void* d) { decode_minmax<Tr>(s, n, d); }
};

}  // namespace

size_t uint8_header_bytes(DType dtype) { return dtype == DType::kFloat64 ? 16 : 8; }

void encode_minmax_uint8(DType dtype, const void* src, size_t n, uint8_t* dst) {
  by_dtype<Encode>(dtype, src, n, dst);
}

void decode_minmax_uint8(DType dtype, const uint8_t* src, size_t n, void* dst) {
  by_dtype<Decode>(dtype, src, n, dst);
}

}  // namespace pccl::quant
