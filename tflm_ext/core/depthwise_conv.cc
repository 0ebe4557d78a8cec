// DEPTHWISE_CONV_2D, per-channel requantization, packed 2/4/8-bit tensors.
#include "tfq_arithmetic.h"
#include "tfq_kernels.h"
#include "tfq_validate.h"

namespace tfq {
namespace {

template <int kInBits, int kWBits>
void DepthwiseImpl(const DepthwiseParams& p, const Requant& rq,
                   const ConstTensor& in, const ConstTensor& filter,
                   const Bias& bias, const Tensor& out) {
  const int32_t batches = in.dims[0];
  const int32_t in_h = in.dims[1];
  const int32_t in_w = in.dims[2];
  const int32_t in_d = in.dims[3];
  const int32_t k_h = filter.dims[1];
  const int32_t k_w = filter.dims[2];
  const int32_t out_d = filter.dims[3];
  const int32_t out_h = out.dims[1];
  const int32_t out_w = out.dims[2];
  const int32_t mult = p.depth_multiplier;
  const int32_t input_offset = p.input_offset;
  const uint8_t* in_data = in.data;
  const uint8_t* f_data = filter.data;
  const int32_t out_bits = out.bits;

  int32_t out_index = 0;  // (b, oy, ox, ic, m) is flat NHWC output order
  for (int32_t b = 0; b < batches; ++b) {
    for (int32_t oy = 0; oy < out_h; ++oy) {
      const int32_t iy0 = oy * p.stride_height - p.pad_height;
      for (int32_t ox = 0; ox < out_w; ++ox) {
        const int32_t ix0 = ox * p.stride_width - p.pad_width;
        for (int32_t ic = 0; ic < in_d; ++ic) {
          for (int32_t m = 0; m < mult; ++m, ++out_index) {
            const int32_t oc = ic * mult + m;
            uint32_t acc = 0;
            for (int32_t fy = 0; fy < k_h; ++fy) {
              const int32_t iy = iy0 + p.dilation_height * fy;
              if (iy < 0 || iy >= in_h) continue;
              const int32_t in_row = (b * in_h + iy) * in_w;
              const int32_t f_row = fy * k_w;
              for (int32_t fx = 0; fx < k_w; ++fx) {
                const int32_t ix = ix0 + p.dilation_width * fx;
                if (ix < 0 || ix >= in_w) continue;
                const int32_t x =
                    LoadPacked<kInBits>(in_data, (in_row + ix) * in_d + ic);
                const int32_t w =
                    LoadPacked<kWBits>(f_data, (f_row + fx) * out_d + oc);
                acc += static_cast<uint32_t>(w * (x + input_offset));
              }
            }
            int32_t v = static_cast<int32_t>(acc);
            if (bias.data != nullptr) v = WrapAdd(v, bias.data[oc]);
            v = MultiplyByQuantizedMultiplier(v, rq.multiplier[oc],
                                              rq.shift[oc]);
            v = WrapAdd(v, p.output_offset);
            v = Clamp(v, p.act_min, p.act_max);
            SetPacked(out.data, out_index, out_bits, v);
          }
        }
      }
    }
  }
}

template <int kInBits>
void DispatchFilterBits(const DepthwiseParams& p, const Requant& rq,
                        const ConstTensor& in, const ConstTensor& filter,
                        const Bias& bias, const Tensor& out) {
  switch (filter.bits) {
    case 8:
      DepthwiseImpl<kInBits, 8>(p, rq, in, filter, bias, out);
      break;
    case 4:
      DepthwiseImpl<kInBits, 4>(p, rq, in, filter, bias, out);
      break;
    default:
      DepthwiseImpl<kInBits, 2>(p, rq, in, filter, bias, out);
      break;
  }
}

}  // namespace

Status DepthwiseConvPerChannel(const DepthwiseParams& p, const Requant& rq,
                               const ConstTensor& in,
                               const ConstTensor& filter, const Bias& bias,
                               const Tensor& out) {
  using namespace internal;
  int32_t in_count = 0, f_count = 0, out_count = 0;
  TFQ_RETURN_IF_ERROR(CheckTensor(in, 4, &in_count));
  TFQ_RETURN_IF_ERROR(CheckTensor(filter, 4, &f_count));
  TFQ_RETURN_IF_ERROR(CheckTensor(out, 4, &out_count));
  if (p.depth_multiplier < 1) return kErrBadParam;
  const int32_t out_d = filter.dims[3];
  if (filter.dims[0] != 1) return kErrShapeMismatch;
  if (static_cast<int64_t>(in.dims[3]) * p.depth_multiplier != out_d) {
    return kErrShapeMismatch;
  }
  if (out.dims[0] != in.dims[0] || out.dims[3] != out_d) {
    return kErrShapeMismatch;
  }
  TFQ_RETURN_IF_ERROR(CheckBias(bias, out_d));
  TFQ_RETURN_IF_ERROR(CheckRequant(rq, out_d, /*allow_per_tensor=*/false,
                                   -31, 30));
  TFQ_RETURN_IF_ERROR(CheckConvWindow(p, in, filter, out));
  TFQ_RETURN_IF_ERROR(
      CheckWeightedIo(p, in, in_count, filter, f_count, out, out_count));

  ClearPackedTail(out.data, out_count, out.bits);
  switch (in.bits) {
    case 8:
      DispatchFilterBits<8>(p, rq, in, filter, bias, out);
      break;
    case 4:
      DispatchFilterBits<4>(p, rq, in, filter, bias, out);
      break;
    default:
      DispatchFilterBits<2>(p, rq, in, filter, bias, out);
      break;
  }
  return kOk;
}

}  // namespace tfq
