// Element-wise reduction kernels. Structure: reduce() switches on dtype, then
// reduce_as<Codec>() switches on op, and one templated loop does the work.
//
// A Codec says how elements are stored and in which type they are computed:
// natives compute in place; float16/bfloat16 widen to float32, compute, and
// round once back to 16 bits. For sum/prod/divide of two 16-bit values that
// double rounding (exact -> float32 -> 16 bit) equals a single correct
// rounding, since float32 has at least 2p+2 bits of either format's p.
//
// The loops are plain indexed loops with no __restrict__ (dst may alias a or
// b), so g++ -O3 vectorises them behind a runtime overlap check. Pointers are
// assumed aligned to the element size, as for any typed buffer.
#include "collectives/reduce_kernels.h"

#include <type_traits>

#include "common/half.h"

namespace pccl {
namespace {

template <typename T>
struct Native {
  using Storage = T;
  using Compute = T;
  static T widen(T v) { return v; }
  static T narrow(T v) { return v; }
};

struct Half {
  using Storage = uint16_t;
  using Compute = float;
  static float widen(uint16_t v) { return f16_to_f32(v); }
  static uint16_t narrow(float v) { return f32_to_f16(v); }
};

struct BFloat {
  using Storage = uint16_t;
  using Compute = float;
  static float widen(uint16_t v) { return bf16_to_f32(v); }
  static uint16_t narrow(float v) { return f32_to_bf16(v); }
};

// Integer arithmetic is done in an unsigned type (wraps by definition) that is
// at least as wide as unsigned int, because uint8/uint16 operands would
// otherwise promote to signed int, where e.g. 65535 * 65535 overflows (UB).
// Converting back to a narrower signed type is modular (g++ defines it; C++20 mandates it).
template <typename T>
using WrapT = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, std::make_unsigned_t<T>>;

struct Add {
  template <typename T>
  static T run(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(static_cast<WrapT<T>>(a) + static_cast<WrapT<T>>(b));
    } else {
      return a + b;
    }
  }
};

struct Mul {
  template <typename T>
  static T run(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(static_cast<WrapT<T>>(a) * static_cast<WrapT<T>>(b));
    } else {
      return a * b;
    }
  }
};

// Float min/max propagate NaN (like jnp.minimum/maximum and IEEE 754-2019
// minimum/maximum): a NaN on any rank must not silently vanish from the
// result. Written as compare+select so it vectorises. On ties, including
// -0 vs +0, the second operand b is returned.
struct Min {
  template <typename T>
  static T run(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      return (a < b || a != a) ? a : b;
    } else {
      return a < b ? a : b;
    }
  }
};

struct Max {
  template <typename T>
  static T run(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      return (a > b || a != a) ? a : b;
    } else {
      return a > b ? a : b;
    }
  }
};

template <typename C, typename Op>
void apply(void* dst, const void* a, const void* b, size_t count) {
  using S = typename C::Storage;
  using V = typename C::Compute;
  S* d = static_cast<S*>(dst);
  const S* x = static_cast<const S*>(a);
  const S* y = static_cast<const S*>(b);
  for (size_t i = 0; i < count; ++i) {
    d[i] = C::narrow(Op::template run<V>(C::widen(x[i]), C::widen(y[i])));
  }
}

template <typename C>
void reduce_as(ReduceOp op, void* dst, const void* a, const void* b, size_t count) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: return apply<C, Add>(dst, a, b, count);
    case ReduceOp::kMin: return apply<C, Min>(dst, a, b, count);
    case ReduceOp::kMax: return apply<C, Max>(dst, a, b, count);
    case ReduceOp::kProd: return apply<C, Mul>(dst, a, b, count);
  }
}

// Floats divide in their own precision; signed integers go through int64 so
// that any uint32 divisor is representable, and C division truncates toward 0.
template <typename T>
T quotient(T v, uint32_t divisor) {
  if constexpr (std::is_floating_point_v<T>) {
    return v / static_cast<T>(divisor);
  } else if constexpr (std::is_signed_v<T>) {
    return static_cast<T>(static_cast<int64_t>(v) / static_cast<int64_t>(divisor));
  } else {
    return static_cast<T>(static_cast<uint64_t>(v) / divisor);
  }
}

template <typename C>
void divide_as(void* data, size_t count, uint32_t divisor) {
  using S = typename C::Storage;
  using V = typename C::Compute;
  S* d = static_cast<S*>(data);
  for (size_t i = 0; i < count; ++i) d[i] = C::narrow(quotient<V>(C::widen(d[i]), divisor));
}

}  // namespace

void reduce(DType dtype, ReduceOp op, void* dst, const void* a, const void* b, size_t count) {
  switch (dtype) {
    case DType::kFloat32: return reduce_as<Native<float>>(op, dst, a, b, count);
    case DType::kFloat64: return reduce_as<Native<double>>(op, dst, a, b, count);
    case DType::kFloat16: return reduce_as<Half>(op, dst, a, b, count);
    case DType::kBFloat16: return reduce_as<BFloat>(op, dst, a, b, count);
    case DType::kInt8: return reduce_as<Native<int8_t>>(op, dst, a, b, count);
    case DType::kInt16: return reduce_as<Native<int16_t>>(op, dst, a, b, count);
    case DType::kInt32: return reduce_as<Native<int32_t>>(op, dst, a, b, count);
    case DType::kInt64: return reduce_as<Native<int64_t>>(op, dst, a, b, count);
    case DType::kUInt8: return reduce_as<Native<uint8_t>>(op, dst, a, b, count);
    case DType::kUInt16: return reduce_as<Native<uint16_t>>(op, dst, a, b, count);
    case DType::kUInt32: return reduce_as<Native<uint32_t>>(op, dst, a, b, count);
    case DType::kUInt64: return reduce_as<Native<uint64_t>>(op, dst, a, b, count);
  }
}

void divide_in_place(DType dtype, void* data, size_t count, uint32_t divisor) {
  // Dividing by 1 is the identity; 0 violates the contract (divisor >= 1) and
  // is ignored rather than trapping on integer division by zero.
  if (divisor <= 1) return;
  switch (dtype) {
    case DType::kFloat32: return divide_as<Native<float>>(data, count, divisor);
    case DType::kFloat64: return divide_as<Native<double>>(data, count, divisor);
    case DType::kFloat16: return divide_as<Half>(data, count, divisor);
    case DType::kBFloat16: return divide_as<BFloat>(data, count, divisor);
    case DType::kInt8: return divide_as<Native<int8_t>>(data, count, divisor);
    case DType::kInt16: return divide_as<Native<int16_t>>(data, count, divisor);
    case DType::kInt32: return divide_as<Native<int32_t>>(data, count, divisor);
    case DType::kInt64: return divide_as<Native<int64_t>>(data, count, divisor);
    case DType::kUInt8: return divide_as<Native<uint8_t>>(data, count, divisor);
    case DType::kUInt16: return divide_as<Native<uint16_t>>(data, count, divisor);
    case DType::kUInt32: return divide_as<Native<uint32_t>>(data, count, divisor);
    case DType::kUInt64: return divide_as<Native<uint64_t>>(data, count, divisor);
  }
}

}  // namespace pccl
