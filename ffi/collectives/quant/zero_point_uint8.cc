// zero_point_uint8: an affine grid through 0 with a scale from a discrete set.
#include "collectives/quant/codecs.h"
#include "collectives/quant/uint8_grid.h"

namespace pccl::quant {
namespace {

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

template <typename Tr>
struct Encode {
  static void run(const void* s, size_t n, uint8_t* d) { encode_zp<Tr>(s, n, d); }
};
template <typename Tr>
struct Decode {
  static void run(const uint8_t* s, size_t n, void* d) { decode_zp<Tr>(s, n, d); }
};

}  // namespace

void encode_zero_point_uint8(DType dtype, const void* src, size_t n, uint8_t* dst) {
  by_dtype<Encode>(dtype, src, n, dst);
}

void decode_zero_point_uint8(DType dtype, const uint8_t* src, size_t n, void* dst) {
  by_dtype<Decode>(dtype, src, n, dst);
}

}  // namespace pccl::quant
