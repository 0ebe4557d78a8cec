// Fixed-point requantization arithmetic, matching TFLM's reference kernels
// with the default double rounding (TFLITE_SINGLE_ROUNDING off):
//
//   MultiplyByQuantizedMultiplier(x, m, s)
//     = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^max(s,0), m),
//                           max(-s, 0))
//
// The simulated (fake-quant) model reproduces this double rounding
// (tfq_tiny/quantization/requantization.py), so the two agree exactly.
//
// Where TFLM's int32 arithmetic could overflow (x * 2^left_shift, sums), we
// compute the same two's complement wrap-around explicitly through uint32 so
// the result equals what TFLM produces on real targets, without signed
// overflow (undefined behaviour in C++).
#ifndef TFQ_TINY_TFLM_EXT_CORE_TFQ_ARITHMETIC_H_
#define TFQ_TINY_TFLM_EXT_CORE_TFQ_ARITHMETIC_H_

#include <cstdint>
#include <limits>

namespace tfq {

// int32 addition / multiplication with two's complement wrap-around.
inline int32_t WrapAdd(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) +
                              static_cast<uint32_t>(b));
}
inline int32_t WrapMul(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) *
                              static_cast<uint32_t>(b));
}
inline int32_t WrapShiftLeft(int32_t x, int shift) {
  return static_cast<int32_t>(static_cast<uint32_t>(x) << shift);
}

// High 32 bits of 2*a*b, rounded to nearest (ties away from zero), saturated
// for the single overflowing case a == b == INT32_MIN.
inline int32_t SaturatingRoundingDoublingHighMul(int32_t a, int32_t b) {
  if (a == b && a == std::numeric_limits<int32_t>::min()) {
    return std::numeric_limits<int32_t>::max();
  }
  const int64_t product = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = product >= 0 ? (int64_t{1} << 30)
                                     : (int64_t{1} - (int64_t{1} << 30));
  // Division truncates toward zero (not an arithmetic shift): this is what
  // makes the rounding symmetric for negative products.
  return static_cast<int32_t>((product + nudge) / (int64_t{1} << 31));
}

// x / 2^exponent rounded to nearest, ties away from zero. exponent in [0, 31].
inline int32_t RoundingDivideByPOT(int32_t x, int exponent) {
  const int32_t mask =
      static_cast<int32_t>((int64_t{1} << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// shift in [-31, 30] (validated by the kernels), multiplier >= 0.
inline int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier,
                                             int shift) {
  const int left_shift = shift > 0 ? shift : 0;
  const int right_shift = shift > 0 ? 0 : -shift;
  return RoundingDivideByPOT(
      SaturatingRoundingDoublingHighMul(WrapShiftLeft(x, left_shift),
                                        multiplier),
      right_shift);
}

// As TFLM's MultiplyByQuantizedMultiplierSmallerThanOneExp (used by ADD):
// shift in [-31, 0].
inline int32_t MultiplyByQuantizedMultiplierSmallerThanOneExp(
    int32_t x, int32_t multiplier, int shift) {
  return RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, multiplier),
                             -shift);
}

inline int32_t Clamp(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

}  // namespace tfq

#endif  // TFQ_TINY_TFLM_EXT_CORE_TFQ_ARITHMETIC_H_
