// Stand-in for TFLM's tensorflow/lite/micro/kernels/kernel_util.h (compile check only).
#ifndef TFQ_STUB_TENSORFLOW_LITE_MICRO_KERNELS_KERNEL_UTIL_H_
#define TFQ_STUB_TENSORFLOW_LITE_MICRO_KERNELS_KERNEL_UTIL_H_
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_common.h"
#include "tensorflow/lite/micro/micro_context.h"
namespace tflite {
namespace micro {
TFLMRegistration RegisterOp(
    void* (*init)(TfLiteContext* context, const char* buffer, size_t length),
    TfLiteStatus (*prepare)(TfLiteContext* context, TfLiteNode* node),
    TfLiteStatus (*invoke)(TfLiteContext* context, TfLiteNode* node),
    void (*free)(TfLiteContext* context, void* buffer) = nullptr,
    void (*reset)(TfLiteContext* context, void* buffer) = nullptr);
const TfLiteEvalTensor* GetEvalInput(const TfLiteContext* context, const TfLiteNode* node,
                                     int index);
TfLiteEvalTensor* GetEvalOutput(const TfLiteContext* context, const TfLiteNode* node,
                                int index);
}  // namespace micro
}  // namespace tflite
#endif
