// AVERAGE_POOL_2D (requantizing: the output has its own scale and zero point)
// and MAX_POOL_2D (tied to the input's grid) on packed 2/4/8-bit activations.
// The average rescales and divides by the in-image window size in one
// rounding; see tfq_kernels.h for the formula.
#include "tfq_arithmetic.h"
#include "tfq_kernels.h"
#include "tfq_validate.h"

namespace tfq {
namespace {

inline int32_t MaxI(int32_t a, int32_t b) { return a > b ? a : b; }
inline int32_t MinI(int32_t a, int32_t b) { return a < b ? a : b; }

// Average of a window from its plain sum: acc = sum(x) - n * zp, then
// round(acc * M * 2^(shift - 31) / n) in one rounding (ties toward +infinity):
// floor((acc * M + d / 2) / d) with d = n * 2^(31 - shift).
// CheckAveragePoolRequant keeps |acc * M| < 2^62 and d < 2^62, so the int64
// arithmetic is exact. The result is clamped in int64 (a large scale ratio
// can push it past int32 before the clamp).
inline int32_t RequantizedAverage(const PoolParams& p, int32_t sum, int32_t n) {
  const int64_t acc = static_cast<int64_t>(sum) -
                      static_cast<int64_t>(n) * p.input_zero_point;
  const int64_t divisor = static_cast<int64_t>(n) << (31 - p.output_shift);
  const int64_t num = acc * p.output_multiplier + divisor / 2;
  int64_t q = num / divisor;
  if (num % divisor != 0 && num < 0) --q;  // floor, not truncation
  const int64_t v = q + p.output_zero_point;
  return static_cast<int32_t>(v < p.act_min ? p.act_min
                                            : (v > p.act_max ? p.act_max : v));
}

template <int kInBits, bool kAverage>
void PoolImpl(const PoolParams& p, const ConstTensor& in, const Tensor& out) {
  const int32_t batches = in.dims[0];
  const int32_t in_h = in.dims[1];
  const int32_t in_w = in.dims[2];
  const int32_t depth = in.dims[3];
  const int32_t out_h = out.dims[1];
  const int32_t out_w = out.dims[2];
  const int32_t out_bits = out.bits;
  int32_t out_index = 0;
  for (int32_t b = 0; b < batches; ++b) {
    for (int32_t oy = 0; oy < out_h; ++oy) {
      const int32_t iy0 = oy * p.stride_height - p.pad_height;
      // Window clipped to the input (never empty: checked beforehand).
      const int32_t fy_start = MaxI(0, -iy0);
      const int32_t fy_end = MinI(p.filter_height, in_h - iy0);
      for (int32_t ox = 0; ox < out_w; ++ox) {
        const int32_t ix0 = ox * p.stride_width - p.pad_width;
        const int32_t fx_start = MaxI(0, -ix0);
        const int32_t fx_end = MinI(p.filter_width, in_w - ix0);
        for (int32_t c = 0; c < depth; ++c, ++out_index) {
          int32_t acc = kAverage ? 0 : QMin(kInBits);
          for (int32_t fy = fy_start; fy < fy_end; ++fy) {
            const int32_t row = (b * in_h + iy0 + fy) * in_w + ix0;
            for (int32_t fx = fx_start; fx < fx_end; ++fx) {
              const int32_t x = LoadPacked<kInBits>(in.data, (row + fx) * depth + c);
              if (kAverage) {
                acc += x;
              } else {
                acc = MaxI(acc, x);
              }
            }
          }
          if (kAverage) {
            acc = RequantizedAverage(p, acc,
                                     (fy_end - fy_start) * (fx_end - fx_start));
          }
          SetPacked(out.data, out_index, out_bits,
                    Clamp(acc, p.act_min, p.act_max));
        }
      }
    }
  }
}

template <bool kAverage>
Status Pool(const PoolParams& p, const ConstTensor& in, const Tensor& out) {
  using namespace internal;
  int32_t in_count = 0, out_count = 0;
  TFQ_RETURN_IF_ERROR(CheckTensor(in, 4, &in_count));
  TFQ_RETURN_IF_ERROR(CheckTensor(out, 4, &out_count));
  if (out.dims[0] != in.dims[0] || out.dims[3] != in.dims[3]) {
    return kErrShapeMismatch;
  }
  if (p.filter_height < 1 || p.filter_width < 1) return kErrBadParam;
  // Sum of a window: filter area * 128 must fit in int32.
  if (static_cast<int64_t>(p.filter_height) * p.filter_width > (1 << 23)) {
    return kErrBadParam;
  }
  if (kAverage) {
    TFQ_RETURN_IF_ERROR(CheckAveragePoolRequant(p, in.bits));
    TFQ_RETURN_IF_ERROR(CheckZeroPoint(p.input_zero_point, in.bits));
    TFQ_RETURN_IF_ERROR(CheckZeroPoint(p.output_zero_point, out.bits));
  }
  TFQ_RETURN_IF_ERROR(CheckSpatial(in.dims[1], p.filter_height,
                                   p.stride_height, 1, p.pad_height,
                                   out.dims[1]));
  TFQ_RETURN_IF_ERROR(CheckSpatial(in.dims[2], p.filter_width, p.stride_width,
                                   1, p.pad_width, out.dims[2]));
  TFQ_RETURN_IF_ERROR(CheckPoolWindows(in.dims[1], p.filter_height,
                                       p.stride_height, p.pad_height,
                                       out.dims[1]));
  TFQ_RETURN_IF_ERROR(CheckPoolWindows(in.dims[2], p.filter_width,
                                       p.stride_width, p.pad_width,
                                       out.dims[2]));
  TFQ_RETURN_IF_ERROR(CheckActRange(p.act_min, p.act_max, out.bits));
  TFQ_RETURN_IF_ERROR(CheckNoAlias(out, out_count, in, in_count));

  ClearPackedTail(out.data, out_count, out.bits);
  switch (in.bits) {
    case 8:
      PoolImpl<8, kAverage>(p, in, out);
      break;
    case 4:
      PoolImpl<4, kAverage>(p, in, out);
      break;
    default:
      PoolImpl<2, kAverage>(p, in, out);
      break;
  }
  return kOk;
}

}  // namespace

Status CheckAveragePoolRequant(const PoolParams& p, int32_t input_bits) {
  if (!IsSupportedBits(input_bits)) return kErrBadBits;
  if (p.output_shift < -31 || p.output_shift > 30) return kErrBadShift;
  if (p.output_multiplier != 0 && p.output_multiplier < (int32_t{1} << 30)) {
    return kErrBadMultiplier;  // negative, or not normalized
  }
  if (p.filter_height < 1 || p.filter_width < 1) return kErrBadParam;
  // |acc * M| < area * 2^(input_bits + 31) < 2^62 and
  // divisor = n * 2^(31 - shift) < 2^62: area < 2^(31 - input_bits) and
  // area < 2^(31 + shift).
  const int64_t area = static_cast<int64_t>(p.filter_height) * p.filter_width;
  if (area >= (int64_t{1} << (31 - input_bits))) return kErrBadParam;
  if (p.output_shift < 0 && area >= (int64_t{1} << (31 + p.output_shift))) {
    return kErrBadParam;
  }
  return kOk;
}

Status AveragePool(const PoolParams& p, const ConstTensor& in,
                   const Tensor& out) {
  return Pool<true>(p, in, out);
}

Status MaxPool(const PoolParams& p, const ConstTensor& in, const Tensor& out) {
  return Pool<false>(p, in, out);
}

}  // namespace tfq
