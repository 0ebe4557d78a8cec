// LEAKY_RELU with TFLM's int8 arithmetic (reference_ops::QuantizeLeakyRelu),
// on packed 2/4/8-bit input and output.
#include "tfq_arithmetic.h"
#include "tfq_kernels.h"
#include "tfq_validate.h"

namespace tfq {

Status LeakyRelu(const LeakyReluParams& p, const ConstTensor& input,
                 const Tensor& output) {
  using namespace internal;  // NOLINT
  int32_t in_count = 0, out_count = 0;
  TFQ_RETURN_IF_ERROR(CheckTensor(input, input.rank, &in_count));
  TFQ_RETURN_IF_ERROR(CheckTensor(output, output.rank, &out_count));
  if (input.rank != output.rank) return kErrShapeMismatch;
  for (int i = 0; i < input.rank; ++i) {
    if (input.dims[i] != output.dims[i]) return kErrShapeMismatch;
  }
  TFQ_RETURN_IF_ERROR(CheckInputOffset(p.input_offset, input.bits));
  TFQ_RETURN_IF_ERROR(CheckZeroPoint(p.output_offset, output.bits));
  for (int32_t m : {p.identity_multiplier, p.alpha_multiplier}) {
    if (m < 0) return kErrBadMultiplier;
  }
  for (int32_t s : {p.identity_shift, p.alpha_shift}) {
    if (s < -31 || s > 30) return kErrBadShift;
  }
  TFQ_RETURN_IF_ERROR(CheckNoAlias(output, out_count, input, in_count));
  const int32_t lo = QMin(output.bits), hi = QMax(output.bits);
  for (int32_t i = 0; i < in_count; ++i) {
    const int32_t v = GetPacked(input.data, i, input.bits) + p.input_offset;
    const int32_t scaled =
        v >= 0 ? MultiplyByQuantizedMultiplier(v, p.identity_multiplier, p.identity_shift)
               : MultiplyByQuantizedMultiplier(v, p.alpha_multiplier, p.alpha_shift);
    SetPacked(output.data, i, output.bits, Clamp(WrapAdd(scaled, p.output_offset), lo, hi));
  }
  return kOk;
}

}  // namespace tfq
