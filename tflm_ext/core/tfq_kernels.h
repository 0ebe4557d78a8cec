// tfq_tiny core kernels: integer CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
// ADD, AVERAGE_POOL_2D (requantizing) and MAX_POOL_2D on packed 2/4/8-bit
// tensors.
//
// Style follows TFLM's reference kernels: pure functions over a params struct
// and raw pointers, no dynamic allocation, no TFLM dependency. Unlike the TFLM
// reference kernels every function validates its arguments first and returns
// a Status (never reads or writes out of bounds on malformed input).
//
// Arithmetic is TFLM's reference integer arithmetic (see tfq_arithmetic.h):
//   acc  = sum (x - input_zp) * w  [+ bias]          (int32, wrap-around)
//   out  = MultiplyByQuantizedMultiplier(acc, m[c], s[c]) + output_zp
//   out  = clamp(out, act_min, act_max)  -> stored with the output's bits
//
// Conventions
// - Offsets use TFLM's sign: params.input_offset = -input_zero_point,
//   params.output_offset = +output_zero_point.
// - Layouts: activations NHWC; conv filter OHWI (I may divide the input depth,
//   grouped conv as in TFLM); depthwise filter [1, KH, KW, C*M]; fully
//   connected input [N, K], filter [O, K], output [N, O].
// - Padding: explicit pad before (top/left). The output size must be one TFLM
//   can produce: out == (in + pad + pad_after - eff_k) / stride + 1 for
//   pad_after in {pad, pad + 1}, eff_k = (k - 1) * dilation + 1 (this covers
//   SAME, VALID and symmetric explicit padding).
// - The output buffer must not overlap any input buffer.
// - Unused high bits of an output's last byte are cleared to zero.
#ifndef TFQ_TINY_TFLM_EXT_CORE_TFQ_KERNELS_H_
#define TFQ_TINY_TFLM_EXT_CORE_TFQ_KERNELS_H_

#include <cstddef>
#include <cstdint>

#include "tfq_packing.h"
#include "tfq_status.h"

namespace tfq {

constexpr int kMaxRank = 4;

// A read-only packed tensor: `bytes` is the size of the buffer at `data`.
struct ConstTensor {
  const uint8_t* data;
  size_t bytes;
  int32_t bits;  // 2, 4 or 8
  int32_t rank;  // number of used entries of dims
  int32_t dims[kMaxRank];
};

// A writable packed tensor.
struct Tensor {
  uint8_t* data;
  size_t bytes;
  int32_t bits;
  int32_t rank;
  int32_t dims[kMaxRank];
};

// int32 bias; data may be null (no bias), otherwise count must equal the
// number of output channels.
struct Bias {
  const int32_t* data;
  int32_t count;
};

// Quantized multipliers and shifts (TFLM convention: shift > 0 is a left
// shift). count is the number of output channels, or 1 for per-tensor.
struct Requant {
  const int32_t* multiplier;
  const int32_t* shift;
  int32_t count;
};

struct ConvParams {
  int32_t stride_height;
  int32_t stride_width;
  int32_t dilation_height;
  int32_t dilation_width;
  int32_t pad_height;  // padding before (top)
  int32_t pad_width;   // padding before (left)
  int32_t input_offset;   // -input zero point
  int32_t output_offset;  // output zero point
  int32_t act_min;
  int32_t act_max;
};

struct DepthwiseParams {
  int32_t stride_height;
  int32_t stride_width;
  int32_t dilation_height;
  int32_t dilation_width;
  int32_t pad_height;
  int32_t pad_width;
  int32_t depth_multiplier;
  int32_t input_offset;
  int32_t output_offset;
  int32_t act_min;
  int32_t act_max;
};

struct FullyConnectedParams {
  int32_t input_offset;
  int32_t output_offset;
  int32_t act_min;
  int32_t act_max;
};

// TFLM int8 ADD arithmetic (MultiplyByQuantizedMultiplierSmallerThanOneExp
// for each input and the output; shifts <= 0).
struct AddParams {
  int32_t input1_offset;  // -input1 zero point
  int32_t input2_offset;  // -input2 zero point
  int32_t output_offset;  // output zero point
  int32_t left_shift;     // TFLM uses 20 for int8
  int32_t input1_multiplier;
  int32_t input1_shift;
  int32_t input2_multiplier;
  int32_t input2_shift;
  int32_t output_multiplier;
  int32_t output_shift;
  int32_t act_min;
  int32_t act_max;
};

// LEAKY_RELU (TFLM's QuantizeLeakyRelu): v = x - input zero point, scaled by
// the identity multiplier where v >= 0 and by the alpha multiplier below, plus
// the output zero point, clamped to the output width. Multipliers and shifts
// as QuantizeMultiplier gives them (shift in [-31, 30]).
struct LeakyReluParams {
  int32_t input_offset;   // -input zero point
  int32_t output_offset;  // output zero point
  int32_t identity_multiplier;
  int32_t identity_shift;
  int32_t alpha_multiplier;
  int32_t alpha_shift;
};

// Pools. MaxPool works on the stored integers directly (input and output
// share scale and zero point, as in TFLM; only the storage width may differ)
// and ignores the zero points and the multiplier. AveragePool requantizes
// (TFQ_AVERAGE_POOL_2D): over the n >= 1 in-image elements of each window
//   acc = sum (x - input_zero_point)
//   d   = n * 2^(31 - output_shift)
//   v   = floor((acc * output_multiplier + d / 2) / d)   (int64, one rounding)
//   out = clamp(v + output_zero_point, act_min, act_max)
// i.e. round(acc * (input_scale / output_scale) / n), ties toward +infinity.
// with output_multiplier * 2^(output_shift - 31) = input_scale / output_scale
// (QuantizeMultiplier). See CheckAveragePoolRequant for the accepted values.
// Unlike the other params structs these hold zero points, not offsets.
struct PoolParams {
  int32_t filter_height;
  int32_t filter_width;
  int32_t stride_height;
  int32_t stride_width;
  int32_t pad_height;  // padding before (top)
  int32_t pad_width;   // padding before (left)
  int32_t input_zero_point;   // AveragePool only
  int32_t output_zero_point;  // AveragePool only
  int32_t output_multiplier;  // AveragePool only
  int32_t output_shift;       // AveragePool only (> 0: left shift)
  int32_t act_min;
  int32_t act_max;
};

// input [N,H,W,C], filter [O,KH,KW,C/groups], output [N,OH,OW,O].
Status ConvPerChannel(const ConvParams& params, const Requant& requant,
                      const ConstTensor& input, const ConstTensor& filter,
                      const Bias& bias, const Tensor& output);

// input [N,H,W,C], filter [1,KH,KW,C*M], output [N,OH,OW,C*M].
Status DepthwiseConvPerChannel(const DepthwiseParams& params,
                               const Requant& requant,
                               const ConstTensor& input,
                               const ConstTensor& filter, const Bias& bias,
                               const Tensor& output);

// input [N,K], filter [O,K], output [N,O]; requant.count is O (per channel)
// or 1 (per tensor).
Status FullyConnected(const FullyConnectedParams& params,
                      const Requant& requant, const ConstTensor& input,
                      const ConstTensor& filter, const Bias& bias,
                      const Tensor& output);

// Per-tensor convenience form of FullyConnected.
Status FullyConnectedPerTensor(const FullyConnectedParams& params,
                               int32_t output_multiplier, int32_t output_shift,
                               const ConstTensor& input,
                               const ConstTensor& filter, const Bias& bias,
                               const Tensor& output);

// Element-wise with TFLM/NumPy broadcasting: shapes right-aligned (rank <= 4),
// each input dim equal to the output dim or 1; output shape = broadcast shape.
Status Add(const AddParams& params, const ConstTensor& input1,
           const ConstTensor& input2, const Tensor& output);

// AveragePool's checks of its rescaling, for callers that derive the
// multiplier themselves (the TFLM glue's Prepare): output_shift in [-31, 30];
// output_multiplier 0 or in [2^30, 2^31) (QuantizeMultiplier's range);
// filter_height * filter_width * 2^input_bits * 2^max(output_shift, 0) < 2^31,
// so that the left-shifted window sum cannot overflow int32. Returns
// kErrBadShift, kErrBadMultiplier or kErrBadParam (filter size < 1 too).
Status CheckAveragePoolRequant(const PoolParams& params, int32_t input_bits);

// input [N,H,W,C], output [N,OH,OW,C]. Every window must overlap the input.
// AveragePool also checks the zero points against the tensors' bit widths and
// CheckAveragePoolRequant.
Status AveragePool(const PoolParams& params, const ConstTensor& input,
                   const Tensor& output);
Status MaxPool(const PoolParams& params, const ConstTensor& input,
               const Tensor& output);

// Element-wise; input and output of one shape (rank 1..4), any widths.
Status LeakyRelu(const LeakyReluParams& params, const ConstTensor& input,
                 const Tensor& output);

}  // namespace tfq

#endif  // TFQ_TINY_TFLM_EXT_CORE_TFQ_KERNELS_H_
