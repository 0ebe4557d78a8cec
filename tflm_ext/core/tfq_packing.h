// Packed b-bit tensors (b in {2, 4, 8}) and their element accessors.
//
// Layout (TFLite schema, INT4/INT2): elements are stored densely along the
// flattened C-order buffer, lowest bits first. int8: one element per byte.
// int4: two per byte, the first element in the low nibble. int2: four per
// byte, the first element in the least significant pair. Values are signed
// two's complement over the full range [-2^(b-1), 2^(b-1)-1].
//
// The accessors are templates on the bit width so that the int8 inner loops
// are a plain byte load and the sub-byte ones a load, a shift and a sign
// extension; the runtime-bits versions are for code outside inner loops.
#ifndef TFQ_TINY_TFLM_EXT_CORE_TFQ_PACKING_H_
#define TFQ_TINY_TFLM_EXT_CORE_TFQ_PACKING_H_

#include <cstddef>
#include <cstdint>

#include "tfq_status.h"

namespace tfq {

inline bool IsSupportedBits(int32_t bits) {
  return bits == 2 || bits == 4 || bits == 8;
}

// Smallest / largest value of a signed `bits`-bit integer (full range).
inline int32_t QMin(int32_t bits) { return -(1 << (bits - 1)); }
inline int32_t QMax(int32_t bits) { return (1 << (bits - 1)) - 1; }

// Bytes needed to hold `count` packed elements of `bits` bits.
inline uint64_t PackedBytes(uint64_t count, int32_t bits) {
  return (count * static_cast<uint64_t>(bits) + 7u) / 8u;
}

// ---- compile-time bit width -------------------------------------------------

template <int kBits>
inline int32_t LoadPacked(const uint8_t* data, int32_t index);

template <>
inline int32_t LoadPacked<8>(const uint8_t* data, int32_t index) {
  return static_cast<int8_t>(data[index]);
}

template <>
inline int32_t LoadPacked<4>(const uint8_t* data, int32_t index) {
  const uint32_t byte = data[index >> 1];
  // Move the wanted nibble to the top of a byte, then sign-extend it down.
  const uint32_t up = (index & 1) ? byte : (byte << 4);
  return static_cast<int32_t>(static_cast<int8_t>(static_cast<uint8_t>(up))) >>
         4;
}

template <>
inline int32_t LoadPacked<2>(const uint8_t* data, int32_t index) {
  const uint32_t byte = data[index >> 2];
  const uint32_t up = byte << (6 - ((index & 3) << 1));
  return static_cast<int32_t>(static_cast<int8_t>(static_cast<uint8_t>(up))) >>
         6;
}

template <int kBits>
inline void StorePacked(uint8_t* data, int32_t index, int32_t value) {
  if (kBits == 8) {
    data[index] = static_cast<uint8_t>(value);
  } else {
    constexpr int kPerByte = 8 / kBits;
    constexpr uint32_t kMask = (1u << kBits) - 1u;
    const int shift = (index % kPerByte) * kBits;
    uint8_t* byte = data + index / kPerByte;
    const uint32_t cleared = *byte & ~(kMask << shift);
    *byte = static_cast<uint8_t>(cleared |
                                 ((static_cast<uint32_t>(value) & kMask)
                                  << shift));
  }
}

// ---- runtime bit width (bits must be 2, 4 or 8; not checked here) ----------

inline int32_t GetPacked(const uint8_t* data, int32_t index, int32_t bits) {
  switch (bits) {
    case 8:
      return LoadPacked<8>(data, index);
    case 4:
      return LoadPacked<4>(data, index);
    default:
      return LoadPacked<2>(data, index);
  }
}

inline void SetPacked(uint8_t* data, int32_t index, int32_t bits,
                      int32_t value) {
  switch (bits) {
    case 8:
      StorePacked<8>(data, index, value);
      break;
    case 4:
      StorePacked<4>(data, index, value);
      break;
    default:
      StorePacked<2>(data, index, value);
      break;
  }
}

// Clears the unused high bits of the last byte of a packed buffer holding
// `count` elements (so outputs are deterministic bytes). bits validated.
inline void ClearPackedTail(uint8_t* data, int32_t count, int32_t bits) {
  const uint64_t used_bits = static_cast<uint64_t>(count) * bits;
  const int rem = static_cast<int>(used_bits & 7u);
  if (rem != 0) {
    uint8_t* last = data + (used_bits >> 3);
    *last = static_cast<uint8_t>(*last & ((1u << rem) - 1u));
  }
}

// ---- whole-buffer helpers (validated) ---------------------------------------

// Packs `count` int8 values (each inside the `bits`-bit range) into `out`.
// Unused high bits of the last byte are zero.
Status Pack(const int8_t* values, int32_t count, int32_t bits, uint8_t* out,
            size_t out_bytes);

// Unpacks `count` elements from `packed` into sign-extended int8 values.
Status Unpack(const uint8_t* packed, size_t packed_bytes, int32_t count,
              int32_t bits, int8_t* out, size_t out_count);

}  // namespace tfq

#endif  // TFQ_TINY_TFLM_EXT_CORE_TFQ_PACKING_H_
