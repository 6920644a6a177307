// One entry per wire format (quantization.h documents the formats): the
// encoders and decoders of each, for the dtypes the format applies to. They
// run inside the caller's ScopedDefaultFpEnv (collectives/quantization.cc),
// in translation units of their own, so no floating-point operation of
// theirs can be scheduled outside it.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/dtype.h"

namespace pccl::quant {

// minmax_uint8 (minmax_uint8.cc) and zero_point_uint8 (zero_point_uint8.cc):
// a header of 2 metadata values (8 or 16 bytes), then one code per element.
size_t uint8_header_bytes(DType dtype);
void encode_minmax_uint8(DType dtype, const void* src, size_t n, uint8_t* dst);
void decode_minmax_uint8(DType dtype, const uint8_t* src, size_t n, void* dst);
void encode_zero_point_uint8(DType dtype, const void* src, size_t n, uint8_t* dst);
void decode_zero_point_uint8(DType dtype, const uint8_t* src, size_t n, void* dst);
// bfloat16 (bfloat16.cc): 2 bytes per element, no header.
void encode_bfloat16(DType dtype, const void* src, size_t n, uint8_t* dst);
void decode_bfloat16(DType dtype, const uint8_t* src, size_t n, void* dst);

}  // namespace pccl::quant
