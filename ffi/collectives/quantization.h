// On-the-wire quantization codecs for the ring all-reduce.
//
// A codec turns one CHUNK (a contiguous range of `count` elements of a
// floating dtype) into a self-contained byte string and back. In the ring's
// reduce-scatter every hop decodes the incoming partial sum, adds its own
// contribution and re-encodes; the segment owner encodes the final value for
// the all-gather and replaces its own copy by decode(encode(final)), so every
// peer ends with the same bytes.
//
// Guarantees (tested in ffi/tests/test_quantization.cc):
//  - Deterministic: the output bytes depend only on the input bytes (never on
//    threads, alignment, uninitialised memory, or what was in dst). Both
//    directions run with the default floating-point environment
//    (round-to-nearest, no flush-to-zero / denormals-are-zero, traps masked)
//    whatever the caller's thread has set (the mode is saved and restored), and
//    the arithmetic is written so that FMA contraction cannot change a result.
//  - Self-contained: a chunk's metadata is inline at the front of its encoding.
//  - Stable: encode(decode(encode(x))) == encode(x) byte for byte, for every
//    input (NaN/inf included), so a decoded chunk re-encodes to the same bytes.
//  - decode_chunk writes exactly `count` elements and never has undefined
//    behaviour, whatever the bytes (corrupt metadata gives garbage, not a crash).
//
// Formats. F is the metadata type: float32 for float32/float16/bfloat16
// inputs (exact for all three), float64 for float64 inputs. All multi-byte
// fields are little-endian (the engine's native order).
//
//  kMinMaxUInt8      [F min][F max][count x uint8 code]          (8 or 16 bytes of header)
//     code = round((v - min) / (max - min) * 255); decode(code) = the input-dtype
//     value nearest min + code * (max - min) / 255, clamped to [min, max]; code 0
//     decodes to exactly min and 255 to exactly max. min == max: all codes 0,
//     every element decodes to min. |decode(encode(v)) - v| <= (max - min)/510
//     plus a few units in the last place of max(|min|, |max|) (the float32 /
//     float64 arithmetic, and the rounding of the result to the input dtype;
//     for bfloat16 input that last term is 2^-8 relative). (For a few degenerate
//     chunks whose range spans fewer representable values than 256 codes, several
//     codes decode to the same value and the encoder emits the smallest of them.)
//
//  kZeroPointUInt8   [F scale][uint8 zp][zero padding to 2*sizeof(F)][count x uint8 code]
//     Asymmetric affine: decode(code) = (code - zp) * scale, so 0 is exact
//     (code zp). code = clamp(round(v / scale) + zp, 0, 255), except that the
//     chunk's minimum rounds down and its maximum rounds up to the grid (see
//     quant/zero_point_uint8.cc: this is what makes re-encoding reproduce scale and zp).
//     scale is the smallest value of a fixed discrete set (numbers with at most
//     16 significant bits for float32 input, 43 for float64, 3 for float16, and
//     powers of two for bfloat16) such that [min(x, 0), max(x, 0)] fits in the
//     256-code grid; every grid value is then exact in the input dtype.
//     |error| <= scale/2 (plus the same arithmetic slop as minmax), and < scale
//     for the chunk's minimum and maximum, where scale <= (max(x,0) - min(x,0))
//     / 254 * (1 + 2^-15) for float32 (1 + 2^-42 float64, * 1.25 float16, * 2
//     bfloat16), plus the dtype's smallest subnormal (the set's granularity).
//     A constant chunk decodes exactly. Grid values beyond the dtype's range
//     saturate at its largest finite value.
//
//  kBFloat16         [count x uint16 bfloat16]                   (no header)
//     Round to nearest even (float64 input is rounded once, correctly, not via
//     float32). Finite values beyond bfloat16's range become +-inf, as with any
//     RNE conversion, except for float16 input: decoding to float16 saturates
//     finite values at +-65504, so a finite float16 never turns into inf (and
//     the round trip stays stable: 65504 encodes as 65536). For a bfloat16
//     input the codec is the identity (see quantization_applies).
//
// Non-finite values (NaN, +inf, -inf):
//  - minmax / zero_point: a chunk containing any NaN or inf is "poisoned": its
//    metadata fields are all the canonical quiet NaN, its codes are all 0, and
//    EVERY element of the chunk decodes to the canonical quiet NaN of the dtype.
//    So a non-finite value anywhere never disappears in transit (loss scalers
//    and isfinite() checks still see it), and the rule is trivially stable.
//  - bfloat16: element-wise. NaN -> canonical quiet NaN (sign and payload
//    dropped; the bfloat16-of-bfloat16 identity keeps them), +-inf -> +-inf.
//
// Empty chunks: count == 0 encodes to 0 bytes (no header) and decodes nothing.
//
// When quantization_applies(q, dtype) is false (kNone, an integer dtype, or
// kBFloat16 of a bfloat16 input) the "codec" is a raw copy of the
// count * dtype_size(dtype) input bytes, so callers may use one code path.
//
// Pointers: the typed side (encode's src, decode's dst) must be aligned to the
// element size, as any typed buffer; the encoded side may have any alignment.
// Input and output must not overlap. No allocation; at most a few KiB of stack.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/dtype.h"

namespace pccl {

// The numeric values travel on the wire: never renumber.
enum class Quantization : uint8_t { kNone = 0, kMinMaxUInt8 = 1, kZeroPointUInt8 = 2, kBFloat16 = 3 };
constexpr int kNumQuantizations = 4;

bool quantization_valid(uint8_t raw);
// "none", "minmax_uint8", "zero_point_uint8", "bfloat16" ("invalid" otherwise).
const char* quantization_name(Quantization q);

// True when q actually transforms data of this dtype: minmax/zero_point on the
// four floating dtypes, bfloat16 on float32/float64/float16.
bool quantization_applies(Quantization q, DType dtype);

// Exact size of one encoded chunk of `count` elements, metadata included.
size_t encoded_bytes(Quantization q, DType dtype, size_t count);

// src: count elements of dtype; dst: encoded_bytes(q, dtype, count) bytes.
void encode_chunk(Quantization q, DType dtype, const void* src, size_t count, uint8_t* dst);

// src: encoded_bytes(q, dtype, count) bytes; dst: count elements of dtype.
void decode_chunk(Quantization q, DType dtype, const uint8_t* src, size_t count, void* dst);

}  // namespace pccl
