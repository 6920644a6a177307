// Tests for the reduction kernels (collectives/reduce_kernels) and the 16-bit
// float conversions (common/half.h). Standalone: build and run the binary;
// exit code 0 means every check passed. Pass --bench for a float32 sum timing.
//
// The 16-bit references are deliberately independent of half.h: values are
// decoded with ldexp() from the format definition, and rounding picks the
// nearest entry of a sorted table of all representable values (ties to even).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "collectives/reduce_kernels.h"
#include "common/dtype.h"
#include "common/half.h"
#include "tests/check.h"

using namespace pccl;

namespace {

std::mt19937_64 rng(20240611);
const double kNaN = std::numeric_limits<double>::quiet_NaN();
const ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin, ReduceOp::kMax,
                         ReduceOp::kProd};


std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// ---------------------------------------------------------------------------
// Reference model of a 16-bit float format.
struct Format16 {
  const char* name;
  int mant_bits;       // 10 for float16, 7 for bfloat16
  int exp_bits;        // 5 / 8
  uint16_t (*to16)(float);
  float (*from16)(uint16_t);
  std::vector<double> values;  // values of bit patterns 0 .. inf (inf as 2^emax+1)

  uint16_t inf_bits() const { return static_cast<uint16_t>(((1u << exp_bits) - 1) << mant_bits); }
  uint16_t quiet_bit() const { return static_cast<uint16_t>(1u << (mant_bits - 1)); }
  bool is_nan(uint16_t h) const { return (h & 0x7FFF) > inf_bits(); }

  double decode(uint16_t h) const {
    const int bias = (1 << (exp_bits - 1)) - 1;
    const int e = (h >> mant_bits) & ((1 << exp_bits) - 1);
    const int m = h & ((1 << mant_bits) - 1);
    const double sign = (h & 0x8000) ? -1.0 : 1.0;
    if (e == (1 << exp_bits) - 1) return m ? kNaN : sign * HUGE_VAL;
    if (e == 0) return sign * std::ldexp(m, 1 - bias - mant_bits);
    return sign * std::ldexp((1 << mant_bits) + m, e - bias - mant_bits);
  }

  void build_table() {  // positive patterns are ordered like their values
    for (uint32_t h = 0; h < inf_bits(); ++h) values.push_back(decode(static_cast<uint16_t>(h)));
    const int bias = (1 << (exp_bits - 1)) - 1;
    values.push_back(std::ldexp(1.0, bias + 1));  // where inf "sits" for rounding
  }

  // Correct round-to-nearest-even of any double (NaN -> canonical quiet NaN).
  uint16_t round(double x) const {
    if (std::isnan(x)) return static_cast<uint16_t>(inf_bits() | quiet_bit());
    const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    const double ax = std::fabs(x);
    if (ax >= values.back()) return sign | inf_bits();
    const size_t hi = std::lower_bound(values.begin(), values.end(), ax) - values.begin();
    if (values[hi] == ax) return static_cast<uint16_t>(sign | hi);
    const size_t lo = hi - 1;
    const double twice = 2 * ax, mid2 = values[lo] + values[hi];  // both exact
    size_t pick = twice < mid2 ? lo : twice > mid2 ? hi : (lo % 2 == 0 ? lo : hi);
    return static_cast<uint16_t>(sign | pick);
  }
};

Format16 g_f16{"float16", 10, 5, f32_to_f16, f16_to_f32, {}};
Format16 g_bf16{"bfloat16", 7, 8, f32_to_bf16, bf16_to_f32, {}};

bool same_float_bits(float a, float b) { return f32_bits(a) == f32_bits(b); }

// Every 16-bit pattern decodes exactly, and float32 -> 16 bit gives it back.
void test_all_patterns(const Format16& f) {
  Tally decode{std::string(f.name) + " decode"}, trip{std::string(f.name) + " round trip"};
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    const float v = f.from16(h);
    const uint16_t back = f.to16(v);
    if (f.is_nan(h)) {
      decode.expect(std::isnan(v), [&] { return hex(h) + " should decode to NaN"; });
      const bool quiet_nan = f.is_nan(back) && (back & f.quiet_bit());
      trip.expect(quiet_nan, [&] { return hex(h) + " -> " + hex(back); });
    } else {
      const float want = static_cast<float>(f.decode(h));
      decode.expect(same_float_bits(v, want), [&] { return hex(h); });
      trip.expect(back == h, [&] { return hex(h) + " -> " + hex(back); });
    }
  }
  decode.finish();
  trip.finish();
}

// Midpoints between neighbours (exact in float32) round to the even one;
// one float32 ulp either side rounds to the nearer one. Covers the
// subnormal/normal boundary and the largest-finite/inf boundary.
void test_midpoints(const Format16& f) {
  Tally t{std::string(f.name) + " midpoints"};
  for (uint16_t lo = 0; lo < f.inf_bits(); ++lo) {
    const uint16_t hi = lo + 1;
    const float mid = static_cast<float>((f.values[lo] + f.values[hi]) / 2);
    for (uint16_t sign : {uint16_t{0}, uint16_t{0x8000}}) {
      const float m = sign ? -mid : mid;
      const uint16_t even = (lo % 2 == 0) ? lo : hi;
      const float below = std::nextafter(m, 0.0f);
      const float above = std::nextafter(m, sign ? -INFINITY : INFINITY);
      t.expect(f.to16(m) == (sign | even), [&] { return "tie at " + hex(lo); });
      t.expect(f.to16(below) == (sign | lo), [&] { return "below mid " + hex(lo); });
      t.expect(f.to16(above) == (sign | hi), [&] { return "above mid " + hex(lo); });
    }
  }
  t.finish();
}

// Random float32 values, over all bit patterns and over the format's range.
void test_random_floats(const Format16& f) {
  Tally t{std::string(f.name) + " random float32"};
  const int emax = (1 << (f.exp_bits - 1));
  std::uniform_int_distribution<int> exp_dist(-emax - f.mant_bits - 2, emax + 1);
  std::uniform_real_distribution<float> unit(-2.0f, 2.0f);
  for (int i = 0; i < 400000; ++i) {
    const float x = (i % 2) ? f32_from_bits(static_cast<uint32_t>(rng()))
                            : std::ldexp(unit(rng), exp_dist(rng));
    const uint16_t got = f.to16(x), want = f.round(x);
    const bool ok = std::isnan(x) ? (f.is_nan(got) && (got & f.quiet_bit())) : got == want;
    t.expect(ok, [&] { return hex(f32_bits(x)) + " -> " + hex(got) + ", want " + hex(want); });
  }
  t.finish();
}

void test_known_conversions() {
  CHECK_EQ(f32_to_f16(1.0f), uint16_t{0x3C00});
  CHECK_EQ(f32_to_f16(-2.0f), uint16_t{0xC000});
  CHECK_EQ(f32_to_f16(65504.0f), uint16_t{0x7BFF});
  CHECK_EQ(f32_to_f16(65519.996f), uint16_t{0x7BFF});
  CHECK_EQ(f32_to_f16(65520.0f), uint16_t{0x7C00});  // tie goes to even = inf
  CHECK_EQ(f32_to_f16(1e10f), uint16_t{0x7C00});
  CHECK_EQ(f32_to_f16(-INFINITY), uint16_t{0xFC00});
  CHECK_EQ(f32_to_f16(-0.0f), uint16_t{0x8000});
  CHECK_EQ(f32_to_f16(std::ldexp(1.0f, -24)), uint16_t{0x0001});  // smallest subnormal
  CHECK_EQ(f32_to_f16(std::ldexp(1.0f, -25)), uint16_t{0x0000});  // tie -> even (0)
  CHECK_EQ(f32_to_f16(std::ldexp(3.0f, -25)), uint16_t{0x0002});  // tie -> even (2)
  CHECK_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), uint16_t{0x3C00});      // tie, down
  CHECK_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), uint16_t{0x3C02});  // tie, up
  CHECK_EQ(f32_to_f16(f32_from_bits(0x7F800001)), uint16_t{0x7E00});  // sNaN -> quiet NaN
  CHECK_EQ(f16_to_f32(0x3555), 0.333251953125f);
  CHECK(std::isnan(f16_to_f32(0x7C01)));

  CHECK_EQ(f32_to_bf16(1.0f), uint16_t{0x3F80});
  CHECK_EQ(f32_to_bf16(3.14159265f), uint16_t{0x4049});
  CHECK_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), uint16_t{0x3F80});      // tie, down
  CHECK_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), uint16_t{0x3F82});  // tie, up
  CHECK_EQ(f32_to_bf16(std::numeric_limits<float>::max()), uint16_t{0x7F80});  // -> inf
  CHECK_EQ(f32_to_bf16(-0.0f), uint16_t{0x8000});
  CHECK_EQ(f32_to_bf16(f32_from_bits(0x7F800001)), uint16_t{0x7FC0});  // not inf!
  CHECK_EQ(f32_to_bf16(f32_from_bits(0xFFC12345)), uint16_t{0xFFC1});  // payload kept
  CHECK_EQ(bf16_to_f32(0xC040), -3.0f);
}

// ---------------------------------------------------------------------------
// reduce(): every dtype x op against a reference, on edge x edge pairs plus
// random pairs, out of place and with dst aliasing a, b, or both.
template <typename S>
struct ReduceCase {
  DType dtype;
  std::vector<S> edges;
  std::function<S()> random;
  std::function<S(ReduceOp, S, S)> ref;
  std::function<bool(S got, S want)> same;
};

template <typename S>
uint64_t bits_of(S v) {
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof v);
  return u;
}

template <typename S>
void compare(Tally& t, const ReduceCase<S>& c, const std::vector<S>& got,
             const std::vector<S>& a, const std::vector<S>& b, size_t from, ReduceOp op,
             const char* mode) {
  for (size_t i = 0; i < got.size(); ++i) {
    const S want = c.ref(op, a[from + i], b[from + i]);
    t.expect(c.same(got[i], want), [&] {
      return std::string(mode) + " op=" + reduce_op_name(op) + " i=" + std::to_string(i) +
             " got " + hex(bits_of(got[i])) + " want " + hex(bits_of(want));
    });
  }
}

template <typename S>
void test_reduce_dtype(const ReduceCase<S>& c) {
  std::vector<S> a, b;
  for (S x : c.edges)
    for (S y : c.edges) a.push_back(x), b.push_back(y);
  for (int i = 0; i < 10007; ++i) a.push_back(c.random()), b.push_back(c.random());
  const size_t n = a.size();
  Tally t{std::string("reduce ") + dtype_name(c.dtype)};
  for (ReduceOp op : kOps) {
    std::vector<S> out(n);
    reduce(c.dtype, op, out.data(), a.data(), b.data(), n);
    compare(t, c, out, a, b, 0, op, "dst fresh");
    std::vector<S> x = a;  // dst == a
    reduce(c.dtype, op, x.data(), x.data(), b.data(), n);
    compare(t, c, x, a, b, 0, op, "dst==a");
    std::vector<S> y = b;  // dst == b
    reduce(c.dtype, op, y.data(), a.data(), y.data(), n);
    compare(t, c, y, a, b, 0, op, "dst==b");
    std::vector<S> z = a;  // dst == a == b
    reduce(c.dtype, op, z.data(), z.data(), z.data(), n);
    compare(t, c, z, a, a, 0, op, "dst==a==b");
    std::vector<S> part(n - 1);  // shifted start and odd length: other alignment, tails
    reduce(c.dtype, op, part.data(), a.data() + 1, b.data() + 1, n - 1);
    compare(t, c, part, a, b, 1, op, "offset 1");
    reduce(c.dtype, op, nullptr, nullptr, nullptr, 0);  // count 0 touches nothing
  }
  t.finish();
}

template <typename T>
T ref_int(ReduceOp op, T a, T b) {
  // Exact result in 128 bits; conversion to T keeps the low bits (= wrap).
  using W = std::conditional_t<std::is_signed_v<T>, __int128, unsigned __int128>;
  const W x = a, y = b;
  switch (op) {
    case ReduceOp::kSum: case ReduceOp::kAvg: return static_cast<T>(x + y);
    case ReduceOp::kProd: return static_cast<T>(x * y);
    case ReduceOp::kMin: return x < y ? a : b;
    case ReduceOp::kMax: return x > y ? a : b;
  }
  return 0;
}

template <typename T>
ReduceCase<T> int_case(DType dt) {
  using L = std::numeric_limits<T>;
  std::vector<T> edges = {0, 1, 2, 16, 100, L::max(), static_cast<T>(L::max() - 1), L::min(),
                          static_cast<T>(L::min() + 1)};
  if (std::is_signed_v<T>) {
    for (long long v : {-1LL, -2LL, -16LL, -100LL}) edges.push_back(static_cast<T>(v));
  }
  return {dt, edges, [] { return static_cast<T>(rng()); }, ref_int<T>,
          [](T g, T w) { return g == w; }};
}

// Floats: min/max propagate NaN, ties return b. Sum/prod of float32 in double
// then rounded: equals the single float32 rounding (53 >= 2*24+2 bits).
template <typename T>
T ref_float(ReduceOp op, T a, T b) {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  switch (op) {
    case ReduceOp::kSum: case ReduceOp::kAvg: return static_cast<T>(double(a) + double(b));
    case ReduceOp::kProd: return static_cast<T>(double(a) * double(b));
    case ReduceOp::kMin: return (std::isnan(a) || std::isnan(b)) ? nan : (a < b ? a : b);
    case ReduceOp::kMax: return (std::isnan(a) || std::isnan(b)) ? nan : (a > b ? a : b);
  }
  return nan;
}

template <typename T>
bool same_float(T got, T want) {
  if (std::isnan(want)) return std::isnan(got);
  return std::memcmp(&got, &want, sizeof(T)) == 0;  // also tells -0 from +0
}

template <typename T>
ReduceCase<T> float_case(DType dt) {
  using L = std::numeric_limits<T>;
  std::vector<T> edges = {T(0), T(-0.0), T(1), T(-1), T(2), T(0.5), T(3), T(-3.5), T(1e-30),
                          L::max(), -L::max(), L::min(), L::denorm_min(), -L::denorm_min(),
                          L::infinity(), -L::infinity(), L::quiet_NaN(), -L::quiet_NaN()};
  auto random = [] {
    std::uniform_real_distribution<T> d(-1000, 1000);
    if (rng() % 4) return d(rng);
    T v;  // any bit pattern: extremes, subnormals, NaNs
    uint64_t bits = rng();
    std::memcpy(&v, &bits, sizeof v);
    return v;
  };
  return {dt, edges, random, ref_float<T>, same_float<T>};
}

uint16_t ref_op16(const Format16& f, ReduceOp op, uint16_t ha, uint16_t hb) {
  const double a = f.decode(ha), b = f.decode(hb);
  const bool any_nan = std::isnan(a) || std::isnan(b);
  switch (op) {
    case ReduceOp::kSum: case ReduceOp::kAvg: return f.round(a + b);
    case ReduceOp::kProd: return f.round(a * b);
    case ReduceOp::kMin: return f.round(any_nan ? kNaN : a < b ? a : b);
    case ReduceOp::kMax: return f.round(any_nan ? kNaN : a > b ? a : b);
  }
  return 0;
}

ReduceCase<uint16_t> half_case(DType dt, const Format16& f, std::vector<uint16_t> edges) {
  auto random = [&f] {
    const uint16_t bits = static_cast<uint16_t>(rng());
    if (rng() % 2) return bits;  // any pattern
    // Exponent near 1.0 so that sums really round.
    const int bias = (1 << (f.exp_bits - 1)) - 1;
    const uint16_t e = static_cast<uint16_t>(bias - 2 + rng() % 5);
    return static_cast<uint16_t>((bits & 0x8000) | (e << f.mant_bits) |
                                 (bits & ((1 << f.mant_bits) - 1)));
  };
  auto same = [&f](uint16_t got, uint16_t want) {
    if (f.is_nan(want)) return f.is_nan(got) && (got & f.quiet_bit()) != 0;
    return got == want;
  };
  auto ref = [&f](ReduceOp op, uint16_t a, uint16_t b) { return ref_op16(f, op, a, b); };
  return {dt, edges, random, ref, same};
}

void test_reduce_all() {
  test_reduce_dtype(float_case<float>(DType::kFloat32));
  test_reduce_dtype(float_case<double>(DType::kFloat64));
  test_reduce_dtype(half_case(DType::kFloat16, g_f16,
                              {0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x4000,
                               0x3555, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0x7C01}));
  test_reduce_dtype(half_case(DType::kBFloat16, g_bf16,
                              {0x0000, 0x8000, 0x0001, 0x007F, 0x0080, 0x3F80, 0xBF80, 0x4000,
                               0x3EAB, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80, 0x7FC0, 0x7F81}));
  test_reduce_dtype(int_case<int8_t>(DType::kInt8));
  test_reduce_dtype(int_case<int16_t>(DType::kInt16));
  test_reduce_dtype(int_case<int32_t>(DType::kInt32));
  test_reduce_dtype(int_case<int64_t>(DType::kInt64));
  test_reduce_dtype(int_case<uint8_t>(DType::kUInt8));
  test_reduce_dtype(int_case<uint16_t>(DType::kUInt16));
  test_reduce_dtype(int_case<uint32_t>(DType::kUInt32));
  test_reduce_dtype(int_case<uint64_t>(DType::kUInt64));
}

// One element through reduce(), for readable known-value checks.
template <typename T>
T r1(DType dt, ReduceOp op, T a, T b) {
  T out;
  reduce(dt, op, &out, &a, &b, 1);
  return out;
}

void test_reduce_known_values() {
  using I8 = int8_t;
  const auto S = ReduceOp::kSum, P = ReduceOp::kProd, Mn = ReduceOp::kMin, Mx = ReduceOp::kMax;
  CHECK_EQ(r1<I8>(DType::kInt8, S, 127, 1), I8{-128});
  CHECK_EQ(r1<I8>(DType::kInt8, S, -128, -1), I8{127});
  CHECK_EQ(r1<I8>(DType::kInt8, P, -128, -1), I8{-128});
  CHECK_EQ(r1<I8>(DType::kInt8, P, 100, 3), I8{44});
  CHECK_EQ(r1<I8>(DType::kInt8, Mn, -5, 3), I8{-5});
  CHECK_EQ(r1<I8>(DType::kInt8, Mx, -5, -3), I8{-3});
  CHECK_EQ(r1<uint8_t>(DType::kUInt8, S, 255, 1), uint8_t{0});
  CHECK_EQ(r1<uint8_t>(DType::kUInt8, P, 16, 16), uint8_t{0});
  CHECK_EQ(r1<uint8_t>(DType::kUInt8, P, 200, 2), uint8_t{144});
  CHECK_EQ(r1<uint16_t>(DType::kUInt16, P, 65535, 65535), uint16_t{1});  // int-promotion trap
  CHECK_EQ(r1<int16_t>(DType::kInt16, Mn, -32768, 32767), int16_t{-32768});
  using L64 = std::numeric_limits<int64_t>;
  CHECK_EQ(r1<int64_t>(DType::kInt64, S, L64::max(), 1), L64::min());
  CHECK_EQ(r1<int64_t>(DType::kInt64, S, L64::min(), L64::min()), int64_t{0});
  CHECK_EQ(r1<int64_t>(DType::kInt64, P, L64::min(), -1), L64::min());
  CHECK_EQ(r1<int64_t>(DType::kInt64, P, L64::max(), L64::max()), int64_t{1});
  CHECK_EQ(r1<int64_t>(DType::kInt64, Mx, -7, -9), int64_t{-7});
  const uint64_t u64max = std::numeric_limits<uint64_t>::max();
  CHECK_EQ(r1<uint64_t>(DType::kUInt64, P, u64max, u64max), uint64_t{1});
  CHECK_EQ(r1<uint64_t>(DType::kUInt64, S, u64max, u64max), u64max - 1);
  CHECK_EQ(r1<float>(DType::kFloat32, ReduceOp::kAvg, 1.5f, 2.25f), 3.75f);  // avg sums
  CHECK_EQ(r1<float>(DType::kFloat32, Mn, -0.5f, -2.0f), -2.0f);
  // NaN propagates through min/max/sum from either side, in every float type.
  const float fnan = NAN;
  for (ReduceOp op : {Mn, Mx, S}) {
    CHECK(std::isnan(r1<float>(DType::kFloat32, op, fnan, 1.0f)));
    CHECK(std::isnan(r1<float>(DType::kFloat32, op, 1.0f, fnan)));
    CHECK(std::isnan(r1<double>(DType::kFloat64, op, 1.0, double(NAN))));
    CHECK(std::isnan(r1<double>(DType::kFloat64, op, double(NAN), -1.0)));
    CHECK(g_f16.is_nan(r1<uint16_t>(DType::kFloat16, op, 0x7E00, 0x3C00)));
    CHECK(g_f16.is_nan(r1<uint16_t>(DType::kFloat16, op, 0xFC00, 0x7E00)));
    CHECK(g_bf16.is_nan(r1<uint16_t>(DType::kBFloat16, op, 0x7FC0, 0x3F80)));
    CHECK(g_bf16.is_nan(r1<uint16_t>(DType::kBFloat16, op, 0x3F80, 0x7FC0)));
  }
  // float16 1 + 2^-11 would need 12 bits: computed in float32, rounded once (even).
  CHECK_EQ(r1<uint16_t>(DType::kFloat16, S, 0x3C00, 0x1000), uint16_t{0x3C00});
  CHECK_EQ(r1<uint16_t>(DType::kFloat16, S, 0x3C01, 0x1000), uint16_t{0x3C02});
  CHECK_EQ(r1<uint16_t>(DType::kFloat16, S, 0x7BFF, 0x7BFF), uint16_t{0x7C00});  // overflow
  CHECK_EQ(r1<uint16_t>(DType::kBFloat16, S, 0x3F80, 0x3B80), uint16_t{0x3F80});  // 1+2^-8
  CHECK_EQ(r1<uint16_t>(DType::kBFloat16, S, 0x3F81, 0x3B80), uint16_t{0x3F82});
}

// ---------------------------------------------------------------------------
// divide_in_place()
template <typename T>
std::vector<T> divided(DType dt, std::vector<T> v, uint32_t d) {
  divide_in_place(dt, v.data(), v.size(), d);
  return v;
}

template <typename T>
void test_divide_int_random(DType dt) {
  Tally t{std::string("divide ") + dtype_name(dt)};
  std::vector<T> v(1001);
  for (T& x : v) x = static_cast<T>(rng());
  v[0] = std::numeric_limits<T>::min();
  v[1] = std::numeric_limits<T>::max();
  for (uint32_t d : {1u, 2u, 3u, 7u, 8u, 100u, 4294967295u}) {
    const std::vector<T> got = divided(dt, v, d);
    for (size_t i = 0; i < v.size(); ++i) {
      // Exact in 128 bits, where C division truncates toward zero.
      using W = std::conditional_t<std::is_signed_v<T>, __int128, unsigned __int128>;
      const T want = static_cast<T>(static_cast<W>(v[i]) / static_cast<W>(d));
      t.expect(got[i] == want, 
               [&] { return "d=" + std::to_string(d) + " i=" + std::to_string(i); });
    }
  }
  t.finish();
}

void test_divide_16(DType dt, const Format16& f) {
  Tally t{std::string("divide ") + dtype_name(dt)};
  std::vector<uint16_t> v(65536);
  for (uint32_t i = 0; i < 65536; ++i) v[i] = static_cast<uint16_t>(i);
  for (uint32_t d : {1u, 2u, 3u, 7u, 100u}) {
    const std::vector<uint16_t> got = divided(dt, v, d);
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t want = d == 1 ? v[i] : f.round(f.decode(v[i]) / d);
      const bool ok = f.is_nan(v[i]) ? f.is_nan(got[i]) : got[i] == want;
      t.expect(ok, 
               [&] { return "d=" + std::to_string(d) + " " + hex(v[i]) + " -> " + hex(got[i]); });
    }
  }
  t.finish();
}

void test_divide() {
  using I8 = int8_t;
  CHECK(divided<I8>(DType::kInt8, {-7, 7, -128, 127, -1, 0}, 2) ==
        (std::vector<I8>{-3, 3, -64, 63, 0, 0}));
  CHECK(divided<I8>(DType::kInt8, {-128, -127, 5}, 3) == (std::vector<I8>{-42, -42, 1}));
  CHECK(divided<I8>(DType::kInt8, {-128, 127}, 128) == (std::vector<I8>{-1, 0}));
  CHECK(divided<I8>(DType::kInt8, {-128, 127}, 200) == (std::vector<I8>{0, 0}));
  CHECK(divided<uint8_t>(DType::kUInt8, {255, 3}, 2) == (std::vector<uint8_t>{127, 1}));
  const int64_t i64min = std::numeric_limits<int64_t>::min();
  CHECK(divided<int64_t>(DType::kInt64, {i64min, -9}, 2) ==
        (std::vector<int64_t>{i64min / 2, -4}));
  CHECK_EQ(divided<int64_t>(DType::kInt64, {i64min}, 4294967295u)[0], int64_t{-2147483648LL});
  CHECK_EQ(divided<uint64_t>(DType::kUInt64, {~0ULL}, 3)[0], uint64_t{6148914691236517205ULL});
  CHECK(divided<int32_t>(DType::kInt32, {-5, 5}, 1) == (std::vector<int32_t>{-5, 5}));
  test_divide_int_random<int8_t>(DType::kInt8);
  test_divide_int_random<int16_t>(DType::kInt16);
  test_divide_int_random<int32_t>(DType::kInt32);
  test_divide_int_random<int64_t>(DType::kInt64);
  test_divide_int_random<uint8_t>(DType::kUInt8);
  test_divide_int_random<uint16_t>(DType::kUInt16);
  test_divide_int_random<uint32_t>(DType::kUInt32);
  test_divide_int_random<uint64_t>(DType::kUInt64);

  CHECK(divided<float>(DType::kFloat32, {6.0f, 7.0f, -9.0f, 0.0f}, 3) ==
        (std::vector<float>{2.0f, 7.0f / 3.0f, -3.0f, 0.0f}));
  CHECK(divided<float>(DType::kFloat32, {1.0f}, 3)[0] == 1.0f / 3.0f);
  CHECK(divided<double>(DType::kFloat64, {6.0, 1.0}, 3) == (std::vector<double>{2.0, 1.0 / 3.0}));
  CHECK(std::isnan(divided<float>(DType::kFloat32, {NAN}, 4)[0]));
  CHECK(std::isinf(divided<double>(DType::kFloat64, {HUGE_VAL}, 4)[0]));
  // bfloat16 1/3 = 0.0101010101..b: round to nearest gives 0x3EAB, truncation 0x3EAA.
  CHECK_EQ(divided<uint16_t>(DType::kBFloat16, {0x3F80}, 3)[0], uint16_t{0x3EAB});
  CHECK_EQ(divided<uint16_t>(DType::kBFloat16, {0x4000}, 3)[0], uint16_t{0x3F2B});  // 2/3
  CHECK_EQ(divided<uint16_t>(DType::kBFloat16, {0x40C0}, 3)[0], uint16_t{0x4000});  // 6/3
  CHECK_EQ(divided<uint16_t>(DType::kFloat16, {0x3C00}, 3)[0], uint16_t{0x3555});
  CHECK_EQ(divided<uint16_t>(DType::kFloat16, {0x4600}, 3)[0], uint16_t{0x4000});  // 6/3
  test_divide_16(DType::kFloat16, g_f16);
  test_divide_16(DType::kBFloat16, g_bf16);

  Tally t{"divide float32 random"};
  std::vector<float> v(1000);
  for (float& x : v) x = std::uniform_real_distribution<float>(-1e6f, 1e6f)(rng);
  const std::vector<float> got = divided(DType::kFloat32, v, 7);
  for (size_t i = 0; i < v.size(); ++i) {
    t.expect(got[i] == v[i] / 7.0f, [&] { return std::to_string(i); });
  }
  t.finish();
  divide_in_place(DType::kInt32, nullptr, 0, 3);  // count 0 touches nothing
}

// ---------------------------------------------------------------------------
void bench_float32_sum() {
  const size_t n = size_t{64} << 20;  // 64 Mi elements, 256 MiB per buffer
  std::vector<float> a(n, 1.0f), b(n, 2.0f), dst(n, 0.0f);
  auto run = [&](float* out, const char* label) {
    double best = 1e9;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      reduce(DType::kFloat32, ReduceOp::kSum, out, a.data(), b.data(), n);
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - t0;
      best = std::min(best, took.count());
    }
    const double bytes = 3.0 * n * sizeof(float);  // read a, read b, write dst
    std::printf("bench float32 sum %s: %.1f ms, %.1f GB/s (3 streams), %.1f GB/s (per input)\n",
                label, best * 1e3, bytes / best / 1e9, n * sizeof(float) / best / 1e9);
  };
  run(dst.data(), "dst separate");
  run(a.data(), "dst == a");
}

}  // namespace

int main(int argc, char** argv) {
  g_f16.build_table();
  g_bf16.build_table();
  test_known_conversions();
  for (const Format16* f : {&g_f16, &g_bf16}) {
    test_all_patterns(*f);
    test_midpoints(*f);
    test_random_floats(*f);
  }
  test_reduce_known_values();
  test_reduce_all();
  test_divide();
  if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) bench_float32_sum();
  std::printf("bulk checks covered %ld element cases\n", g_bulk_cases.load());
  return check_summary("test_reduce_kernels");
}
