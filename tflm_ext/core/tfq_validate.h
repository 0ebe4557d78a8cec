// Internal argument checks shared by the core kernels (not part of the API).
// All size arithmetic is done in 64 bits so the checks cannot overflow.
#ifndef TFQ_TINY_TFLM_EXT_CORE_TFQ_VALIDATE_H_
#define TFQ_TINY_TFLM_EXT_CORE_TFQ_VALIDATE_H_

#include <algorithm>
#include <cstdint>

#include "tfq_kernels.h"

namespace tfq {
namespace internal {

constexpr int64_t kMaxElements = 0x7FFFFFFF;  // flat indices fit in int32
constexpr int32_t kMaxStride = 65535;
constexpr int32_t kMaxPad = 65535;

#define TFQ_RETURN_IF_ERROR(expr)          \
  do {                                     \
    const ::tfq::Status tfq_s_ = (expr);   \
    if (tfq_s_ != ::tfq::kOk) return tfq_s_; \
  } while (0)

// Validates a tensor of the given rank; returns its element count in *count.
template <typename T>
inline Status CheckTensor(const T& t, int32_t rank, int32_t* count) {
  if (t.data == nullptr) return kErrNullPointer;
  if (!IsSupportedBits(t.bits)) return kErrBadBits;
  if (t.rank != rank || rank < 1 || rank > kMaxRank) return kErrBadRank;
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) {
    if (t.dims[i] <= 0) return kErrBadDim;
    n *= t.dims[i];
    if (n > kMaxElements) return kErrBadDim;
  }
  if (static_cast<uint64_t>(t.bytes) < PackedBytes(static_cast<uint64_t>(n),
                                                   t.bits)) {
    return kErrBufferTooSmall;
  }
  *count = static_cast<int32_t>(n);
  return kOk;
}

inline bool RangesOverlap(const void* a, uint64_t a_bytes, const void* b,
                          uint64_t b_bytes) {
  const uintptr_t pa = reinterpret_cast<uintptr_t>(a);
  const uintptr_t pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + b_bytes && pb < pa + a_bytes;
}

// Output must not overlap the input (only the bytes the kernel touches).
inline Status CheckNoAlias(const Tensor& out, int32_t out_count,
                           const ConstTensor& in, int32_t in_count) {
  if (RangesOverlap(out.data, PackedBytes(out_count, out.bits), in.data,
                    PackedBytes(in_count, in.bits))) {
    return kErrAliasing;
  }
  return kOk;
}

inline Status CheckZeroPoint(int32_t zero_point, int32_t bits) {
  return (zero_point < QMin(bits) || zero_point > QMax(bits))
             ? kErrBadZeroPoint
             : kOk;
}

// TFLM-style offset = -zero_point; the zero point must be in the input range.
inline Status CheckInputOffset(int32_t offset, int32_t bits) {
  const int64_t zero_point = -static_cast<int64_t>(offset);
  return (zero_point < QMin(bits) || zero_point > QMax(bits))
             ? kErrBadZeroPoint
             : kOk;
}

inline Status CheckActRange(int32_t act_min, int32_t act_max, int32_t bits) {
  if (act_min > act_max || act_min < QMin(bits) || act_max > QMax(bits)) {
    return kErrBadActRange;
  }
  return kOk;
}

// Requant arrays: `channels` entries, or 1 if allow_per_tensor. Multipliers
// must be >= 0 and shifts within [min_shift, max_shift].
inline Status CheckRequant(const Requant& rq, int32_t channels,
                           bool allow_per_tensor, int32_t min_shift,
                           int32_t max_shift) {
  if (rq.multiplier == nullptr || rq.shift == nullptr) return kErrNullPointer;
  if (rq.count != channels && !(allow_per_tensor && rq.count == 1)) {
    return kErrBadMultiplier;
  }
  for (int32_t i = 0; i < rq.count; ++i) {
    if (rq.multiplier[i] < 0) return kErrBadMultiplier;
    if (rq.shift[i] < min_shift || rq.shift[i] > max_shift) return kErrBadShift;
  }
  return kOk;
}

inline Status CheckBias(const Bias& bias, int32_t channels) {
  if (bias.data != nullptr && bias.count != channels) return kErrShapeMismatch;
  return kOk;
}

inline Status CheckWindowParams(int32_t stride, int32_t dilation, int32_t pad) {
  if (stride < 1 || stride > kMaxStride || dilation < 1 ||
      dilation > kMaxStride) {
    return kErrBadStride;
  }
  if (pad < 0 || pad > kMaxPad) return kErrBadPadding;
  return kOk;
}

// One spatial dimension: is `out` a size that `pad` zeros before the input and
// some number after give for (in, k, stride, dilation)? TFLM's SAME/VALID
// padding puts `pad` or `pad + 1` after; explicit padding (a causal
// convolution: (k - 1) * dilation before, none after) puts fewer than eff_k
// before and at most as many after. See tfq_kernels.h.
inline Status CheckSpatial(int32_t in, int32_t k, int32_t stride,
                           int32_t dilation, int32_t pad, int32_t out) {
  TFQ_RETURN_IF_ERROR(CheckWindowParams(stride, dilation, pad));
  const int64_t eff_k = (static_cast<int64_t>(k) - 1) * dilation + 1;
  const int64_t unpadded = static_cast<int64_t>(in) + pad - eff_k;
  for (int64_t extra = 0; extra <= 1; ++extra) {
    const int64_t padded = unpadded + pad + extra;
    if (padded >= 0 && padded / stride + 1 == out) return kOk;
  }
  if (out < 1 || pad >= eff_k) return kErrBadOutputShape;
  // after in [0, pad] with (unpadded + after) / stride + 1 == out
  const int64_t lo = std::max<int64_t>(
      std::max<int64_t>(0, -unpadded),
      (static_cast<int64_t>(out) - 1) * stride - unpadded);
  const int64_t hi = std::min<int64_t>(
      pad, static_cast<int64_t>(out) * stride - 1 - unpadded);
  return lo <= hi ? kOk : kErrBadOutputShape;
}

// Both spatial dimensions of a convolution window (ConvParams, DepthwiseParams):
// filter dims 1 and 2 are its height and width in either layout.
template <typename Params>
inline Status CheckConvWindow(const Params& p, const ConstTensor& in,
                              const ConstTensor& filter, const Tensor& out) {
  TFQ_RETURN_IF_ERROR(CheckSpatial(in.dims[1], filter.dims[1], p.stride_height,
                                   p.dilation_height, p.pad_height,
                                   out.dims[1]));
  return CheckSpatial(in.dims[2], filter.dims[2], p.stride_width,
                      p.dilation_width, p.pad_width, out.dims[2]);
}

// What every weighted kernel checks alike: input offset, output zero point and
// clamp fit their widths; the output overlaps neither the input nor the filter.
template <typename Params>
inline Status CheckWeightedIo(const Params& p, const ConstTensor& in,
                              int32_t in_count, const ConstTensor& filter,
                              int32_t f_count, const Tensor& out,
                              int32_t out_count) {
  TFQ_RETURN_IF_ERROR(CheckInputOffset(p.input_offset, in.bits));
  TFQ_RETURN_IF_ERROR(CheckZeroPoint(p.output_offset, out.bits));
  TFQ_RETURN_IF_ERROR(CheckActRange(p.act_min, p.act_max, out.bits));
  TFQ_RETURN_IF_ERROR(CheckNoAlias(out, out_count, in, in_count));
  return CheckNoAlias(out, out_count, filter, f_count);
}

// Pooling windows must each overlap the input (TFLM's AveragePool fails on an
// empty window): first window ends at or after 0, last starts before `in`.
inline Status CheckPoolWindows(int32_t in, int32_t k, int32_t stride,
                               int32_t pad, int32_t out) {
  if (pad >= k) return kErrBadPadding;
  if ((static_cast<int64_t>(out) - 1) * stride - pad >= in) {
    return kErrBadPadding;
  }
  return kOk;
}

}  // namespace internal
}  // namespace tfq

#endif  // TFQ_TINY_TFLM_EXT_CORE_TFQ_VALIDATE_H_
