// extern "C" wrappers: translate the C structs to the core's and call it.
#include "tfq_capi.h"

#include <cstddef>

#include "../core/tfq_kernels.h"

namespace {

using tfq::Status;

bool ToConst(const tfq_tensor_t* t, tfq::ConstTensor* out) {
  if (t == nullptr) return false;
  out->data = static_cast<const uint8_t*>(t->data);
  out->bytes = static_cast<size_t>(t->nbytes);
  out->bits = t->bits;
  out->rank = t->rank;
  for (int i = 0; i < tfq::kMaxRank; ++i) out->dims[i] = t->dims[i];
  return true;
}

bool ToMutable(const tfq_tensor_t* t, tfq::Tensor* out) {
  if (t == nullptr) return false;
  out->data = static_cast<uint8_t*>(t->data);
  out->bytes = static_cast<size_t>(t->nbytes);
  out->bits = t->bits;
  out->rank = t->rank;
  for (int i = 0; i < tfq::kMaxRank; ++i) out->dims[i] = t->dims[i];
  return true;
}

// Common conversion for the three weighted ops.
bool Convert(const tfq_tensor_t* input, const tfq_tensor_t* filter,
             const tfq_tensor_t* output, const int32_t* multiplier,
             const int32_t* shift, int32_t quant_count, const int32_t* bias,
             int32_t bias_count, tfq::ConstTensor* in, tfq::ConstTensor* f,
             tfq::Tensor* out, tfq::Requant* rq, tfq::Bias* b) {
  if (!ToConst(input, in) || !ToConst(filter, f) || !ToMutable(output, out)) {
    return false;
  }
  *rq = tfq::Requant{multiplier, shift, quant_count};
  *b = tfq::Bias{bias, bias == nullptr ? 0 : bias_count};
  return true;
}

}  // namespace

extern "C" {

int32_t tfq_abi_version(void) { return TFQ_CAPI_VERSION; }

int32_t tfq_struct_size(int32_t which) {
  switch (which) {
    case TFQ_STRUCT_TENSOR:
      return static_cast<int32_t>(sizeof(tfq_tensor_t));
    case TFQ_STRUCT_CONV_PARAMS:
      return static_cast<int32_t>(sizeof(tfq_conv_params_t));
    case TFQ_STRUCT_DEPTHWISE_PARAMS:
      return static_cast<int32_t>(sizeof(tfq_depthwise_params_t));
    case TFQ_STRUCT_FC_PARAMS:
      return static_cast<int32_t>(sizeof(tfq_fc_params_t));
    case TFQ_STRUCT_ADD_PARAMS:
      return static_cast<int32_t>(sizeof(tfq_add_params_t));
    case TFQ_STRUCT_POOL_PARAMS:
      return static_cast<int32_t>(sizeof(tfq_pool_params_t));
    default:
      return -1;
  }
}

const char* tfq_status_string(int32_t status) {
  return tfq::StatusString(status);
}

int32_t tfq_conv_2d(const tfq_conv_params_t* params,
                    const int32_t* output_multiplier,
                    const int32_t* output_shift, int32_t quant_count,
                    const tfq_tensor_t* input, const tfq_tensor_t* filter,
                    const int32_t* bias, int32_t bias_count,
                    const tfq_tensor_t* output) {
  tfq::ConstTensor in, f;
  tfq::Tensor out;
  tfq::Requant rq;
  tfq::Bias b;
  if (params == nullptr ||
      !Convert(input, filter, output, output_multiplier, output_shift,
               quant_count, bias, bias_count, &in, &f, &out, &rq, &b)) {
    return tfq::kErrNullPointer;
  }
  tfq::ConvParams p;
  p.stride_height = params->stride_height;
  p.stride_width = params->stride_width;
  p.dilation_height = params->dilation_height;
  p.dilation_width = params->dilation_width;
  p.pad_height = params->pad_height;
  p.pad_width = params->pad_width;
  p.input_offset = params->input_offset;
  p.output_offset = params->output_offset;
  p.act_min = params->act_min;
  p.act_max = params->act_max;
  return tfq::ConvPerChannel(p, rq, in, f, b, out);
}

int32_t tfq_depthwise_conv_2d(const tfq_depthwise_params_t* params,
                              const int32_t* output_multiplier,
                              const int32_t* output_shift, int32_t quant_count,
                              const tfq_tensor_t* input,
                              const tfq_tensor_t* filter, const int32_t* bias,
                              int32_t bias_count, const tfq_tensor_t* output) {
  tfq::ConstTensor in, f;
  tfq::Tensor out;
  tfq::Requant rq;
  tfq::Bias b;
  if (params == nullptr ||
      !Convert(input, filter, output, output_multiplier, output_shift,
               quant_count, bias, bias_count, &in, &f, &out, &rq, &b)) {
    return tfq::kErrNullPointer;
  }
  tfq::DepthwiseParams p;
  p.stride_height = params->stride_height;
  p.stride_width = params->stride_width;
  p.dilation_height = params->dilation_height;
  p.dilation_width = params->dilation_width;
  p.pad_height = params->pad_height;
  p.pad_width = params->pad_width;
  p.depth_multiplier = params->depth_multiplier;
  p.input_offset = params->input_offset;
  p.output_offset = params->output_offset;
  p.act_min = params->act_min;
  p.act_max = params->act_max;
  return tfq::DepthwiseConvPerChannel(p, rq, in, f, b, out);
}

int32_t tfq_fully_connected(const tfq_fc_params_t* params,
                            const int32_t* output_multiplier,
                            const int32_t* output_shift, int32_t quant_count,
                            const tfq_tensor_t* input,
                            const tfq_tensor_t* filter, const int32_t* bias,
                            int32_t bias_count, const tfq_tensor_t* output) {
  tfq::ConstTensor in, f;
  tfq::Tensor out;
  tfq::Requant rq;
  tfq::Bias b;
  if (params == nullptr ||
      !Convert(input, filter, output, output_multiplier, output_shift,
               quant_count, bias, bias_count, &in, &f, &out, &rq, &b)) {
    return tfq::kErrNullPointer;
  }
  tfq::FullyConnectedParams p;
  p.input_offset = params->input_offset;
  p.output_offset = params->output_offset;
  p.act_min = params->act_min;
  p.act_max = params->act_max;
  return tfq::FullyConnected(p, rq, in, f, b, out);
}

int32_t tfq_add(const tfq_add_params_t* params, const tfq_tensor_t* input1,
                const tfq_tensor_t* input2, const tfq_tensor_t* output) {
  tfq::ConstTensor a, b;
  tfq::Tensor out;
  if (params == nullptr || !ToConst(input1, &a) || !ToConst(input2, &b) ||
      !ToMutable(output, &out)) {
    return tfq::kErrNullPointer;
  }
  tfq::AddParams p;
  p.input1_offset = params->input1_offset;
  p.input2_offset = params->input2_offset;
  p.output_offset = params->output_offset;
  p.left_shift = params->left_shift;
  p.input1_multiplier = params->input1_multiplier;
  p.input1_shift = params->input1_shift;
  p.input2_multiplier = params->input2_multiplier;
  p.input2_shift = params->input2_shift;
  p.output_multiplier = params->output_multiplier;
  p.output_shift = params->output_shift;
  p.act_min = params->act_min;
  p.act_max = params->act_max;
  return tfq::Add(p, a, b, out);
}

int32_t tfq_leaky_relu(int32_t input_offset, int32_t output_offset,
                       int32_t identity_multiplier, int32_t identity_shift,
                       int32_t alpha_multiplier, int32_t alpha_shift,
                       const tfq_tensor_t* input, const tfq_tensor_t* output) {
  tfq::ConstTensor in;
  tfq::Tensor out;
  if (!ToConst(input, &in) || !ToMutable(output, &out)) return tfq::kErrNullPointer;
  const tfq::LeakyReluParams p{input_offset,     output_offset,   identity_multiplier,
                               identity_shift,   alpha_multiplier, alpha_shift};
  return tfq::LeakyRelu(p, in, out);
}

static bool ToPool(const tfq_pool_params_t* params, tfq::PoolParams* p) {
  if (params == nullptr) return false;
  p->filter_height = params->filter_height;
  p->filter_width = params->filter_width;
  p->stride_height = params->stride_height;
  p->stride_width = params->stride_width;
  p->pad_height = params->pad_height;
  p->pad_width = params->pad_width;
  p->input_zero_point = params->input_zero_point;
  p->output_zero_point = params->output_zero_point;
  p->output_multiplier = params->output_multiplier;
  p->output_shift = params->output_shift;
  p->act_min = params->act_min;
  p->act_max = params->act_max;
  return true;
}

int32_t tfq_average_pool_2d(const tfq_pool_params_t* params,
                            const tfq_tensor_t* input,
                            const tfq_tensor_t* output) {
  tfq::PoolParams p;
  tfq::ConstTensor in;
  tfq::Tensor out;
  if (!ToPool(params, &p) || !ToConst(input, &in) || !ToMutable(output, &out)) {
    return tfq::kErrNullPointer;
  }
  return tfq::AveragePool(p, in, out);
}

int32_t tfq_max_pool_2d(const tfq_pool_params_t* params,
                        const tfq_tensor_t* input,
                        const tfq_tensor_t* output) {
  tfq::PoolParams p;
  tfq::ConstTensor in;
  tfq::Tensor out;
  if (!ToPool(params, &p) || !ToConst(input, &in) || !ToMutable(output, &out)) {
    return tfq::kErrNullPointer;
  }
  return tfq::MaxPool(p, in, out);
}

int32_t tfq_pack(const int8_t* values, int32_t count, int32_t bits,
                 uint8_t* out, uint64_t out_bytes) {
  return tfq::Pack(values, count, bits, out, static_cast<size_t>(out_bytes));
}

int32_t tfq_unpack(const uint8_t* packed, uint64_t packed_bytes, int32_t count,
                   int32_t bits, int8_t* out, uint64_t out_count) {
  return tfq::Unpack(packed, static_cast<size_t>(packed_bytes), count, bits,
                     out, static_cast<size_t>(out_count));
}

}  // extern "C"
