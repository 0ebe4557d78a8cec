// Thin TFLM wrappers around the tflm_ext core kernels (see tfq_ops.h and
// tflm_ext/README.md for the operator contract).
//
//   Init:    parse the flexbuffer custom options (an int vector, or the map
//            of layout-2 exports) into a persistent OpData.
//   Prepare: resolve each activation's logical dims (the options'
//            input_shape / input2_shape / output_shape when given, where the
//            converter declared a packed activation at its byte size
//            [1, bytes]; the tensor's dims with the innermost one counting
//            bytes when the options mark it so; else the tensor's dims),
//            check tensor
//            types/sizes/quantization, derive the fixed-point parameters
//            exactly as TFLM's builtin int8 kernels do (per-channel
//            QuantizeMultiplier of input_scale * filter_scale / output_scale;
//            ADD's left_shift 20 scheme; the average pool's
//            QuantizeMultiplier of input_scale / output_scale), compute
//            SAME/VALID padding.
//   Eval:    wrap the eval tensors as packed views with the logical dims and
//            call the core kernel. No allocation, no scratch buffer.
#include "tfq_ops.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>

#include "flatbuffers/flexbuffers.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"

#include "../core/tfq_kernels.h"
#include "../core/tfq_validate.h"
#include "tfq_options.h"

namespace tfq_tflm {
namespace {

struct OpData {
  Options opt;
  Dims in, in2, out;  // resolved logical dims of the activations (Prepare)
  // Derived in Prepare (only the member of the op's kind is used).
  union {
    tfq::ConvParams conv;
    tfq::DepthwiseParams depthwise;
    tfq::FullyConnectedParams fc;
    tfq::AddParams add;
    tfq::PoolParams pool;
    tfq::LeakyReluParams leaky_relu;
  } params;
  int32_t* multiplier;  // per output channel, persistent arena
  int32_t* shift;
  int32_t quant_count;
};

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  void* raw = context->AllocatePersistentBuffer(context, sizeof(OpData));
  if (raw == nullptr) return nullptr;
  OpData* data = new (raw) OpData();
  ParseOptions(buffer, length, &data->opt);
  return data;
}

// ---- Prepare helpers -------------------------------------------------------------

// Frees the temporary TfLiteTensors of a Prepare call in reverse order.
class TempTensors {
 public:
  explicit TempTensors(tflite::MicroContext* mc) : mc_(mc) {}
  ~TempTensors() {
    for (int i = count_ - 1; i >= 0; --i) mc_->DeallocateTempTfLiteTensor(t_[i]);
  }
  TfLiteTensor* Input(const TfLiteNode* node, int index) {
    if (index >= node->inputs->size || node->inputs->data[index] < 0) return nullptr;
    return Keep(mc_->AllocateTempInputTensor(node, index));
  }
  TfLiteTensor* Output(const TfLiteNode* node, int index) {
    return Keep(mc_->AllocateTempOutputTensor(node, index));
  }

 private:
  TfLiteTensor* Keep(TfLiteTensor* t) {
    if (t != nullptr && count_ < 4) t_[count_++] = t;
    return t;
  }
  tflite::MicroContext* mc_;
  TfLiteTensor* t_[4] = {nullptr, nullptr, nullptr, nullptr};
  int count_ = 0;
};

#define TFQ_ENSURE(op, cond, msg)                         \
  do {                                                    \
    if (!(cond)) {                                        \
      MicroPrintf("%s: %s", op, msg);                     \
      return kTfLiteError;                                \
    }                                                     \
  } while (0)

int64_t NumElements(const TfLiteIntArray* dims) {
  int64_t n = 1;
  for (int i = 0; i < dims->size; ++i) n *= dims->data[i];
  return n;
}

int64_t Count(const Dims& dims) {
  int64_t n = dims.rank > 0 ? 1 : 0;
  for (int i = 0; i < dims.rank; ++i) n *= dims.d[i];
  return n;
}

// The logical dims of a tensor: `given` (from the options) when present, else
// the tensor's own dims. False for a rank outside 1..kMaxRank or a dim < 1.
bool ResolveDims(const Dims& given, const TfLiteIntArray* dims, Dims* out) {
  if (given.rank > 0) {
    *out = given;
    return true;
  }
  if (dims == nullptr || dims->size < 1 || dims->size > tfq::kMaxRank) return false;
  out->rank = dims->size;
  for (int i = 0; i < dims->size; ++i) {
    if (dims->data[i] < 1) return false;
    out->d[i] = dims->data[i];
  }
  return true;
}

// The logical dims of activation `t` stored at `bits` bits: as ResolveDims,
// except that a shape given as kInnermostBytes (layout 4) means the tensor's
// own dims with the innermost one counting bytes: an INT8/UINT8 tensor below
// 8 bits declared [1, 24, 24, 8] holds 4-bit values of dims [1, 24, 24, 16].
bool ResolveActivation(const Dims& given, const TfLiteTensor* t, int32_t bits, Dims* out) {
  if (given.rank != kInnermostBytes) return ResolveDims(given, t->dims, out);
  if (!tfq::IsSupportedBits(bits) || bits >= 8 ||
      (t->type != kTfLiteInt8 && t->type != kTfLiteUInt8) ||
      !ResolveDims(Dims{}, t->dims, out)) {
    return false;
  }
  const int64_t last = static_cast<int64_t>(out->d[out->rank - 1]) * (8 / bits);
  if (last > INT32_MAX) return false;
  out->d[out->rank - 1] = static_cast<int32_t>(last);
  return true;
}

// Packed tensors may be typed INT8 (packed bytes of any width, or plain
// int8), UINT8 (raw bytes) or INT4 (width 4); with TFQ_ACCEPT_TFLITE_INT2,
// also INT2 (width 2). The tensor must hold at least the packed byte count of
// its `logical` dims. An INT8/UINT8 tensor below 8 bits may be declared at
// its byte size (any dims); otherwise its element count is the logical one.
bool StorageOk(const TfLiteTensor* t, int32_t bits, const Dims& logical) {
  if (!tfq::IsSupportedBits(bits)) return false;
  bool type_ok = t->type == kTfLiteInt8 || t->type == kTfLiteUInt8 ||
                 (t->type == kTfLiteInt4 && bits == 4);
#ifdef TFQ_ACCEPT_TFLITE_INT2
  type_ok = type_ok || (t->type == kTfLiteInt2 && bits == 2);
#endif
  const bool byte_sized = bits < 8 && (t->type == kTfLiteInt8 || t->type == kTfLiteUInt8);
  const int64_t n = Count(logical);
  return type_ok && n > 0 && (byte_sized || NumElements(t->dims) == n) &&
         static_cast<uint64_t>(t->bytes) >=
             tfq::PackedBytes(static_cast<uint64_t>(n), bits);
}

// Per-tensor or per-channel affine quantization parameters.
const TfLiteAffineQuantization* Affine(const TfLiteTensor* t) {
  if (t->quantization.type != kTfLiteAffineQuantization) return nullptr;
  const auto* q =
      static_cast<const TfLiteAffineQuantization*>(t->quantization.params);
  if (q == nullptr || q->scale == nullptr || q->zero_point == nullptr ||
      q->scale->size < 1 || q->zero_point->size < 1) {
    return nullptr;
  }
  return q;
}

// TFLM's QuantizeMultiplier (double rounding build): real = m * 2^(shift-31).
void QuantizeMultiplier(double real, int32_t* multiplier, int32_t* shift) {
  if (real == 0.0) {
    *multiplier = 0;
    *shift = 0;
    return;
  }
  int exponent = 0;
  const double q = std::frexp(real, &exponent);
  int64_t q_fixed = static_cast<int64_t>(std::round(q * (1LL << 31)));
  if (q_fixed == (1LL << 31)) {
    q_fixed /= 2;
    ++exponent;
  }
  if (exponent < -31) {
    exponent = 0;
    q_fixed = 0;
  }
  *multiplier = static_cast<int32_t>(q_fixed);
  *shift = exponent;
}

// Activation range: options act_min/act_max (the converter folds NONE/RELU/
// RELU6 into them), defaulting to the output's full bit range.
void ActRange(const Options& opt, int32_t* act_min, int32_t* act_max) {
  *act_min = opt.has_act_min ? opt.act_min : tfq::QMin(opt.output_bits);
  *act_max = opt.has_act_max ? opt.act_max : tfq::QMax(opt.output_bits);
}

bool InRange(int32_t v, int32_t bits) {
  return v >= tfq::QMin(bits) && v <= tfq::QMax(bits);
}

// Zero points inside their tensors' ranges, act range inside the output's.
TfLiteStatus CheckRanges(const char* op, int32_t input_zp, int32_t input_bits,
                         int32_t output_zp, const Options& opt) {
  int32_t act_min = 0, act_max = 0;
  ActRange(opt, &act_min, &act_max);
  TFQ_ENSURE(op, InRange(input_zp, input_bits), "input zero point outside input_bits");
  TFQ_ENSURE(op, InRange(output_zp, opt.output_bits),
             "output zero point outside output_bits");
  TFQ_ENSURE(op, act_min <= act_max && InRange(act_min, opt.output_bits) &&
                     InRange(act_max, opt.output_bits),
             "act_min/act_max outside output_bits");
  return kTfLiteOk;
}

// TFLM's ComputePaddingHeightWidth for one dimension.
bool SpatialPadding(int32_t padding, int32_t in, int32_t k, int32_t stride,
                    int32_t dilation, int32_t* pad, int32_t* out) {
  if (stride < 1 || dilation < 1 || k < 1) return false;
  const int64_t eff = (static_cast<int64_t>(k) - 1) * dilation + 1;
  int64_t o = 0;
  if (padding == kPaddingSame) {
    o = (static_cast<int64_t>(in) + stride - 1) / stride;
  } else if (padding == kPaddingValid) {
    o = (static_cast<int64_t>(in) + stride - eff) / stride;
  } else {
    return false;
  }
  const int64_t total = (o - 1) * stride + eff - in;
  *pad = static_cast<int32_t>(total > 0 ? total / 2 : 0);
  *out = static_cast<int32_t>(o);
  return o > 0;
}

// Shared Prepare of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (after the
// caller resolved data->in / data->out): storage, quantization of input,
// filter (per channel, zero point 0), bias, output; fills
// data->multiplier/shift for `channels` output channels.
TfLiteStatus PrepareWeighted(const char* op, TfLiteContext* context,
                             OpData* data, const TfLiteTensor* input,
                             const TfLiteTensor* filter,
                             const TfLiteTensor* bias,
                             const TfLiteTensor* output, int32_t channels,
                             int32_t* input_zp, int32_t* output_zp) {
  const Options& opt = data->opt;
  Dims filter_dims;
  TFQ_ENSURE(op, StorageOk(input, opt.input_bits, data->in),
             "input type/size does not fit input_bits and its shape");
  TFQ_ENSURE(op, ResolveDims(Dims{}, filter->dims, &filter_dims) &&
                     StorageOk(filter, opt.weight_bits, filter_dims),
             "filter type/size does not fit weight_bits");
  TFQ_ENSURE(op, StorageOk(output, opt.output_bits, data->out),
             "output type/size does not fit output_bits and its shape");
  TFQ_ENSURE(op, channels > 0, "no output channels");
  if (bias != nullptr) {
    TFQ_ENSURE(op, bias->type == kTfLiteInt32 && NumElements(bias->dims) == channels,
               "bias must be int32 with one value per output channel");
  }
  const TfLiteAffineQuantization* qi = Affine(input);
  const TfLiteAffineQuantization* qf = Affine(filter);
  const TfLiteAffineQuantization* qo = Affine(output);
  TFQ_ENSURE(op, qi != nullptr && qf != nullptr && qo != nullptr,
             "input, filter and output need affine quantization parameters");
  TFQ_ENSURE(op, qf->scale->size == channels || qf->scale->size == 1,
             "filter needs one scale per output channel (or one)");
  for (int i = 0; i < qf->zero_point->size; ++i) {
    TFQ_ENSURE(op, qf->zero_point->data[i] == 0,
               "filter zero points must be 0 (symmetric weights)");
  }
  *input_zp = qi->zero_point->data[0];
  *output_zp = qo->zero_point->data[0];
  TF_LITE_ENSURE_OK(context, CheckRanges(op, *input_zp, opt.input_bits, *output_zp, opt));
  data->multiplier = static_cast<int32_t*>(
      context->AllocatePersistentBuffer(context, channels * sizeof(int32_t)));
  data->shift = static_cast<int32_t*>(
      context->AllocatePersistentBuffer(context, channels * sizeof(int32_t)));
  TFQ_ENSURE(op, data->multiplier != nullptr && data->shift != nullptr,
             "arena too small for per-channel multipliers");
  data->quant_count = channels;
  const double input_scale = static_cast<double>(qi->scale->data[0]);
  const double output_scale = static_cast<double>(qo->scale->data[0]);
  for (int32_t c = 0; c < channels; ++c) {
    const double filter_scale =
        static_cast<double>(qf->scale->data[qf->scale->size == 1 ? 0 : c]);
    QuantizeMultiplier(input_scale * filter_scale / output_scale,
                       &data->multiplier[c], &data->shift[c]);
  }
  return kTfLiteOk;
}

// ---- Eval helpers ----------------------------------------------------------------

// A packed view of eval tensor `t` with the logical `dims` Prepare resolved.
template <typename View, typename Eval>
bool MakeView(Eval* t, int32_t bits, const Dims& dims, View* view) {
  if (t == nullptr || dims.rank < 1 || dims.rank > tfq::kMaxRank) return false;
  view->data = static_cast<decltype(view->data)>(t->data.data);
  view->bits = bits;
  view->rank = dims.rank;
  for (int i = 0; i < dims.rank; ++i) view->dims[i] = dims.d[i];
  // Prepare checked that the tensor holds this many bytes.
  view->bytes = tfq::IsSupportedBits(bits)
                    ? static_cast<size_t>(
                          tfq::PackedBytes(static_cast<uint64_t>(Count(dims)), bits))
                    : 0;
  return true;
}

// A packed view of a filter with its own dims, of rank `rank`.
template <typename View, typename Eval>
bool MakeFilterView(Eval* t, int32_t bits, int32_t rank, View* view) {
  Dims dims;
  return t != nullptr && ResolveDims(Dims{}, t->dims, &dims) && dims.rank == rank &&
         MakeView(t, bits, dims, view);
}

TfLiteStatus Report(const char* op, tfq::Status status) {
  if (status == tfq::kOk) return kTfLiteOk;
  MicroPrintf("%s: %s", op, tfq::StatusString(status));
  return kTfLiteError;
}

const TfLiteEvalTensor* OptionalInput(const TfLiteContext* context,
                                      const TfLiteNode* node, int index) {
  if (index >= node->inputs->size) return nullptr;
  return tflite::micro::GetEvalInput(context, node, index);
}

// ---- CONV_2D / DEPTHWISE_CONV_2D ---------------------------------------------------

template <bool kDepthwise>
TfLiteStatus PrepareConv(TfLiteContext* context, TfLiteNode* node) {
  const char* op = kDepthwise ? kDepthwiseConv2DName : kConv2DName;
  OpData* data = static_cast<OpData*>(node->user_data);
  TFQ_ENSURE(op, data != nullptr, "no op data");
  const Options& opt = data->opt;
  TFQ_ENSURE(op, !opt.bad_options, "custom options missing or malformed");
  TFQ_ENSURE(op, node->inputs->size == 2 || node->inputs->size == 3,
             "expects inputs (input, filter[, bias])");
  TFQ_ENSURE(op, node->outputs->size == 1, "expects one output");
  TempTensors temps(tflite::GetMicroContext(context));
  const TfLiteTensor* input = temps.Input(node, 0);
  const TfLiteTensor* filter = temps.Input(node, 1);
  const TfLiteTensor* bias = temps.Input(node, 2);
  const TfLiteTensor* output = temps.Output(node, 0);
  TFQ_ENSURE(op, input != nullptr && filter != nullptr && output != nullptr,
             "missing tensor");
  TFQ_ENSURE(op, ResolveActivation(opt.input_shape, input, opt.input_bits, &data->in) &&
                     ResolveActivation(opt.output_shape, output, opt.output_bits, &data->out) &&
                     data->in.rank == 4 && filter->dims->size == 4 && data->out.rank == 4,
             "input, filter and output must be 4-D");
  const int32_t channels = kDepthwise ? filter->dims->data[3] : filter->dims->data[0];
  int32_t input_zp = 0, output_zp = 0;
  TF_LITE_ENSURE_OK(context, PrepareWeighted(op, context, data, input, filter, bias,
                                             output, channels, &input_zp, &output_zp));
  int32_t pad_h = 0, pad_w = 0, out_h = 0, out_w = 0;
  if (opt.padding == kPaddingExplicit) {
    pad_h = opt.pad_h;
    pad_w = opt.pad_w;
    out_h = data->out.d[1];
    out_w = data->out.d[2];
    TFQ_ENSURE(op,
               tfq::internal::CheckSpatial(data->in.d[1], filter->dims->data[1], opt.stride_h,
                                           opt.dilation_h, pad_h, out_h) == tfq::kOk &&
                   tfq::internal::CheckSpatial(data->in.d[2], filter->dims->data[2],
                                               opt.stride_w, opt.dilation_w, pad_w,
                                               out_w) == tfq::kOk,
               "explicit padding does not fit input, filter and output sizes");
  }
  TFQ_ENSURE(op,
             opt.padding == kPaddingExplicit ||
                 (SpatialPadding(opt.padding, data->in.d[1], filter->dims->data[1],
                                 opt.stride_h, opt.dilation_h, &pad_h, &out_h) &&
                  SpatialPadding(opt.padding, data->in.d[2], filter->dims->data[2],
                                 opt.stride_w, opt.dilation_w, &pad_w, &out_w)),
             "bad padding/stride/dilation options");
  TFQ_ENSURE(op, out_h == data->out.d[1] && out_w == data->out.d[2],
             "output height/width do not match padding and strides");
  int32_t act_min = 0, act_max = 0;
  ActRange(opt, &act_min, &act_max);
  if (kDepthwise) {
    data->params.depthwise = tfq::DepthwiseParams{
        opt.stride_h, opt.stride_w, opt.dilation_h, opt.dilation_w, pad_h, pad_w,
        opt.depth_multiplier, -input_zp, output_zp, act_min, act_max};
  } else {
    data->params.conv = tfq::ConvParams{opt.stride_h, opt.stride_w, opt.dilation_h,
                                        opt.dilation_w, pad_h, pad_w, -input_zp,
                                        output_zp, act_min, act_max};
  }
  return kTfLiteOk;
}

template <bool kDepthwise>
TfLiteStatus EvalConv(TfLiteContext* context, TfLiteNode* node) {
  const char* op = kDepthwise ? kDepthwiseConv2DName : kConv2DName;
  const OpData* data = static_cast<const OpData*>(node->user_data);
  const Options& opt = data->opt;
  tfq::ConstTensor in{}, filter{};
  tfq::Tensor out{};
  if (!MakeView(tflite::micro::GetEvalInput(context, node, 0), opt.input_bits, data->in,
                &in) ||
      !MakeFilterView(tflite::micro::GetEvalInput(context, node, 1), opt.weight_bits, 4,
                      &filter) ||
      !MakeView(tflite::micro::GetEvalOutput(context, node, 0), opt.output_bits, data->out,
                &out)) {
    return Report(op, tfq::kErrBadRank);
  }
  const TfLiteEvalTensor* bias_t = OptionalInput(context, node, 2);
  const tfq::Bias bias{
      bias_t != nullptr ? static_cast<const int32_t*>(bias_t->data.data) : nullptr,
      data->quant_count};
  const tfq::Requant rq{data->multiplier, data->shift, data->quant_count};
  return Report(op, kDepthwise ? tfq::DepthwiseConvPerChannel(data->params.depthwise,
                                                              rq, in, filter, bias, out)
                               : tfq::ConvPerChannel(data->params.conv, rq, in, filter,
                                                     bias, out));
}

// ---- FULLY_CONNECTED ---------------------------------------------------------------

TfLiteStatus PrepareFullyConnected(TfLiteContext* context, TfLiteNode* node) {
  const char* op = kFullyConnectedName;
  OpData* data = static_cast<OpData*>(node->user_data);
  TFQ_ENSURE(op, data != nullptr, "no op data");
  TFQ_ENSURE(op, !data->opt.bad_options, "custom options missing or malformed");
  TFQ_ENSURE(op, node->inputs->size == 2 || node->inputs->size == 3,
             "expects inputs (input, filter[, bias])");
  TempTensors temps(tflite::GetMicroContext(context));
  const TfLiteTensor* input = temps.Input(node, 0);
  const TfLiteTensor* filter = temps.Input(node, 1);
  const TfLiteTensor* bias = temps.Input(node, 2);
  const TfLiteTensor* output = temps.Output(node, 0);
  TFQ_ENSURE(op, input != nullptr && filter != nullptr && output != nullptr,
             "missing tensor");
  TFQ_ENSURE(op, filter->dims->size == 2, "filter must be [out, in]");
  TFQ_ENSURE(op, ResolveActivation(data->opt.input_shape, input, data->opt.input_bits, &data->in) &&
                     ResolveActivation(data->opt.output_shape, output, data->opt.output_bits, &data->out),
             "input and output need 1 to 4 positive dims");
  const int32_t channels = filter->dims->data[0];
  const int32_t depth = filter->dims->data[1];
  const int64_t in_count = Count(data->in);
  TFQ_ENSURE(op, depth > 0 && in_count % depth == 0 &&
                     Count(data->out) == (in_count / depth) * channels,
             "input/output sizes do not match the filter");
  int32_t input_zp = 0, output_zp = 0;
  TF_LITE_ENSURE_OK(context, PrepareWeighted(op, context, data, input, filter, bias,
                                             output, channels, &input_zp, &output_zp));
  int32_t act_min = 0, act_max = 0;
  ActRange(data->opt, &act_min, &act_max);
  data->params.fc = tfq::FullyConnectedParams{-input_zp, output_zp, act_min, act_max};
  return kTfLiteOk;
}

TfLiteStatus EvalFullyConnected(TfLiteContext* context, TfLiteNode* node) {
  const char* op = kFullyConnectedName;
  const OpData* data = static_cast<const OpData*>(node->user_data);
  const Options& opt = data->opt;
  tfq::ConstTensor in{}, filter{};
  tfq::Tensor out{};
  if (!MakeView(tflite::micro::GetEvalInput(context, node, 0), opt.input_bits, data->in,
                &in) ||
      !MakeFilterView(tflite::micro::GetEvalInput(context, node, 1), opt.weight_bits, 2,
                      &filter) ||
      !MakeView(tflite::micro::GetEvalOutput(context, node, 0), opt.output_bits, data->out,
                &out)) {
    return Report(op, tfq::kErrBadRank);
  }
  // TFLM semantics: any input rank, batches = elements / depth.
  const int32_t depth = filter.dims[1];
  int64_t in_count = 1;
  for (int i = 0; i < in.rank; ++i) in_count *= in.dims[i];
  const int32_t batches = depth > 0 ? static_cast<int32_t>(in_count / depth) : 0;
  in.rank = 2;
  in.dims[0] = batches;
  in.dims[1] = depth;
  out.rank = 2;
  out.dims[0] = batches;
  out.dims[1] = filter.dims[0];
  const TfLiteEvalTensor* bias_t = OptionalInput(context, node, 2);
  const tfq::Bias bias{
      bias_t != nullptr ? static_cast<const int32_t*>(bias_t->data.data) : nullptr,
      data->quant_count};
  const tfq::Requant rq{data->multiplier, data->shift, data->quant_count};
  return Report(op, tfq::FullyConnected(data->params.fc, rq, in, filter, bias, out));
}

// ---- ADD ---------------------------------------------------------------------------

TfLiteStatus PrepareAdd(TfLiteContext* context, TfLiteNode* node) {
  const char* op = kAddName;
  OpData* data = static_cast<OpData*>(node->user_data);
  TFQ_ENSURE(op, data != nullptr, "no op data");
  const Options& opt = data->opt;
  TFQ_ENSURE(op, !opt.bad_options, "custom options missing or malformed");
  TFQ_ENSURE(op, node->inputs->size == 2 && node->outputs->size == 1,
             "expects two inputs and one output");
  TempTensors temps(tflite::GetMicroContext(context));
  const TfLiteTensor* in1 = temps.Input(node, 0);
  const TfLiteTensor* in2 = temps.Input(node, 1);
  const TfLiteTensor* output = temps.Output(node, 0);
  TFQ_ENSURE(op, in1 != nullptr && in2 != nullptr && output != nullptr, "missing tensor");
  TFQ_ENSURE(op, ResolveActivation(opt.input_shape, in1, opt.input_bits, &data->in) &&
                     ResolveActivation(opt.input2_shape, in2, opt.input2_bits, &data->in2) &&
                     ResolveActivation(opt.output_shape, output, opt.output_bits, &data->out),
             "inputs and output need 1 to 4 positive dims");
  TFQ_ENSURE(op, StorageOk(in1, opt.input_bits, data->in) &&
                     StorageOk(in2, opt.input2_bits, data->in2) &&
                     StorageOk(output, opt.output_bits, data->out),
             "tensor type/size does not fit the bit widths and shapes");
  const TfLiteAffineQuantization* q1 = Affine(in1);
  const TfLiteAffineQuantization* q2 = Affine(in2);
  const TfLiteAffineQuantization* qo = Affine(output);
  TFQ_ENSURE(op, q1 != nullptr && q2 != nullptr && qo != nullptr,
             "tensors need affine quantization parameters");
  // TFLM's int8 ADD: both inputs rescaled to 2 * max(s1, s2) with 20 bits of
  // headroom, then to the output scale.
  const int32_t left_shift = 20;
  const double s1 = static_cast<double>(q1->scale->data[0]);
  const double s2 = static_cast<double>(q2->scale->data[0]);
  const double so = static_cast<double>(qo->scale->data[0]);
  const double twice_max = 2.0 * (s1 > s2 ? s1 : s2);
  const double real1 = s1 / twice_max;
  const double real2 = s2 / twice_max;
  const double real_out = twice_max / ((1 << left_shift) * so);
  TFQ_ENSURE(op, real1 > 0.0 && real1 < 1.0 && real2 > 0.0 && real2 < 1.0 &&
                     real_out > 0.0 && real_out < 1.0,
             "scales give a rescaling multiplier outside (0, 1)");
  TF_LITE_ENSURE_OK(context, CheckRanges(op, q1->zero_point->data[0], opt.input_bits,
                                         qo->zero_point->data[0], opt));
  TF_LITE_ENSURE_OK(context, CheckRanges(op, q2->zero_point->data[0], opt.input2_bits,
                                         qo->zero_point->data[0], opt));
  tfq::AddParams& p = data->params.add;
  p.input1_offset = -q1->zero_point->data[0];
  p.input2_offset = -q2->zero_point->data[0];
  p.output_offset = qo->zero_point->data[0];
  p.left_shift = left_shift;
  QuantizeMultiplier(real1, &p.input1_multiplier, &p.input1_shift);
  QuantizeMultiplier(real2, &p.input2_multiplier, &p.input2_shift);
  QuantizeMultiplier(real_out, &p.output_multiplier, &p.output_shift);
  ActRange(opt, &p.act_min, &p.act_max);
  return kTfLiteOk;
}

TfLiteStatus EvalAdd(TfLiteContext* context, TfLiteNode* node) {
  const OpData* data = static_cast<const OpData*>(node->user_data);
  const Options& opt = data->opt;
  tfq::ConstTensor in1{}, in2{};
  tfq::Tensor out{};
  if (!MakeView(tflite::micro::GetEvalInput(context, node, 0), opt.input_bits, data->in,
                &in1) ||
      !MakeView(tflite::micro::GetEvalInput(context, node, 1), opt.input2_bits, data->in2,
                &in2) ||
      !MakeView(tflite::micro::GetEvalOutput(context, node, 0), opt.output_bits, data->out,
                &out)) {
    return Report(kAddName, tfq::kErrBadRank);
  }
  return Report(kAddName, tfq::Add(data->params.add, in1, in2, out));
}

// ---- LEAKY_RELU -------------------------------------------------------------------

// TFLM's LEAKY_RELU Prepare: the identity (s_in / s_out) and alpha
// (s_in * alpha / s_out) multipliers from float32 arithmetic; alpha is the
// float32 whose bits the options carry.
TfLiteStatus PrepareLeakyRelu(TfLiteContext* context, TfLiteNode* node) {
  const char* op = kLeakyReluName;
  OpData* data = static_cast<OpData*>(node->user_data);
  TFQ_ENSURE(op, data != nullptr, "no op data");
  const Options& opt = data->opt;
  TFQ_ENSURE(op, !opt.bad_options, "custom options missing or malformed");
  TFQ_ENSURE(op, node->inputs->size == 1 && node->outputs->size == 1,
             "expects one input and one output");
  TempTensors temps(tflite::GetMicroContext(context));
  const TfLiteTensor* input = temps.Input(node, 0);
  const TfLiteTensor* output = temps.Output(node, 0);
  TFQ_ENSURE(op, input != nullptr && output != nullptr, "missing tensor");
  TFQ_ENSURE(op, ResolveActivation(opt.input_shape, input, opt.input_bits, &data->in) &&
                     ResolveActivation(opt.output_shape, output, opt.output_bits, &data->out),
             "input and output need 1 to 4 positive dims");
  TFQ_ENSURE(op, StorageOk(input, opt.input_bits, data->in) &&
                     StorageOk(output, opt.output_bits, data->out),
             "tensor type/size does not fit the bit widths and shapes");
  bool same_shape = data->in.rank == data->out.rank;
  for (int32_t i = 0; same_shape && i < data->in.rank; ++i) {
    same_shape = data->in.d[i] == data->out.d[i];
  }
  TFQ_ENSURE(op, same_shape, "output shape differs from the input's");
  const TfLiteAffineQuantization* qi = Affine(input);
  const TfLiteAffineQuantization* qo = Affine(output);
  TFQ_ENSURE(op, qi != nullptr && qo != nullptr, "tensors need affine quantization parameters");
  TF_LITE_ENSURE_OK(context, CheckRanges(op, qi->zero_point->data[0], opt.input_bits,
                                         qo->zero_point->data[0], opt));
  float alpha = 0.0f;
  static_assert(sizeof(alpha) == sizeof(opt.alpha_bits), "float32 bits");
  std::memcpy(&alpha, &opt.alpha_bits, sizeof(alpha));
  TFQ_ENSURE(op, std::isfinite(alpha) && alpha >= 0.0f, "alpha must be a finite slope >= 0");
  const float s_in = qi->scale->data[0];
  const float s_out = qo->scale->data[0];
  tfq::LeakyReluParams& p = data->params.leaky_relu;
  p.input_offset = -qi->zero_point->data[0];
  p.output_offset = qo->zero_point->data[0];
  QuantizeMultiplier(static_cast<double>(s_in / s_out), &p.identity_multiplier,
                     &p.identity_shift);
  QuantizeMultiplier(static_cast<double>(s_in * alpha / s_out), &p.alpha_multiplier,
                     &p.alpha_shift);
  return kTfLiteOk;
}

TfLiteStatus EvalLeakyRelu(TfLiteContext* context, TfLiteNode* node) {
  const OpData* data = static_cast<const OpData*>(node->user_data);
  const Options& opt = data->opt;
  tfq::ConstTensor in{};
  tfq::Tensor out{};
  if (!MakeView(tflite::micro::GetEvalInput(context, node, 0), opt.input_bits, data->in,
                &in) ||
      !MakeView(tflite::micro::GetEvalOutput(context, node, 0), opt.output_bits, data->out,
                &out)) {
    return Report(kLeakyReluName, tfq::kErrBadRank);
  }
  return Report(kLeakyReluName, tfq::LeakyRelu(data->params.leaky_relu, in, out));
}

// ---- AVERAGE_POOL_2D (requantizing) / MAX_POOL_2D (tied) ---------------------------

template <bool kAverage>
TfLiteStatus PreparePool(TfLiteContext* context, TfLiteNode* node) {
  const char* op = kAverage ? kAveragePool2DName : kMaxPool2DName;
  OpData* data = static_cast<OpData*>(node->user_data);
  TFQ_ENSURE(op, data != nullptr, "no op data");
  const Options& opt = data->opt;
  TFQ_ENSURE(op, !opt.bad_options, "custom options missing or malformed");
  TFQ_ENSURE(op, node->inputs->size == 1 && node->outputs->size == 1,
             "expects one input and one output");
  TempTensors temps(tflite::GetMicroContext(context));
  const TfLiteTensor* input = temps.Input(node, 0);
  const TfLiteTensor* output = temps.Output(node, 0);
  TFQ_ENSURE(op, input != nullptr && output != nullptr, "missing tensor");
  TFQ_ENSURE(op, ResolveActivation(opt.input_shape, input, opt.input_bits, &data->in) &&
                     ResolveActivation(opt.output_shape, output, opt.output_bits, &data->out) &&
                     data->in.rank == 4 && data->out.rank == 4,
             "input and output must be 4-D");
  TFQ_ENSURE(op, StorageOk(input, opt.input_bits, data->in) &&
                     StorageOk(output, opt.output_bits, data->out),
             "tensor type/size does not fit the bit widths and shapes");
  const TfLiteAffineQuantization* qi = Affine(input);
  const TfLiteAffineQuantization* qo = Affine(output);
  TFQ_ENSURE(op, qi != nullptr && qo != nullptr,
             "input and output need affine quantization parameters");
  const int32_t input_zp = qi->zero_point->data[0];
  const int32_t output_zp = qo->zero_point->data[0];
  // MAX_POOL_2D passes the stored integers through (one grid); the average
  // pool requantizes to the output's grid (tfq::PoolParams).
  int32_t multiplier = 0, shift = 0;
  if (kAverage) {
    const double input_scale = static_cast<double>(qi->scale->data[0]);
    const double output_scale = static_cast<double>(qo->scale->data[0]);
    TFQ_ENSURE(op, input_scale > 0.0 && output_scale > 0.0 &&
                       std::isfinite(input_scale) && std::isfinite(output_scale),
               "input and output scales must be positive and finite");
    QuantizeMultiplier(input_scale / output_scale, &multiplier, &shift);
  } else {
    TFQ_ENSURE(op, qi->scale->data[0] == qo->scale->data[0] && input_zp == output_zp,
               "input and output must share scale and zero point");
  }
  TF_LITE_ENSURE_OK(context, CheckRanges(op, input_zp, opt.input_bits, output_zp, opt));
  int32_t pad_h = 0, pad_w = 0, out_h = 0, out_w = 0;
  TFQ_ENSURE(op,
             SpatialPadding(opt.padding, data->in.d[1], opt.filter_h, opt.stride_h, 1,
                            &pad_h, &out_h) &&
                 SpatialPadding(opt.padding, data->in.d[2], opt.filter_w, opt.stride_w, 1,
                                &pad_w, &out_w),
             "bad filter/padding/stride options");
  TFQ_ENSURE(op, out_h == data->out.d[1] && out_w == data->out.d[2],
             "output height/width do not match padding and strides");
  int32_t act_min = 0, act_max = 0;
  ActRange(opt, &act_min, &act_max);
  data->params.pool = tfq::PoolParams{opt.filter_h, opt.filter_w, opt.stride_h,
                                      opt.stride_w, pad_h, pad_w, input_zp,
                                      output_zp, multiplier, shift, act_min, act_max};
  if (kAverage) {
    // Shift/multiplier range and int32 headroom of the rescaled window sum.
    return Report(op, tfq::CheckAveragePoolRequant(data->params.pool, opt.input_bits));
  }
  return kTfLiteOk;
}

template <bool kAverage>
TfLiteStatus EvalPool(TfLiteContext* context, TfLiteNode* node) {
  const char* op = kAverage ? kAveragePool2DName : kMaxPool2DName;
  const OpData* data = static_cast<const OpData*>(node->user_data);
  tfq::ConstTensor in{};
  tfq::Tensor out{};
  if (!MakeView(tflite::micro::GetEvalInput(context, node, 0), data->opt.input_bits,
                data->in, &in) ||
      !MakeView(tflite::micro::GetEvalOutput(context, node, 0), data->opt.output_bits,
                data->out, &out)) {
    return Report(op, tfq::kErrBadRank);
  }
  return Report(op, kAverage ? tfq::AveragePool(data->params.pool, in, out)
                             : tfq::MaxPool(data->params.pool, in, out));
}

}  // namespace

const TFLMRegistration* Register_TFQ_CONV_2D() {
  static const TFLMRegistration r =
      tflite::micro::RegisterOp(Init, PrepareConv<false>, EvalConv<false>);
  return &r;
}

const TFLMRegistration* Register_TFQ_DEPTHWISE_CONV_2D() {
  static const TFLMRegistration r =
      tflite::micro::RegisterOp(Init, PrepareConv<true>, EvalConv<true>);
  return &r;
}

const TFLMRegistration* Register_TFQ_FULLY_CONNECTED() {
  static const TFLMRegistration r =
      tflite::micro::RegisterOp(Init, PrepareFullyConnected, EvalFullyConnected);
  return &r;
}

const TFLMRegistration* Register_TFQ_ADD() {
  static const TFLMRegistration r = tflite::micro::RegisterOp(Init, PrepareAdd, EvalAdd);
  return &r;
}

const TFLMRegistration* Register_TFQ_AVERAGE_POOL_2D() {
  static const TFLMRegistration r =
      tflite::micro::RegisterOp(Init, PreparePool<true>, EvalPool<true>);
  return &r;
}

const TFLMRegistration* Register_TFQ_MAX_POOL_2D() {
  static const TFLMRegistration r =
      tflite::micro::RegisterOp(Init, PreparePool<false>, EvalPool<false>);
  return &r;
}

const TFLMRegistration* Register_TFQ_LEAKY_RELU() {
  static const TFLMRegistration r =
      tflite::micro::RegisterOp(Init, PrepareLeakyRelu, EvalLeakyRelu);
  return &r;
}

}  // namespace tfq_tflm
