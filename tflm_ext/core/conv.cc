// CONV_2D, per-channel requantization, packed 2/4/8-bit input/filter/output.
#include "tfq_arithmetic.h"
#include "tfq_kernels.h"
#include "tfq_patch.h"
#include "tfq_validate.h"

namespace tfq {
namespace {

// Per output pixel and group, the receptive field is unpacked once (input
// offset added, 0 for padding, which TFLM skips) and every output channel's
// OHWI filter row -- K = KH*KW*C_per_group contiguous elements -- is streamed
// against it (tfq_patch.h). The bit widths select the unpack / dot-product
// functions once per call; the output width is a switch per output element.
void ConvImpl(const ConvParams& p, const Requant& rq, const ConstTensor& in,
              const ConstTensor& filter, const Bias& bias, const Tensor& out) {
  const int32_t batches = in.dims[0];
  const int32_t in_h = in.dims[1];
  const int32_t in_w = in.dims[2];
  const int32_t in_d = in.dims[3];
  const int32_t out_d = filter.dims[0];
  const int32_t k_h = filter.dims[1];
  const int32_t k_w = filter.dims[2];
  const int32_t f_d = filter.dims[3];
  const int32_t out_h = out.dims[1];
  const int32_t out_w = out.dims[2];
  const int32_t groups = in_d / f_d;
  const int32_t filters_per_group = out_d / groups;
  const int32_t patch_size = k_h * k_w * f_d;  // < 2^31: filter count checked
  const int32_t input_offset = p.input_offset;
  const uint8_t* in_data = in.data;
  const int32_t out_bits = out.bits;
  const internal::UnpackFn unpack = internal::UnpackFor(in.bits);
  const internal::DotFn dot = internal::DotFor(filter.bits);

  for (int32_t b = 0; b < batches; ++b) {
    for (int32_t oy = 0; oy < out_h; ++oy) {
      const int32_t iy0 = oy * p.stride_height - p.pad_height;
      for (int32_t ox = 0; ox < out_w; ++ox) {
        const int32_t ix0 = ox * p.stride_width - p.pad_width;
        const int32_t out_base = ((b * out_h + oy) * out_w + ox) * out_d;
        for (int32_t g = 0; g < groups; ++g) {
          const int32_t in_c0 = g * f_d;
          // Patch values k0 .. k0+n-1, k = (fy * k_w + fx) * f_d + ic: one
          // run of input channels per filter tap.
          auto gather = [&](int32_t k0, int32_t n, int16_t* dst) {
            const int32_t tap = k0 / f_d;  // fy * k_w + fx
            int32_t ic = k0 - tap * f_d;   // first channel of the first run
            int32_t fy = tap / k_w;
            int32_t fx = tap - fy * k_w;
            while (n > 0) {
              const int32_t run = f_d - ic < n ? f_d - ic : n;
              const int32_t iy = iy0 + p.dilation_height * fy;
              const int32_t ix = ix0 + p.dilation_width * fx;
              if (iy < 0 || iy >= in_h || ix < 0 || ix >= in_w) {
                internal::FillZero(dst, run);
              } else {
                unpack(in_data,
                       ((b * in_h + iy) * in_w + ix) * in_d + in_c0 + ic, run,
                       input_offset, dst);
              }
              dst += run;
              n -= run;
              ic = 0;
              if (++fx == k_w) {
                fx = 0;
                ++fy;
              }
            }
          };
          auto emit = [&](int32_t oc, uint32_t acc) {
            int32_t v = static_cast<int32_t>(acc);
            if (bias.data != nullptr) v = WrapAdd(v, bias.data[oc]);
            v = MultiplyByQuantizedMultiplier(v, rq.multiplier[oc],
                                              rq.shift[oc]);
            v = WrapAdd(v, p.output_offset);
            v = Clamp(v, p.act_min, p.act_max);
            SetPacked(out.data, out_base + oc, out_bits, v);
          };
          internal::PatchDotProducts(
              patch_size, g * filters_per_group, (g + 1) * filters_per_group,
              filter.data, dot, gather, emit);
        }
      }
    }
  }
}

}  // namespace

Status ConvPerChannel(const ConvParams& p, const Requant& rq,
                      const ConstTensor& in, const ConstTensor& filter,
                      const Bias& bias, const Tensor& out) {
  using namespace internal;
  int32_t in_count = 0, f_count = 0, out_count = 0;
  TFQ_RETURN_IF_ERROR(CheckTensor(in, 4, &in_count));
  TFQ_RETURN_IF_ERROR(CheckTensor(filter, 4, &f_count));
  TFQ_RETURN_IF_ERROR(CheckTensor(out, 4, &out_count));
  const int32_t in_d = in.dims[3];
  const int32_t out_d = filter.dims[0];
  const int32_t f_d = filter.dims[3];
  if (out.dims[0] != in.dims[0] || out.dims[3] != out_d) {
    return kErrShapeMismatch;
  }
  if (in_d % f_d != 0 || out_d % (in_d / f_d) != 0) return kErrShapeMismatch;
  TFQ_RETURN_IF_ERROR(CheckBias(bias, out_d));
  TFQ_RETURN_IF_ERROR(CheckRequant(rq, out_d, /*allow_per_tensor=*/false,
                                   -31, 30));
  TFQ_RETURN_IF_ERROR(CheckConvWindow(p, in, filter, out));
  TFQ_RETURN_IF_ERROR(
      CheckWeightedIo(p, in, in_count, filter, f_count, out, out_count));

  ClearPackedTail(out.data, out_count, out.bits);
  ConvImpl(p, rq, in, filter, bias, out);
  return kOk;
}

}  // namespace tfq
