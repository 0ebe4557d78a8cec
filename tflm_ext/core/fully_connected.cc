// FULLY_CONNECTED, per-channel or per-tensor requantization, packed tensors.
#include "tfq_arithmetic.h"
#include "tfq_kernels.h"
#include "tfq_patch.h"
#include "tfq_validate.h"

namespace tfq {
namespace {

// Per batch row, the input vector is unpacked once (input offset added) and
// every output channel's filter row is streamed against it (tfq_patch.h).
void FullyConnectedImpl(const FullyConnectedParams& p, const Requant& rq,
                        const ConstTensor& in, const ConstTensor& filter,
                        const Bias& bias, const Tensor& out) {
  const int32_t batches = in.dims[0];
  const int32_t depth = in.dims[1];
  const int32_t out_d = filter.dims[0];
  const int32_t input_offset = p.input_offset;
  const uint8_t* in_data = in.data;
  const int32_t out_bits = out.bits;
  const int32_t rq_step = rq.count == 1 ? 0 : 1;  // per-tensor: one entry
  const internal::UnpackFn unpack = internal::UnpackFor(in.bits);
  const internal::DotFn dot = internal::DotFor(filter.bits);

  for (int32_t b = 0; b < batches; ++b) {
    const int32_t in_base = b * depth;
    const int32_t out_base = b * out_d;
    auto gather = [&](int32_t k0, int32_t n, int16_t* dst) {
      unpack(in_data, in_base + k0, n, input_offset, dst);
    };
    auto emit = [&](int32_t oc, uint32_t acc) {
      int32_t v = static_cast<int32_t>(acc);
      if (bias.data != nullptr) v = WrapAdd(v, bias.data[oc]);
      const int32_t q = oc * rq_step;
      v = MultiplyByQuantizedMultiplier(v, rq.multiplier[q], rq.shift[q]);
      v = WrapAdd(v, p.output_offset);
      v = Clamp(v, p.act_min, p.act_max);
      SetPacked(out.data, out_base + oc, out_bits, v);
    };
    internal::PatchDotProducts(depth, 0, out_d, filter.data, dot, gather,
                               emit);
  }
}

}  // namespace

Status FullyConnected(const FullyConnectedParams& p, const Requant& rq,
                      const ConstTensor& in, const ConstTensor& filter,
                      const Bias& bias, const Tensor& out) {
  using namespace internal;
  int32_t in_count = 0, f_count = 0, out_count = 0;
  TFQ_RETURN_IF_ERROR(CheckTensor(in, 2, &in_count));
  TFQ_RETURN_IF_ERROR(CheckTensor(filter, 2, &f_count));
  TFQ_RETURN_IF_ERROR(CheckTensor(out, 2, &out_count));
  const int32_t out_d = filter.dims[0];
  if (filter.dims[1] != in.dims[1] || out.dims[0] != in.dims[0] ||
      out.dims[1] != out_d) {
    return kErrShapeMismatch;
  }
  TFQ_RETURN_IF_ERROR(CheckBias(bias, out_d));
  TFQ_RETURN_IF_ERROR(CheckRequant(rq, out_d, /*allow_per_tensor=*/true,
                                   -31, 30));
  TFQ_RETURN_IF_ERROR(
      CheckWeightedIo(p, in, in_count, filter, f_count, out, out_count));

  ClearPackedTail(out.data, out_count, out.bits);
  FullyConnectedImpl(p, rq, in, filter, bias, out);
  return kOk;
}

Status FullyConnectedPerTensor(const FullyConnectedParams& p,
                               int32_t output_multiplier, int32_t output_shift,
                               const ConstTensor& in,
                               const ConstTensor& filter, const Bias& bias,
                               const Tensor& out) {
  const Requant rq = {&output_multiplier, &output_shift, 1};
  return FullyConnected(p, rq, in, filter, bias, out);
}

}  // namespace tfq
