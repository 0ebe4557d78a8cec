// Runs one TFQ_* operator through the TFLM glue (tflm/tfq_ops.cc: Init,
// Prepare, Invoke) with a minimal host-side implementation of the stand-in
// TFLM API (tflm/api_stubs): a persistent arena, temp tensors and eval tensors
// over buffers given on stdin. It executes the glue's own options parsing,
// Prepare checks, multiplier derivation and Eval dispatch; it is not TFLM
// (its allocator, planner and real struct layouts are not involved).
//
// stdin, whitespace-separated:
//   <custom code> <options hex or ->
//   <tensor count>, then per tensor:
//     <TfLiteType> <rank> <dims...> <scale count> <scales...>
//     <zero point count> <zero points...> <data hex or ->
//   <input count> <tensor indices (-1: none)...> <output count> <indices...>
// stdout: "ok <hex of output 0>" or "error <message>" (the glue's
// MicroPrintf lines go to stderr). Built by `make -C tflm_ext glue-run`.
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "../tflm/tfq_ops.h"

void MicroPrintf(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fputc('\n', stderr);
}

namespace {

struct HostTensor {
  std::vector<int> dims;             // TfLiteIntArray: size, then the dims
  std::vector<int32_t> scales;       // TfLiteFloatArray: size, then float bits
  std::vector<int> zero_points;      // TfLiteIntArray
  std::vector<uint8_t> data;
  TfLiteTensor tensor{};
  TfLiteEvalTensor eval{};
  TfLiteAffineQuantization affine{};
};

std::vector<HostTensor> g_tensors;
alignas(16) uint8_t g_arena[1 << 20];
size_t g_used = 0;

std::vector<uint8_t> FromHex(const std::string& hex) {
  std::vector<uint8_t> out;
  if (hex == "-") return out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

void* Allocate(TfLiteContext*, size_t bytes) {
  const size_t start = (g_used + 15) & ~static_cast<size_t>(15);
  if (start + bytes > sizeof(g_arena)) return nullptr;
  g_used = start + bytes;
  return g_arena + start;
}

class HostMicroContext : public tflite::MicroContext {
 public:
  void* AllocatePersistentBuffer(size_t bytes) override { return Allocate(nullptr, bytes); }
  TfLiteTensor* AllocateTempInputTensor(const TfLiteNode* node, int index) override {
    return Lookup(node->inputs, index);
  }
  TfLiteTensor* AllocateTempOutputTensor(const TfLiteNode* node, int index) override {
    return Lookup(node->outputs, index);
  }
  void DeallocateTempTfLiteTensor(TfLiteTensor*) override {}

 private:
  static TfLiteTensor* Lookup(const TfLiteIntArray* indices, int index) {
    if (index < 0 || index >= indices->size) return nullptr;
    const int t = indices->data[index];
    return t < 0 ? nullptr : &g_tensors[t].tensor;
  }
};

HostMicroContext g_micro_context;

}  // namespace

namespace tflite {
MicroContext* GetMicroContext(const struct TfLiteContext* context) {
  return static_cast<MicroContext*>(context->impl_);
}
namespace micro {
TFLMRegistration RegisterOp(void* (*init)(TfLiteContext*, const char*, size_t),
                            TfLiteStatus (*prepare)(TfLiteContext*, TfLiteNode*),
                            TfLiteStatus (*invoke)(TfLiteContext*, TfLiteNode*),
                            void (*free)(TfLiteContext*, void*),
                            void (*reset)(TfLiteContext*, void*)) {
  return TFLMRegistration{init, free, prepare, invoke, reset, 0, nullptr};
}
const TfLiteEvalTensor* GetEvalInput(const TfLiteContext*, const TfLiteNode* node, int index) {
  const int t = index < node->inputs->size ? node->inputs->data[index] : -1;
  return t < 0 ? nullptr : &g_tensors[t].eval;
}
TfLiteEvalTensor* GetEvalOutput(const TfLiteContext*, const TfLiteNode* node, int index) {
  return &g_tensors[node->outputs->data[index]].eval;
}
}  // namespace micro
}  // namespace tflite

namespace {

const TFLMRegistration* Find(const std::string& code) {
  const struct {
    const char* name;
    const TFLMRegistration* registration;
  } ops[] = {
      {tfq_tflm::kConv2DName, tfq_tflm::Register_TFQ_CONV_2D()},
      {tfq_tflm::kDepthwiseConv2DName, tfq_tflm::Register_TFQ_DEPTHWISE_CONV_2D()},
      {tfq_tflm::kFullyConnectedName, tfq_tflm::Register_TFQ_FULLY_CONNECTED()},
      {tfq_tflm::kAddName, tfq_tflm::Register_TFQ_ADD()},
      {tfq_tflm::kAveragePool2DName, tfq_tflm::Register_TFQ_AVERAGE_POOL_2D()},
      {tfq_tflm::kMaxPool2DName, tfq_tflm::Register_TFQ_MAX_POOL_2D()},
      {tfq_tflm::kLeakyReluName, tfq_tflm::Register_TFQ_LEAKY_RELU()},
  };
  for (const auto& op : ops) {
    if (code == op.name) return op.registration;
  }
  return nullptr;
}

std::vector<int> ReadIndexArray(std::istream& in) {
  int n = 0;
  in >> n;
  std::vector<int> a(1 + n);
  a[0] = n;
  for (int i = 0; i < n; ++i) in >> a[1 + i];
  return a;
}

int Fail(const char* message) {
  std::printf("error %s\n", message);
  return 0;
}

}  // namespace

int main() {
  std::string code, options_hex;
  std::cin >> code >> options_hex;
  const TFLMRegistration* registration = Find(code);
  if (registration == nullptr) return Fail("unknown custom code");
  const std::vector<uint8_t> options = FromHex(options_hex);
  int count = 0;
  std::cin >> count;
  if (!std::cin || count < 1 || count > 16) return Fail("bad tensor count");
  g_tensors.resize(count);
  std::vector<int> types(count);
  for (int t = 0; t < count; ++t) {
    HostTensor& h = g_tensors[t];
    int rank = 0, n = 0;
    std::cin >> types[t] >> rank;
    h.dims.assign(1 + rank, rank);
    for (int i = 0; i < rank; ++i) std::cin >> h.dims[1 + i];
    std::cin >> n;
    h.scales.assign(1 + n, n);
    for (int i = 0; i < n; ++i) {
      float scale = 0.0f;
      std::cin >> scale;
      std::memcpy(&h.scales[1 + i], &scale, sizeof(scale));
    }
    std::cin >> n;
    h.zero_points.assign(1 + n, n);
    for (int i = 0; i < n; ++i) std::cin >> h.zero_points[1 + i];
    std::string hex;
    std::cin >> hex;
    h.data = FromHex(hex);
    const size_t bytes = h.data.size();
    if (h.data.empty()) h.data.assign(1, 0);
    h.affine.scale = reinterpret_cast<TfLiteFloatArray*>(h.scales.data());
    h.affine.zero_point = reinterpret_cast<TfLiteIntArray*>(h.zero_points.data());
    h.tensor.type = static_cast<TfLiteType>(types[t]);
    h.tensor.data.data = h.data.data();
    h.tensor.dims = reinterpret_cast<TfLiteIntArray*>(h.dims.data());
    h.tensor.bytes = bytes;
    const bool affine = h.scales[0] > 0;
    h.tensor.quantization.type = affine ? kTfLiteAffineQuantization : kTfLiteNoQuantization;
    h.tensor.quantization.params = affine ? &h.affine : nullptr;
    if (affine) {
      h.tensor.params.scale = h.affine.scale->data[0];
      h.tensor.params.zero_point = h.zero_points[0] > 0 ? h.zero_points[1] : 0;
    }
    h.eval.data.data = h.data.data();
    h.eval.dims = h.tensor.dims;
    h.eval.type = h.tensor.type;
  }
  std::vector<int> inputs = ReadIndexArray(std::cin);
  std::vector<int> outputs = ReadIndexArray(std::cin);
  if (!std::cin || outputs[0] != 1 || outputs[1] < 0 || outputs[1] >= count) {
    return Fail("bad operator description");
  }
  for (size_t i = 1; i < inputs.size(); ++i) {
    if (inputs[i] >= count) return Fail("bad input index");
  }
  TfLiteContext context{};
  context.AllocatePersistentBuffer = Allocate;
  context.impl_ = &g_micro_context;
  TfLiteNode node{};
  node.inputs = reinterpret_cast<TfLiteIntArray*>(inputs.data());
  node.outputs = reinterpret_cast<TfLiteIntArray*>(outputs.data());
  node.custom_initial_data = options.empty() ? nullptr : options.data();
  node.custom_initial_data_size = static_cast<int>(options.size());
  node.user_data = registration->init(
      &context, options.empty() ? nullptr : reinterpret_cast<const char*>(options.data()),
      options.size());
  if (registration->prepare(&context, &node) != kTfLiteOk) return Fail("prepare");
  if (registration->invoke(&context, &node) != kTfLiteOk) return Fail("invoke");
  const HostTensor& out = g_tensors[outputs[1]];
  std::printf("ok ");
  for (size_t i = 0; i < out.tensor.bytes; ++i) std::printf("%02x", out.data[i]);
  std::printf("\n");
  return 0;
}
