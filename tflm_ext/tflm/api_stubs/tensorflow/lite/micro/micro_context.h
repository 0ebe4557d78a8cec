// Stand-in for TFLM's tensorflow/lite/micro/micro_context.h (compile check only).
#ifndef TFQ_STUB_TENSORFLOW_LITE_MICRO_MICRO_CONTEXT_H_
#define TFQ_STUB_TENSORFLOW_LITE_MICRO_MICRO_CONTEXT_H_
#include "tensorflow/lite/c/common.h"
namespace tflite {
class MicroContext {
 public:
  virtual ~MicroContext() = default;
  virtual void* AllocatePersistentBuffer(size_t bytes) = 0;
  virtual TfLiteTensor* AllocateTempInputTensor(const TfLiteNode* node, int index) = 0;
  virtual TfLiteTensor* AllocateTempOutputTensor(const TfLiteNode* node, int index) = 0;
  virtual void DeallocateTempTfLiteTensor(TfLiteTensor* tensor) = 0;
};
MicroContext* GetMicroContext(const struct TfLiteContext* context);
}  // namespace tflite
#endif
