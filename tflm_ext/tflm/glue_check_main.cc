// Compile check of the TFLM glue's public header: AddTfqCustomOps against a
// resolver with MicroMutableOpResolver's AddCustom signature. Built only by
// `make -C tflm_ext glue-check` (syntax/type check, not linked).
#include "tfq_ops.h"

namespace {
struct FakeResolver {
  TfLiteStatus AddCustom(const char* name, const TFLMRegistration* registration) {
    return (name != nullptr && registration != nullptr) ? kTfLiteOk : kTfLiteError;
  }
};
}  // namespace

TfLiteStatus RegisterAll() {
  FakeResolver resolver;
  return tfq_tflm::AddTfqCustomOps(&resolver);
}
