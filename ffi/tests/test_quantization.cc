// Tests for the on-the-wire quantization codecs (collectives/quantization).
// Standalone: build and run the binary; exit code 0 means every check passed.
// It also prints (does not assert) an error table for 4 peers' float32 data.
// Pass --bench for encode/decode throughput.
//
// The bfloat16 reference is independent of the codec: a sorted table of all
// bfloat16 values and exact midpoint comparisons in double.
#include <algorithm>
#include <chrono>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "collectives/quantization.h"
#include "common/dtype.h"
#include "common/half.h"
#include "tests/check.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define TEST_X86 1
#endif

using namespace pccl;

namespace {

std::mt19937_64 rng(20240917);

const Quantization kCodecs[] = {Quantization::kMinMaxUInt8, Quantization::kZeroPointUInt8,
                                Quantization::kBFloat16};
const Quantization kAllQ[] = {Quantization::kNone, Quantization::kMinMaxUInt8,
                              Quantization::kZeroPointUInt8, Quantization::kBFloat16};
const DType kFloats[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16};


std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

// ---------------------------------------------------------------------------
// Typed buffers handled as doubles.

struct DInfo {
  double max;     // largest finite
  int denorm_e;   // log2 of the smallest subnormal
  double u;       // unit roundoff 2^-p
  size_t size;
  double scale_factor;  // zero_point: scale <= range/254 * this
};

DInfo info(DType dt) {
  switch (dt) {
    case DType::kFloat32: return {FLT_MAX, -149, 0x1p-24, 4, 1 + 0x1p-15};
    case DType::kFloat64: return {DBL_MAX, -1074, 0x1p-53, 8, 1 + 0x1p-42};
    case DType::kFloat16: return {65504.0, -24, 0x1p-11, 2, 1.25};
    default: return {0x1.FEp127, -133, 0x1p-8, 2, 2.0};
  }
}

double get(DType dt, const uint8_t* p, size_t i) {
  switch (dt) {
    case DType::kFloat32: { float v; std::memcpy(&v, p + 4 * i, 4); return v; }
    case DType::kFloat64: { double v; std::memcpy(&v, p + 8 * i, 8); return v; }
    case DType::kFloat16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); return f16_to_f32(h); }
    default: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); return bf16_to_f32(h); }
  }
}

void set(DType dt, uint8_t* p, size_t i, double v) {
  switch (dt) {
    case DType::kFloat32: { float f = static_cast<float>(v); std::memcpy(p + 4 * i, &f, 4); return; }
    case DType::kFloat64: std::memcpy(p + 8 * i, &v, 8); return;
    case DType::kFloat16: { uint16_t h = f32_to_f16(static_cast<float>(v)); std::memcpy(p + 2 * i, &h, 2); return; }
    default: { uint16_t h = f32_to_bf16(static_cast<float>(v)); std::memcpy(p + 2 * i, &h, 2); return; }
  }
}

std::vector<uint8_t> to_buf(DType dt, const std::vector<double>& v) {
  std::vector<uint8_t> b(v.size() * info(dt).size);
  for (size_t i = 0; i < v.size(); ++i) set(dt, b.data(), i, v[i]);
  return b;
}

uint64_t bits_of(DType dt, const uint8_t* p, size_t i) {
  uint64_t b = 0;
  std::memcpy(&b, p + info(dt).size * i, info(dt).size);
  return b;
}

std::vector<uint8_t> encode(Quantization q, DType dt, const std::vector<uint8_t>& x, size_t n) {
  std::vector<uint8_t> e(encoded_bytes(q, dt, n));
  encode_chunk(q, dt, x.data(), n, e.data());
  return e;
}

std::vector<uint8_t> decode(Quantization q, DType dt, const std::vector<uint8_t>& e, size_t n) {
  std::vector<uint8_t> d(n * info(dt).size);
  decode_chunk(q, dt, e.data(), n, d.data());
  return d;
}

double uniform01() { return static_cast<double>(rng() >> 11) * 0x1p-53; }
double normalish() { return uniform01() + uniform01() + uniform01() + uniform01() - 2.0; }

// ---------------------------------------------------------------------------
// Random chunks of many shapes, all finite and within the dtype's range.

constexpr int kNumKinds = 11;
const char* const kKindNames[kNumKinds] = {
    "normal", "narrow", "log-uniform", "few values", "positive", "negative",
    "random bits", "near max", "subnormal", "integers", "zeros"};

std::vector<double> gen(int kind, DType dt, size_t n) {
  const DInfo di = info(dt);
  const double maxe = std::log2(di.max);
  std::vector<double> v(n);
  switch (kind) {
    case 0: {  // normal with a random scale
      const double s = std::exp2(std::floor(uniform01() * 40) - 20);
      for (auto& x : v) x = normalish() * s;
      break;
    }
    case 1: {  // narrow relative range: center c, width c * 10^-k
      const double c = (uniform01() < 0.5 ? -1 : 1) * (1 + uniform01()) * std::exp2(std::floor(uniform01() * 20) - 5);
      const double w = std::fabs(c) * std::pow(10.0, -1 - std::floor(uniform01() * 9));
      for (auto& x : v) x = c + w * uniform01();
      break;
    }
    case 2: {  // log-uniform magnitudes over the whole range, random signs
      for (auto& x : v) {
        const double e = di.denorm_e + uniform01() * (maxe - di.denorm_e);
        x = (rng() & 1 ? -1 : 1) * std::min(di.max, std::exp2(e));
      }
      break;
    }
    case 3: {  // a few distinct values
      double pick[3];
      for (auto& p : pick) p = normalish() * 100;
      for (auto& x : v) x = pick[rng() % 3];
      break;
    }
    case 4:
      for (auto& x : v) x = 5 + uniform01() * 3;
      break;
    case 5:
      for (auto& x : v) x = -1000 - uniform01() * 1e4;
      break;
    case 6: {  // random finite bit patterns of the dtype
      std::vector<uint8_t> b(n * di.size);
      for (size_t i = 0; i < n; ++i) {
        uint64_t r;
        double val;
        do {
          r = rng();
          std::memcpy(b.data() + di.size * i, &r, di.size);
          val = get(dt, b.data(), i);
        } while (!std::isfinite(val));
        v[i] = val;
      }
      break;
    }
    case 7:  // near the largest finite value, both signs
      for (auto& x : v) x = (rng() & 1 ? -1 : 1) * di.max * (1 - uniform01() * 0.01);
      break;
    case 8:  // subnormal / tiny
      for (auto& x : v) x = normalish() * std::exp2(di.denorm_e + 6);
      break;
    case 9:
      for (auto& x : v) x = std::floor(normalish() * 50);
      break;
    case 10:  // mostly zeros, some -0, one small value
      for (auto& x : v) x = (rng() & 1) ? 0.0 : -0.0;
      v[rng() % n] = 0.25;
      break;
  }
  if (dt == DType::kFloat32 || dt == DType::kFloat16 || dt == DType::kBFloat16) {
    for (auto& x : v) x = std::max(-(double)FLT_MAX, std::min((double)FLT_MAX, x));
  }
  if (dt == DType::kFloat16) for (auto& x : v) x = std::max(-di.max, std::min(di.max, x));
  return v;
}

size_t random_size() {
  const uint64_t r = rng() % 100;
  if (r < 2) return 65536;
  if (r < 10) return 1 + rng() % 8;
  return 1 + rng() % 3000;
}

// ---------------------------------------------------------------------------
// bfloat16 reference: nearest even over a table of all finite values.

std::vector<double> g_bf16_values;  // positive finite bfloat16 values, then 2^128

uint16_t ref_bf16(double x) {
  if (g_bf16_values.empty()) {
    for (uint32_t h = 0; h < 0x7F80; ++h) g_bf16_values.push_back(bf16_to_f32(static_cast<uint16_t>(h)));
    g_bf16_values.push_back(0x1p128);  // where inf sits for rounding
  }
  if (std::isnan(x)) return 0x7FC0;
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  if (a >= 0x1p128) return sign | 0x7F80;
  const size_t hi = std::lower_bound(g_bf16_values.begin(), g_bf16_values.end(), a) - g_bf16_values.begin();
  if (g_bf16_values[hi] == a) return static_cast<uint16_t>(sign | (hi == 0x7F80 ? 0x7F80 : hi));
  const size_t lo = hi - 1;
  const double twice = 2 * a, mid2 = g_bf16_values[lo] + g_bf16_values[hi];  // exact
  size_t pick = twice < mid2 ? lo : twice > mid2 ? hi : (lo % 2 == 0 ? lo : hi);
  return static_cast<uint16_t>(sign | pick);
}

// ---------------------------------------------------------------------------

void test_names_and_applies() {
  for (int raw = 0; raw < 256; ++raw) CHECK_EQ(quantization_valid(static_cast<uint8_t>(raw)), raw < 4);
  CHECK_EQ(std::string(quantization_name(Quantization::kNone)), "none");
  CHECK_EQ(std::string(quantization_name(Quantization::kMinMaxUInt8)), "minmax_uint8");
  CHECK_EQ(std::string(quantization_name(Quantization::kZeroPointUInt8)), "zero_point_uint8");
  CHECK_EQ(std::string(quantization_name(Quantization::kBFloat16)), "bfloat16");
  CHECK_EQ(std::string(quantization_name(static_cast<Quantization>(9))), "invalid");
  for (int d = 0; d < kNumDTypes; ++d) {
    const DType dt = static_cast<DType>(d);
    const bool fl = dtype_is_float(dt);
    CHECK(!quantization_applies(Quantization::kNone, dt));
    CHECK_EQ(quantization_applies(Quantization::kMinMaxUInt8, dt), fl);
    CHECK_EQ(quantization_applies(Quantization::kZeroPointUInt8, dt), fl);
    CHECK_EQ(quantization_applies(Quantization::kBFloat16, dt), fl && dt != DType::kBFloat16);
    CHECK(!quantization_applies(static_cast<Quantization>(7), dt));
  }
}

// encoded_bytes is exact: encode writes exactly that many bytes, decode
// exactly count elements (guard bytes around both stay untouched).
void test_sizes() {
  Tally t{"sizes and guards"};
  const size_t counts[] = {0, 1, 2, 3, 7, 64, 1000, 65536};
  for (Quantization q : kAllQ) {
    for (int d = 0; d < kNumDTypes; ++d) {
      const DType dt = static_cast<DType>(d);
      const size_t es = dtype_size(dt);
      for (size_t n : counts) {
        size_t want;
        if (n == 0) want = 0;
        else if (!quantization_applies(q, dt)) want = n * es;
        else if (q == Quantization::kBFloat16) want = 2 * n;
        else want = (dt == DType::kFloat64 ? 16 : 8) + n;
        const size_t got = encoded_bytes(q, dt, n);
        t.expect(got == want, [&] {
          return std::string(quantization_name(q)) + " " + dtype_name(dt) + " n=" + std::to_string(n) +
                 ": " + std::to_string(got) + " != " + std::to_string(want);
        });
        // Values: small integers are valid in every dtype.
        std::vector<uint8_t> x(n * es + 1);
        for (size_t i = 0; i < n; ++i) {
          if (dtype_is_float(dt)) set(dt, x.data(), i, static_cast<double>(rng() % 200) - 100);
          else x[i * es] = static_cast<uint8_t>(rng());
        }
        const size_t G = 32;
        std::vector<uint8_t> enc(want + 2 * G, 0xA5), dec(n * es + 2 * G + 8, 0x5A);
        encode_chunk(q, dt, x.data(), n, enc.data() + G);
        decode_chunk(q, dt, enc.data() + G, n, dec.data() + G);
        bool guards = true;
        for (size_t i = 0; i < G; ++i) {
          guards &= enc[i] == 0xA5 && enc[G + want + i] == 0xA5;
          guards &= dec[i] == 0x5A && dec[G + n * es + i] == 0x5A;
        }
        t.expect(guards, [&] {
          return std::string(quantization_name(q)) + " " + dtype_name(dt) + " n=" + std::to_string(n) + " guard overwritten";
        });
        if (!quantization_applies(q, dt)) {  // raw copy
          t.expect(std::memcmp(dec.data() + G, x.data(), n * es) == 0, [&] { return std::string("raw copy ") + dtype_name(dt); });
        }
      }
    }
  }
  t.finish();
}

// Per-chunk checks of one round trip: error bounds, exact extremes, exact
// zero, exact bfloat16 rounding; and stability of the encoding.
struct Checker {
  Tally stable{"encode(decode(encode(x))) == encode(x)"};
  Tally minmax{"minmax round trip"}, zp{"zero_point round trip"}, bf{"bfloat16 round trip"};
  Tally det{"determinism (dst garbage, unaligned dst)"};

  void run(Quantization q, DType dt, const std::vector<double>& vals, const char* kind) {
    const size_t n = vals.size();
    const std::vector<uint8_t> x = to_buf(dt, vals);
    const std::vector<uint8_t> e = encode(q, dt, x, n);
    const std::vector<uint8_t> d = decode(q, dt, e, n);
    const std::vector<uint8_t> e2 = encode(q, dt, d, n);
    auto where = [&] {
      return std::string(quantization_name(q)) + " " + dtype_name(dt) + " " + kind + " n=" + std::to_string(n);
    };
    stable.expect(e == e2, where);

    // Same bytes whatever was in dst before, and at an odd address.
    if (rng() % 4 == 0) {
      std::vector<uint8_t> e3(e.size() + 3, 0xFF);
      encode_chunk(q, dt, x.data(), n, e3.data() + 3);
      std::vector<uint8_t> d3(d.size() + 8, 0xEE);
      decode_chunk(q, dt, e3.data() + 3, n, d3.data() + 8);
      det.expect(std::memcmp(e3.data() + 3, e.data(), e.size()) == 0 &&
                     std::memcmp(d3.data() + 8, d.data(), d.size()) == 0, where);
    }

    const DInfo di = info(dt);
    double lo = INFINITY, hi = -INFINITY, maxabs = 0;
    for (size_t i = 0; i < n; ++i) {
      const double v = get(dt, x.data(), i);
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      maxabs = std::max(maxabs, std::fabs(v));
    }
    const double tiny = std::ldexp(1.0, di.denorm_e);
    const double cu = dt == DType::kFloat64 ? 0x1p-53 : 0x1p-24;  // quantiser arithmetic
    if (q == Quantization::kMinMaxUInt8) {
      double hmin, hmax;
      if (dt == DType::kFloat64) { std::memcpy(&hmin, e.data(), 8); std::memcpy(&hmax, e.data() + 8, 8); }
      else { float a, b; std::memcpy(&a, e.data(), 4); std::memcpy(&b, e.data() + 4, 4); hmin = a; hmax = b; }
      minmax.expect(hmin == lo && hmax == hi, [&] { return where() + fmt(" header %g %g", hmin, hmax); });
      // step/2, plus a few ulps of the quantiser's arithmetic and the rounding
      // of the grid value to the dtype.
      const double bound = (hi * 0.5 - lo * 0.5) / 255 + 4 * (di.u + cu) * maxabs + tiny;
      for (size_t i = 0; i < n; ++i) {
        const double v = get(dt, x.data(), i), r = get(dt, d.data(), i);
        const bool exact_ends = (v != lo || r == lo) && (v != hi || r == hi);
        const bool ok = r >= lo && r <= hi && exact_ends && std::fabs(r - v) <= bound;
        minmax.expect(ok, [&] { return where() + fmt(": %.17g -> %.17g (bound %g)", v, r, bound); });
      }
    } else if (q == Quantization::kZeroPointUInt8) {
      double s;
      if (dt == DType::kFloat64) std::memcpy(&s, e.data(), 8);
      else { float a; std::memcpy(&a, e.data(), 4); s = a; }
      const int zpv = e[dt == DType::kFloat64 ? 8 : 4];
      const double zlo = std::min(lo, 0.0), zhi = std::max(hi, 0.0);
      const bool constant = lo == hi;
      const double sbound = (zhi / 254 - zlo / 254) * di.scale_factor * (1 + 1e-12) + tiny;
      zp.expect(s > 0 && (constant || s <= sbound),
                [&] { return where() + fmt(" scale %g > bound %g (zp %g)", s, sbound, zpv); });
      for (size_t i = 0; i < n; ++i) {
        const double v = get(dt, x.data(), i), r = get(dt, d.data(), i);
        const bool extreme = v == lo || v == hi;
        const double err = std::fabs(r - v);
        const double slop = 4 * cu * (std::fabs(v) + s * 256);
        bool ok = constant ? r == v : err <= (extreme ? s : s * 0.5 + slop);
        if (v == 0) ok = ok && r == 0;
        zp.expect(ok, [&] { return where() + fmt(": %.17g -> %.17g (scale %g)", v, r, s); });
      }
    } else if (q == Quantization::kBFloat16 && dt != DType::kBFloat16) {
      for (size_t i = 0; i < n; ++i) {
        const double v = get(dt, x.data(), i), r = get(dt, d.data(), i);
        uint16_t h;
        std::memcpy(&h, e.data() + 2 * i, 2);
        const uint16_t want = ref_bf16(v);
        double want_r = bf16_to_f32(want);
        if (dt == DType::kFloat16 && std::fabs(want_r) > 65504) want_r = std::copysign(65504.0, want_r);
        const bool rel = !std::isfinite(want_r) || std::fabs(v) < 0x1p-126 ||
                         std::fabs(r - v) <= std::fabs(v) * 0x1p-8;
        bf.expect(h == want && r == want_r && rel, [&] {
          return where() + fmt(": %.17g -> %.17g, want %.17g", v, r, want_r);
        });
      }
    }
  }

  void finish() { stable.finish(); minmax.finish(); zp.finish(); bf.finish(); det.finish(); }
};

void test_random_chunks() {
  Checker c;
  for (int round = 0; round < 12; ++round) {
    for (int kind = 0; kind < kNumKinds; ++kind) {
      for (DType dt : kFloats) {
        const std::vector<double> v = gen(kind, dt, random_size());
        for (Quantization q : kCodecs) c.run(q, dt, v, kKindNames[kind]);
      }
    }
  }
  c.finish();
}

// Count 1, constants, huge and tiny magnitudes, negative ranges.
void test_edge_chunks() {
  Checker c;
  for (DType dt : kFloats) {
    const DInfo di = info(dt);
    const double tiny = std::ldexp(1.0, di.denorm_e);
    const double specials[] = {0.0, -0.0, 1.0, -1.0, 0.1, -3.75, 1e-3, tiny, -tiny, 3 * tiny,
                               di.max, -di.max, di.max / 3, 0x1p-100, 12345.678};
    for (double s : specials) {
      if (dt == DType::kFloat16 && std::fabs(s) > 0 && std::fabs(s) < 0x1p-24) continue;
      for (size_t n : {size_t{1}, size_t{5}, size_t{300}}) {
        const std::vector<double> v(n, s);
        for (Quantization q : kCodecs) c.run(q, dt, v, "constant");
      }
    }
    // Constant chunks decode exactly under both uint8 formats.
    Tally exact{std::string("constant chunk exact ") + dtype_name(dt)};
    for (double s : specials) {
      const std::vector<uint8_t> x = to_buf(dt, std::vector<double>(9, s));
      for (Quantization q : {Quantization::kMinMaxUInt8, Quantization::kZeroPointUInt8}) {
        const std::vector<uint8_t> d = decode(q, dt, encode(q, dt, x, 9), 9);
        for (size_t i = 0; i < 9; ++i) {
          const double a = get(dt, x.data(), i), b = get(dt, d.data(), i);
          exact.expect(a == b, [&] { return fmt("%.17g -> %.17g", a, b); });
        }
      }
    }
    exact.finish();
    // Pairs and triples of extreme values.
    const double pairs[][2] = {{-di.max, di.max}, {tiny, di.max}, {-di.max, -tiny}, {0, di.max},
                               {-di.max, 0}, {-tiny, tiny}, {0, tiny}, {-2 * tiny, 0},
                               {1.0, 1.0 + 1e-7}, {-1e4, -1e4 + 1}, {1e-30, 1e30}};
    for (const auto& p : pairs) {
      std::vector<double> v = {p[0], p[1], p[0] * 0.5 + p[1] * 0.5, p[0] * 0.25 + p[1] * 0.75};
      for (auto& e : v) e = std::max(-di.max, std::min(di.max, e));
      for (Quantization q : kCodecs) c.run(q, dt, v, "pair");
    }
  }
  // Count 0 writes nothing.
  for (Quantization q : kAllQ) {
    for (DType dt : kFloats) {
      uint8_t guard[4] = {1, 2, 3, 4};
      encode_chunk(q, dt, guard, 0, guard);
      decode_chunk(q, dt, guard, 0, guard);
      CHECK(guard[0] == 1 && guard[1] == 2 && guard[2] == 3 && guard[3] == 4);
      CHECK_EQ(encoded_bytes(q, dt, 0), size_t{0});
    }
  }
  c.finish();
}

// Documented rule: a chunk with any NaN/inf is poisoned under the uint8 formats
// (NaN metadata, zero codes, every element decodes to the canonical NaN);
// bfloat16 maps NaN -> canonical NaN and inf -> inf element-wise.
void test_nonfinite() {
  Tally t{"non-finite"};
  const uint64_t canon_nan[] = {0x7FC00000u, 0x7FF8000000000000ull, 0x7E00u, 0x7FC0u};
  const double bad[] = {NAN, -NAN, INFINITY, -INFINITY};
  for (int di_ = 0; di_ < 4; ++di_) {
    const DType dt = kFloats[di_];
    for (double b : bad) {
      for (size_t n : {size_t{1}, size_t{2}, size_t{17}, size_t{1000}}) {
        std::vector<double> v = gen(0, dt, n);
        const size_t pos = rng() % n;
        v[pos] = b;
        const std::vector<uint8_t> x = to_buf(dt, v);
        for (Quantization q : kCodecs) {
          const std::vector<uint8_t> e = encode(q, dt, x, n);
          const std::vector<uint8_t> d = decode(q, dt, e, n);
          const std::vector<uint8_t> e2 = encode(q, dt, d, n);
          auto where = [&] {
            return std::string(quantization_name(q)) + " " + dtype_name(dt) + fmt(" bad=%g n=%g", b, (double)n);
          };
          t.expect(e == e2, where);
          if (q == Quantization::kBFloat16 && dt == DType::kBFloat16) {
            t.expect(d == x, where);  // identity
            continue;
          }
          if (q != Quantization::kBFloat16) {
            bool all_nan = true, codes_zero = true;
            for (size_t i = 0; i < n; ++i) all_nan &= bits_of(dt, d.data(), i) == canon_nan[di_];
            const size_t h = dt == DType::kFloat64 ? 16 : 8;
            for (size_t i = h; i < e.size(); ++i) codes_zero &= e[i] == 0;
            // Metadata: canonical NaN in the first field; minmax: in the second
            // too; zero_point: zp and padding zero.
            const uint64_t hnan = h == 16 ? 0x7FF8000000000000ull : 0x7FC00000u;
            uint64_t f1 = 0, f2 = 0;
            std::memcpy(&f1, e.data(), h / 2);
            std::memcpy(&f2, e.data() + h / 2, h / 2);
            const bool meta = f1 == hnan && f2 == (q == Quantization::kMinMaxUInt8 ? hnan : 0);
            t.expect(all_nan && codes_zero && meta, where);
          } else {
            for (size_t i = 0; i < n; ++i) {
              const double v0 = get(dt, x.data(), i), r = get(dt, d.data(), i);
              bool ok;
              if (std::isnan(v0)) ok = bits_of(dt, d.data(), i) == canon_nan[di_];
              else if (std::isinf(v0)) ok = r == v0;
              else ok = std::fabs(r - v0) <= std::fabs(v0) * 0x1p-8 || std::fabs(v0) < 0x1p-126;
              t.expect(ok, where);
            }
          }
        }
      }
    }
  }
  t.finish();
}

// Known bfloat16 roundings, including cases that a float64 -> float32 -> bfloat16
// double rounding gets wrong, and float16's saturation on decode.
void test_bf16_known() {
  auto enc64 = [](double d) {
    uint8_t e[2];
    encode_chunk(Quantization::kBFloat16, DType::kFloat64, &d, 1, e);
    return static_cast<uint16_t>(e[0] | (e[1] << 8));
  };
  CHECK_EQ(enc64(1.0 + 0x1p-8), uint16_t{0x3F80});              // tie -> even
  CHECK_EQ(enc64(1.0 + 3 * 0x1p-8), uint16_t{0x3F82});          // tie -> even
  CHECK_EQ(enc64(1.0 + 0x1p-8 + 0x1p-30), uint16_t{0x3F81});    // just above the tie
  CHECK_EQ(enc64(-(1.0 + 0x1p-8 + 0x1p-30)), uint16_t{0xBF81});
  CHECK_EQ(enc64(0x1p-134), uint16_t{0x0000});                  // half the smallest subnormal
  CHECK_EQ(enc64(0x1p-134 + 0x1p-160), uint16_t{0x0001});
  CHECK_EQ(enc64(-0x1p-134 - 0x1p-160), uint16_t{0x8001});
  CHECK_EQ(enc64(1e39), uint16_t{0x7F80});
  CHECK_EQ(enc64(-DBL_MAX), uint16_t{0xFF80});
  CHECK_EQ(enc64(0x1.FEp127), uint16_t{0x7F7F});                // largest finite
  CHECK_EQ(enc64(0x1.FEFFFFFFFFp127), uint16_t{0x7F7F});         // below the overflow tie
  CHECK_EQ(enc64(0x1.FFp127), uint16_t{0x7F80});                 // the tie rounds to inf
  CHECK_EQ(enc64(-0.0), uint16_t{0x8000});
  CHECK_EQ(enc64(std::nan("1")), uint16_t{0x7FC0});
  // float16: 65504 -> bfloat16 65536 -> back to 65504 (saturated, not inf).
  const uint16_t h[3] = {0x7BFF, 0x7C00, 0xFBFF};  // 65504, inf, -65504
  uint8_t e[6];
  uint16_t back[3];
  encode_chunk(Quantization::kBFloat16, DType::kFloat16, h, 3, e);
  CHECK_EQ(static_cast<uint16_t>(e[0] | (e[1] << 8)), uint16_t{0x4780});
  decode_chunk(Quantization::kBFloat16, DType::kFloat16, e, 3, back);
  CHECK_EQ(back[0], uint16_t{0x7BFF});
  CHECK_EQ(back[1], uint16_t{0x7C00});
  CHECK_EQ(back[2], uint16_t{0xFBFF});
}

// Decoding arbitrary bytes never crashes (run under ASan/UBSan) and is
// deterministic; it writes exactly count elements.
void test_garbage_decode() {
  Tally t{"decode of random bytes"};
  for (int round = 0; round < 300; ++round) {
    for (Quantization q : kCodecs) {
      for (DType dt : kFloats) {
        const size_t n = 1 + rng() % 200;
        std::vector<uint8_t> e(encoded_bytes(q, dt, n));
        for (auto& b : e) b = static_cast<uint8_t>(rng());
        if (round % 3 == 0 && e.size() >= 4) {  // odd headers: inf, negative, zero, huge
          const float hv[] = {INFINITY, -1.0f, 0.0f, FLT_MAX, -FLT_MAX, 1e-45f};
          const float h = hv[rng() % 6];
          std::memcpy(e.data(), &h, 4);
        }
        const std::vector<uint8_t> d1 = decode(q, dt, e, n), d2 = decode(q, dt, e, n);
        t.expect(d1 == d2, [&] { return std::string(quantization_name(q)) + " " + dtype_name(dt); });
      }
    }
  }
  t.finish();
}

// ---------------------------------------------------------------------------
// Determinism across machines and FP environments.

uint64_t fnv1a(uint64_t h, const std::vector<uint8_t>& b) {
  for (uint8_t c : b) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

// A fixed corpus built with exact operations only (integer * power of two),
// so it is identical on every platform and standard library.
std::vector<std::vector<uint8_t>> fixed_corpus(DType dt, std::vector<size_t>& sizes) {
  std::mt19937_64 g(7);
  std::vector<std::vector<uint8_t>> out;
  const DInfo di = info(dt);
  for (int c = 0; c < 12; ++c) {
    const size_t n = c == 0 ? 1 : c < 4 ? 50 + c : 4000 + 777 * c;
    // Exponent base: subnormal scale (c%6 == 5), a range near the dtype's
    // limit (c%6 == 4: the quantisers' halved-range paths), or moderate.
    const int top = static_cast<int>(std::floor(std::log2(di.max)));
    const int e0 = (c % 6 == 5) ? di.denorm_e + 2 : (c % 6 == 4) ? top - 22 : -10 - c;
    std::vector<uint8_t> b(n * di.size);
    for (size_t i = 0; i < n; ++i) {
      const int64_t m = static_cast<int64_t>(g() >> 44) - (int64_t{1} << 19);  // 20-bit signed
      const int sh = static_cast<int>(g() % 4);
      double v = std::ldexp(static_cast<double>(m), e0 + sh);
      if (c % 6 == 3) v = std::ldexp(static_cast<double>((int64_t{1} << 19) + (m & 15)), 0);  // narrow
      v = std::max(-di.max, std::min(di.max, v));
      set(dt, b.data(), i, v);
    }
    out.push_back(b);
    sizes.push_back(n);
  }
  return out;
}

struct Corpus {
  std::vector<std::vector<uint8_t>> chunks[4];
  std::vector<size_t> sizes[4];
  Corpus() {
    for (int d = 0; d < 4; ++d) chunks[d] = fixed_corpus(kFloats[d], sizes[d]);
  }
};

// Only integer work besides the codec calls: safe to run in any FP mode.
uint64_t fingerprint(const Corpus& corpus) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (Quantization q : kCodecs) {
    for (int d = 0; d < 4; ++d) {
      for (size_t c = 0; c < corpus.chunks[d].size(); ++c) {
        const size_t n = corpus.sizes[d][c];
        const std::vector<uint8_t> e = encode(q, kFloats[d], corpus.chunks[d][c], n);
        h = fnv1a(h, e);
        h = fnv1a(h, decode(q, kFloats[d], e, n));
      }
    }
  }
  return h;
}

// Golden value: the same encodings on every machine and build (no FMA
// contraction, no FTZ/DAZ, no lane-order effects). If a deliberate format
// change moves it, update it here and in every peer at once.
constexpr uint64_t kGoldenFingerprint = 0xb0f2dca6be16cae2ull;

void test_fingerprint() {
  const uint64_t h = fingerprint(Corpus());
  std::printf("encoding fingerprint: 0x%016llx\n", static_cast<unsigned long long>(h));
  if (!CHECK_EQ(h, kGoldenFingerprint)) std::fprintf(stderr, "  ^ encodings changed (golden fingerprint)\n");
}

void test_fp_environment() {
#if TEST_X86
  // FTZ + DAZ + round-up in the caller's thread must not change any byte, and
  // the caller's mode comes back unchanged.
  const Corpus corpus;
  const uint64_t normal = fingerprint(corpus);
  const unsigned saved = _mm_getcsr();
  const unsigned odd = (saved & ~0x6000u) | 0x8040u | 0x4000u;
  _mm_setcsr(odd);
  const uint64_t h = fingerprint(corpus);
  const unsigned after = _mm_getcsr();
  _mm_setcsr(saved);
  CHECK_EQ(h, normal);
  CHECK_EQ(after & ~0x3Fu, odd & ~0x3Fu);  // modes restored (flags may differ)
#endif
}

// ---------------------------------------------------------------------------
// Error table (printed, not asserted): 4 peers, 1M float32 normal values each.

void error_table() {
  const size_t N = 1 << 20, P = 4, chunk = 65536;
  std::mt19937_64 g(99);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<std::vector<float>> x(P, std::vector<float>(N));
  for (auto& v : x) for (auto& e : v) e = nd(g);
  std::vector<double> exact(N, 0.0);
  for (size_t p = 0; p < P; ++p) for (size_t i = 0; i < N; ++i) exact[i] += x[p][i];
  double maxsum = 0;
  for (double v : exact) maxsum = std::max(maxsum, std::fabs(v));

  auto roundtrip = [&](Quantization q, const float* src, float* dst) {
    std::vector<uint8_t> e(encoded_bytes(q, DType::kFloat32, chunk));
    for (size_t o = 0; o < N; o += chunk) {
      encode_chunk(q, DType::kFloat32, src + o, chunk, e.data());
      decode_chunk(q, DType::kFloat32, e.data(), chunk, dst + o);
    }
  };
  std::printf("error vs float64 exact sum, 4 peers x 1M float32 N(0,1), chunks of 64Ki, max|sum| = %.3f\n", maxsum);
  std::printf("  %-17s %-30s %-30s\n", "", "one hop: sum_i dec(enc(x_i))", "ring: dec(enc) at every hop");
  std::printf("  %-17s %11s %11s %6s %11s %11s %6s\n", "format", "max abs", "max/max|s|", "bits", "max abs",
              "max/max|s|", "bits");
  for (Quantization q : kAllQ) {
    // One quantised hop per peer, summed exactly.
    std::vector<double> one(N, 0.0);
    std::vector<float> tmp(N);
    for (size_t p = 0; p < P; ++p) {
      if (q == Quantization::kNone) tmp = x[p];
      else roundtrip(q, x[p].data(), tmp.data());
      for (size_t i = 0; i < N; ++i) one[i] += tmp[i];
    }
    // Ring reduce-scatter + all-gather: partial = dec(enc(partial)) + x_p in
    // float32 at each hop, the owner's final value goes through dec(enc()).
    std::vector<float> part = x[0];
    for (size_t p = 1; p < P; ++p) {
      if (q != Quantization::kNone) roundtrip(q, part.data(), part.data());
      for (size_t i = 0; i < N; ++i) part[i] += x[p][i];
    }
    if (q != Quantization::kNone) roundtrip(q, part.data(), part.data());
    double e1 = 0, e2 = 0;
    for (size_t i = 0; i < N; ++i) {
      e1 = std::max(e1, std::fabs(one[i] - exact[i]));
      e2 = std::max(e2, std::fabs(static_cast<double>(part[i]) - exact[i]));
    }
    std::printf("  %-17s %11.3e %11.3e %6.1f %11.3e %11.3e %6.1f\n", quantization_name(q), e1, e1 / maxsum,
                e1 > 0 ? -std::log2(e1 / maxsum) : 99.0, e2, e2 / maxsum, e2 > 0 ? -std::log2(e2 / maxsum) : 99.0);
  }
}

// ---------------------------------------------------------------------------

void bench() {
  const size_t N = size_t{1} << 22, chunk = 65536;  // 16 MiB of float32
  std::mt19937_64 g(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(N), y(N);
  for (auto& e : x) e = nd(g);
  for (Quantization q : kCodecs) {
    const size_t eb = encoded_bytes(q, DType::kFloat32, chunk);
    std::vector<uint8_t> enc(eb * (N / chunk));
    double best_e = 1e9, best_d = 1e9;
    for (int rep = 0; rep < 5; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      for (size_t c = 0; c < N / chunk; ++c) encode_chunk(q, DType::kFloat32, x.data() + c * chunk, chunk, enc.data() + c * eb);
      auto t1 = std::chrono::steady_clock::now();
      for (size_t c = 0; c < N / chunk; ++c) decode_chunk(q, DType::kFloat32, enc.data() + c * eb, chunk, y.data() + c * chunk);
      auto t2 = std::chrono::steady_clock::now();
      best_e = std::min(best_e, std::chrono::duration<double>(t1 - t0).count());
      best_d = std::min(best_d, std::chrono::duration<double>(t2 - t1).count());
    }
    const double gb = N * 4.0 / 1e9;
    std::printf("bench float32 %-16s encode %5.2f GB/s, decode %5.2f GB/s, encode+decode %5.2f GB/s (of float32 input)\n",
                quantization_name(q), gb / best_e, gb / best_d, gb / (best_e + best_d));
  }
}

}  // namespace

int main(int argc, char** argv) {
  test_names_and_applies();
  test_sizes();
  test_random_chunks();
  test_edge_chunks();
  test_nonfinite();
  test_bf16_known();
  test_garbage_decode();
  test_fingerprint();
  test_fp_environment();
  error_table();
  if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) bench();
  std::printf("(%ld element/chunk cases behind the bulk checks)\n", g_bulk_cases.load());
  return check_summary("test_quantization");
}
