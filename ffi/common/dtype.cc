#include "common/dtype.h"

namespace pccl {

bool dtype_valid(uint8_t raw) { return raw < kNumDTypes; }
bool reduce_op_valid(uint8_t raw) { return raw < kNumReduceOps; }

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kInt8: case DType::kUInt8: return 1;
    case DType::kFloat16: case DType::kBFloat16: case DType::kInt16: case DType::kUInt16: return 2;
    case DType::kFloat32: case DType::kInt32: case DType::kUInt32: return 4;
    case DType::kFloat64: case DType::kInt64: case DType::kUInt64: return 8;
  }
  return 0;
}

bool dtype_is_float(DType t) {
  return t == DType::kFloat32 || t == DType::kFloat64 || t == DType::kFloat16 ||
         t == DType::kBFloat16;
}

const char* dtype_name(DType t) {
  static const char* const names[kNumDTypes] = {
      "float32", "float64", "float16", "bfloat16", "int8",   "int16",
      "int32",   "int64",   "uint8",   "uint16",   "uint32", "uint64"};
  auto i = static_cast<uint8_t>(t);
  return i < kNumDTypes ? names[i] : "invalid";
}

const char* reduce_op_name(ReduceOp op) {
  static const char* const names[kNumReduceOps] = {"sum", "avg", "min", "max", "prod"};
  auto i = static_cast<uint8_t>(op);
  return i < kNumReduceOps ? names[i] : "invalid";
}

}  // namespace pccl
