// Inner loops shared by CONV_2D and FULLY_CONNECTED (internal, not API).
//
// Both kernels compute, for every output position, dot products of one input
// "patch" (the receptive field, K = KH*KW*C_per_group values; for fully
// connected the K-vector of one batch row) with K-long filter rows. Instead of
// re-reading (and, for sub-byte tensors, re-decoding) the packed input for
// every output channel, the patch is unpacked once into a small int16 stack
// buffer holding (x + input_offset), with 0 for padding positions, and every
// output channel's filter row is then streamed against it:
//
//   acc[oc] = sum_k patch[k] * w[oc*K + k]          (mod 2^32)
//
// This is TFLM's sum of (x - input_zp) * w over the valid positions: padding
// contributes 0 either way, and int32 wrap-around sums do not depend on the
// order of summation, so the result is bit-exact with the reference loop.
// Sub-byte tensors are decoded a whole byte (2 int4 / 4 int2 values) per
// load between a partial head and tail.
//
// The loop nests are not templated on the bit widths: the per-width work sits
// in the out-of-line Unpack*/Dot* functions below, picked once per call
// through a function pointer (one loop nest per kernel instead of nine keeps
// the Cortex-M code small; an indirect call per filter row or input run costs
// nothing measurable next to the K multiply-accumulates it covers).
//
// Patches longer than kPatchChunk are processed in chunks, with kOcTile
// output channels accumulated per pass. Stack use: kPatchChunk int16 plus
// kOcTile uint32 (640 bytes with the defaults). Both are overridable at build
// time: `make asan-test-tiles` uses tiny values so that the small shapes of
// the test driver go through every chunk and alignment path.
#ifndef TFQ_TINY_TFLM_EXT_CORE_TFQ_PATCH_H_
#define TFQ_TINY_TFLM_EXT_CORE_TFQ_PATCH_H_

#include <cstdint>

#include "tfq_packing.h"

#ifndef TFQ_PATCH_CHUNK
#define TFQ_PATCH_CHUNK 256
#endif
#ifndef TFQ_OC_TILE
#define TFQ_OC_TILE 32
#endif

// The per-width functions are called through pointers and kept out of line
// (inlined into a kernel's loop nest, GCC 12 spilled the dot product's
// accumulator and pointers to the stack).
#if defined(__GNUC__) || defined(__clang__)
#define TFQ_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define TFQ_NOINLINE __declspec(noinline)
#else
#define TFQ_NOINLINE
#endif

namespace tfq {
namespace internal {

constexpr int32_t kPatchChunk = TFQ_PATCH_CHUNK;
constexpr int32_t kOcTile = TFQ_OC_TILE;
static_assert(kPatchChunk >= 1 && kPatchChunk <= 65536,
              "patch chunk: int16 values on the stack");
static_assert(kOcTile >= 1, "output channel tile");

// Low nibble of a byte, sign-extended (moved to the top of a 32-bit word and
// shifted back down arithmetically).
inline int32_t LowNibble(int32_t byte) {
  return static_cast<int32_t>(static_cast<uint32_t>(byte) << 28) >> 28;
}

// dst[i] = element (start + i) of a packed tensor + offset, i in [0, n).
// |x + offset| <= 255 (validated zero points), so int16 holds it. Sub-byte
// tensors are decoded a whole byte at a time between a partial head and tail.
template <int kBits>
inline void UnpackWithOffset(const uint8_t* data, int32_t start, int32_t n,
                             int32_t offset, int16_t* dst);

template <>
TFQ_NOINLINE inline void UnpackWithOffset<8>(const uint8_t* data,
                                             int32_t start, int32_t n,
                                             int32_t offset, int16_t* dst) {
  const int8_t* src = reinterpret_cast<const int8_t*>(data) + start;
  for (int16_t* const end = dst + n; dst < end; ++dst, ++src) {
    *dst = static_cast<int16_t>(*src + offset);
  }
}

template <>
TFQ_NOINLINE inline void UnpackWithOffset<4>(const uint8_t* data,
                                             int32_t start, int32_t n,
                                             int32_t offset, int16_t* dst) {
  int16_t* const end = dst + n;
  if ((start & 1) != 0 && dst < end) {
    *dst++ = static_cast<int16_t>(LoadPacked<4>(data, start++) + offset);
  }
  const int8_t* src = reinterpret_cast<const int8_t*>(data) + (start >> 1);
  for (; end - dst >= 2; dst += 2, ++src) {
    const int32_t byte = *src;
    dst[0] = static_cast<int16_t>(LowNibble(byte) + offset);
    dst[1] = static_cast<int16_t>((byte >> 4) + offset);
  }
  if (dst < end) *dst = static_cast<int16_t>(LowNibble(*src) + offset);
}

template <>
TFQ_NOINLINE inline void UnpackWithOffset<2>(const uint8_t* data,
                                             int32_t start, int32_t n,
                                             int32_t offset, int16_t* dst) {
  int16_t* const end = dst + n;
  for (; (start & 3) != 0 && dst < end; ++start, ++dst) {
    *dst = static_cast<int16_t>(LoadPacked<2>(data, start) + offset);
  }
  const uint8_t* src = data + (start >> 2);
  for (; end - dst >= 4; dst += 4, ++src) {
    // Each pair moved to the top of a 32-bit word, then sign-extended down.
    const uint32_t byte = *src;
    dst[0] = static_cast<int16_t>(
        (static_cast<int32_t>(byte << 30) >> 30) + offset);
    dst[1] = static_cast<int16_t>(
        (static_cast<int32_t>(byte << 28) >> 30) + offset);
    dst[2] = static_cast<int16_t>(
        (static_cast<int32_t>(byte << 26) >> 30) + offset);
    dst[3] = static_cast<int16_t>(
        (static_cast<int32_t>(byte << 24) >> 30) + offset);
  }
  for (int32_t j = 0; dst < end; ++j, ++dst) {  // tail: < 4 in the last byte
    const uint32_t byte = *src;
    *dst = static_cast<int16_t>(
        (static_cast<int32_t>(byte << (30 - 2 * j)) >> 30) + offset);
  }
}

inline void FillZero(int16_t* dst, int32_t n) {
  for (int32_t i = 0; i < n; ++i) dst[i] = 0;
}

// sum_{i<n} patch[i] * w[start + i] (mod 2^32), w a packed kWBits tensor.
template <int kWBits>
uint32_t DotPatch(const int16_t* patch, const uint8_t* w, int32_t start,
                  int32_t n);

template <>
TFQ_NOINLINE inline uint32_t DotPatch<8>(const int16_t* patch,
                                         const uint8_t* w, int32_t start,
                                         int32_t n) {
  const int8_t* wp = reinterpret_cast<const int8_t*>(w) + start;
  const int16_t* const quad_end = patch + (n & ~3);
  const int16_t* const end = patch + n;
  uint32_t acc = 0;
  // Pointer-walking loops: int32 indices would be re-sign-extended on every
  // access under -fwrapv. Four products summed in int32 cannot overflow
  // (|p| <= 255, |w| <= 128).
  for (; patch < quad_end; patch += 4, wp += 4) {
    acc += static_cast<uint32_t>(patch[0] * wp[0] + patch[1] * wp[1] +
                                 patch[2] * wp[2] + patch[3] * wp[3]);
  }
  for (; patch < end; ++patch, ++wp) {
    acc += static_cast<uint32_t>(*patch * *wp);
  }
  return acc;
}

template <>
TFQ_NOINLINE inline uint32_t DotPatch<4>(const int16_t* patch,
                                         const uint8_t* w, int32_t start,
                                         int32_t n) {
  uint32_t acc = 0;
  int32_t i = 0;
  if (start & 1) {  // odd start: the first weight is a high nibble
    acc += static_cast<uint32_t>(patch[0] * LoadPacked<4>(w, start));
    i = 1;
  }
  const int8_t* wp = reinterpret_cast<const int8_t*>(w) + ((start + i) >> 1);
  const int16_t* p = patch + i;
  const int16_t* const quad_end = p + ((n - i) & ~3);
  const int16_t* const pair_end = p + ((n - i) & ~1);
  for (; p < quad_end; p += 4, wp += 2) {  // two bytes = four weights
    const int32_t b0 = wp[0];  // sign-extended: b >> 4 is the high nibble
    const int32_t b1 = wp[1];
    acc += static_cast<uint32_t>(p[0] * LowNibble(b0) + p[1] * (b0 >> 4) +
                                 p[2] * LowNibble(b1) + p[3] * (b1 >> 4));
  }
  if (p < pair_end) {
    const int32_t b0 = *wp++;
    acc += static_cast<uint32_t>(p[0] * LowNibble(b0) + p[1] * (b0 >> 4));
    p += 2;
  }
  if (p < patch + n) {  // one trailing low nibble
    acc += static_cast<uint32_t>(*p * LowNibble(*wp));
  }
  return acc;
}

template <>
TFQ_NOINLINE inline uint32_t DotPatch<2>(const int16_t* patch,
                                         const uint8_t* w, int32_t start,
                                         int32_t n) {
  uint32_t acc = 0;
  int32_t i = 0;
  for (; i < n && ((start + i) & 3) != 0; ++i) {  // up to a byte boundary
    acc += static_cast<uint32_t>(patch[i] * LoadPacked<2>(w, start + i));
  }
  const uint8_t* wp = w + ((start + i) >> 2);
  const int16_t* p = patch + i;
  const int16_t* const quad_end = p + ((n - i) & ~3);
  for (; p < quad_end; p += 4, ++wp) {
    // Each pair moved to the top of a 32-bit word, then sign-extended down.
    const uint32_t byte = *wp;
    const int32_t w0 = static_cast<int32_t>(byte << 30) >> 30;
    const int32_t w1 = static_cast<int32_t>(byte << 28) >> 30;
    const int32_t w2 = static_cast<int32_t>(byte << 26) >> 30;
    const int32_t w3 = static_cast<int32_t>(byte << 24) >> 30;
    acc += static_cast<uint32_t>(p[0] * w0 + p[1] * w1 + p[2] * w2 + p[3] * w3);
  }
  const int32_t done = static_cast<int32_t>(p - patch);
  for (int32_t j = done; j < n; ++j) {
    acc += static_cast<uint32_t>(patch[j] * LoadPacked<2>(w, start + j));
  }
  return acc;
}

using UnpackFn = void (*)(const uint8_t* data, int32_t start, int32_t n,
                          int32_t offset, int16_t* dst);
using DotFn = uint32_t (*)(const int16_t* patch, const uint8_t* w,
                           int32_t start, int32_t n);

// bits validated (2, 4 or 8) by the caller.
inline UnpackFn UnpackFor(int32_t bits) {
  return bits == 8 ? UnpackWithOffset<8>
                   : (bits == 4 ? UnpackWithOffset<4> : UnpackWithOffset<2>);
}
inline DotFn DotFor(int32_t bits) {
  return bits == 8 ? DotPatch<8> : (bits == 4 ? DotPatch<4> : DotPatch<2>);
}

// For output channels oc in [oc_begin, oc_end): acc = sum_k patch(k) *
// w[oc * K + k] with w a packed filter, then emit(oc, acc). gather(k0, n, dst)
// must write patch values k0 .. k0+n-1 to dst (n <= kPatchChunk).
template <typename Gather, typename Emit>
inline void PatchDotProducts(int32_t K, int32_t oc_begin, int32_t oc_end,
                             const uint8_t* w, DotFn dot, Gather&& gather,
                             Emit&& emit) {
  int16_t patch[kPatchChunk];
  uint32_t acc[kOcTile];
  const bool one_chunk = K <= kPatchChunk;  // gathered once, reused by tiles
  for (int32_t oc0 = oc_begin; oc0 < oc_end; oc0 += kOcTile) {
    const int32_t n_oc = oc_end - oc0 < kOcTile ? oc_end - oc0 : kOcTile;
    for (int32_t t = 0; t < n_oc; ++t) acc[t] = 0;
    for (int32_t k0 = 0; k0 < K; k0 += kPatchChunk) {
      const int32_t n = K - k0 < kPatchChunk ? K - k0 : kPatchChunk;
      if (!one_chunk || oc0 == oc_begin) gather(k0, n, patch);
      for (int32_t t = 0; t < n_oc; ++t) {
        acc[t] += dot(patch, w, (oc0 + t) * K + k0, n);
      }
    }
    for (int32_t t = 0; t < n_oc; ++t) emit(oc0 + t, acc[t]);
  }
}

}  // namespace internal
}  // namespace tfq

#endif  // TFQ_TINY_TFLM_EXT_CORE_TFQ_PATCH_H_
