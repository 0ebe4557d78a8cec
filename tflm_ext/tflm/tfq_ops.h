// TFLM registrations of the tfq_tiny custom operators (packed 2/4/8-bit).
//
//   static tflite::MicroMutableOpResolver<8> resolver;
//   tfq_tflm::AddTfqCustomOps(&resolver);      // all six, or one at a time:
//   resolver.AddCustom(tfq_tflm::kConv2DName, tfq_tflm::Register_TFQ_CONV_2D());
//
// The operator contract (inputs, custom options, quantization) is in
// tflm_ext/README.md. The arithmetic is in tflm_ext/core; these wrappers only
// read options and quantization parameters (Init/Prepare) and call the core
// kernels (Eval). Nothing is allocated during Eval and no scratch buffer is
// needed (the kernels read packed tensors directly).
#ifndef TFQ_TINY_TFLM_EXT_TFLM_TFQ_OPS_H_
#define TFQ_TINY_TFLM_EXT_TFLM_TFQ_OPS_H_

#include "tensorflow/lite/micro/micro_common.h"

namespace tfq_tflm {

constexpr const char kConv2DName[] = "TFQ_CONV_2D";
constexpr const char kDepthwiseConv2DName[] = "TFQ_DEPTHWISE_CONV_2D";
constexpr const char kFullyConnectedName[] = "TFQ_FULLY_CONNECTED";
constexpr const char kAddName[] = "TFQ_ADD";
constexpr const char kAveragePool2DName[] = "TFQ_AVERAGE_POOL_2D";
constexpr const char kMaxPool2DName[] = "TFQ_MAX_POOL_2D";
constexpr const char kLeakyReluName[] = "TFQ_LEAKY_RELU";

// Each returns a pointer to a registration with static storage duration.
const TFLMRegistration* Register_TFQ_CONV_2D();
const TFLMRegistration* Register_TFQ_DEPTHWISE_CONV_2D();
const TFLMRegistration* Register_TFQ_FULLY_CONNECTED();
const TFLMRegistration* Register_TFQ_ADD();
const TFLMRegistration* Register_TFQ_AVERAGE_POOL_2D();
const TFLMRegistration* Register_TFQ_MAX_POOL_2D();
const TFLMRegistration* Register_TFQ_LEAKY_RELU();

// Adds all six custom operators to a tflite::MicroMutableOpResolver<N>
// (needs six free slots). Returns the first failing status.
template <typename Resolver>
TfLiteStatus AddTfqCustomOps(Resolver* resolver) {
  const struct {
    const char* name;
    const TFLMRegistration* registration;
  } ops[] = {
      {kConv2DName, Register_TFQ_CONV_2D()},
      {kDepthwiseConv2DName, Register_TFQ_DEPTHWISE_CONV_2D()},
      {kFullyConnectedName, Register_TFQ_FULLY_CONNECTED()},
      {kAddName, Register_TFQ_ADD()},
      {kAveragePool2DName, Register_TFQ_AVERAGE_POOL_2D()},
      {kMaxPool2DName, Register_TFQ_MAX_POOL_2D()},
      {kLeakyReluName, Register_TFQ_LEAKY_RELU()},
  };
  for (const auto& op : ops) {
    const TfLiteStatus status = resolver->AddCustom(op.name, op.registration);
    if (status != kTfLiteOk) return status;
  }
  return kTfLiteOk;
}

}  // namespace tfq_tflm

#endif  // TFQ_TINY_TFLM_EXT_TFLM_TFQ_OPS_H_
