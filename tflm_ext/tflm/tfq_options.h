// Parsing of the TFQ_* operators' custom options (tflm_ext/README.md, "Custom
// options"): a flexbuffer vector of integers (layout 3) or, from layout-2
// exports, a map keyed by field name. The buffer is verified
// (flexbuffers::VerifyBuffer, no allocation) before it is read; anything
// malformed sets Options::bad_options, which Prepare reports. Needs only
// flexbuffers and the core's kMaxRank, so tests/options_check.cc runs it
// without TFLM.
#ifndef TFQ_TINY_TFLM_EXT_TFLM_TFQ_OPTIONS_H_
#define TFQ_TINY_TFLM_EXT_TFLM_TFQ_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "flatbuffers/flexbuffers.h"
#include "../core/tfq_kernels.h"

namespace tfq_tflm {

// kPaddingExplicit (convolutions): pad_h / pad_w zeros before the first
// row / column, and after the last as many as the output shape implies.
enum Padding : int32_t {
  kPaddingMissing = 0,
  kPaddingSame = 1,
  kPaddingValid = 2,
  kPaddingExplicit = 3
};

// A shape slot of -1 (layout 4): the tensor is declared at its logical dims
// except the innermost one, which counts the bytes of its packed values.
constexpr int32_t kInnermostBytes = -1;

// Dims of an activation as the kernel sees it; rank 0 = not given,
// kInnermostBytes = derived from the tensor's dims.
struct Dims {
  int32_t rank = 0;
  int32_t d[tfq::kMaxRank] = {0, 0, 0, 0};
};

struct Options {
  int32_t stride_h = 1, stride_w = 1;
  int32_t dilation_h = 1, dilation_w = 1;
  int32_t filter_h = 0, filter_w = 0;  // pools
  int32_t depth_multiplier = 1;
  int32_t padding = kPaddingMissing;
  int32_t pad_h = 0, pad_w = 0;  // kPaddingExplicit: zeros before
  int32_t alpha_bits = 0;        // LEAKY_RELU: the float32 slope's bits
  int32_t input_bits = 8, input2_bits = 8, weight_bits = 8, output_bits = 8;
  bool has_act_min = false, has_act_max = false;
  int32_t act_min = 0, act_max = 0;
  Dims input_shape, input2_shape, output_shape;  // logical shapes of packed tensors
  bool bad_options = false;  // unreadable options or a field of the wrong type
};

inline bool ReadInt(const flexbuffers::Map& map, const char* key, int32_t* out,
                    bool* present, Options* opt) {
  const flexbuffers::Reference ref = map[key];
  if (ref.IsNull()) return false;
  if (!ref.IsIntOrUint()) {
    opt->bad_options = true;
    return false;
  }
  *out = ref.AsInt32();
  if (present != nullptr) *present = true;
  return true;
}

// A shape: elements [start, start + rank) of vector, 1..kMaxRank positive
// integers whose product fits int32.
template <typename Vector>
bool ReadDims(const Vector& vector, size_t start, size_t rank, Dims* out) {
  if (rank < 1 || rank > static_cast<size_t>(tfq::kMaxRank)) return false;
  if (start + rank > vector.size()) return false;
  int64_t count = 1;
  for (size_t i = 0; i < rank; ++i) {
    const flexbuffers::Reference dim = vector[start + i];
    if (!dim.IsIntOrUint()) return false;
    const int64_t value = dim.AsInt64();
    if (value < 1 || value > INT32_MAX) return false;
    count *= value;
    if (count > INT32_MAX) return false;
    out->d[i] = static_cast<int32_t>(value);
  }
  out->rank = static_cast<int32_t>(rank);
  return true;
}

inline void ReadShape(const flexbuffers::Map& map, const char* key, Dims* out, Options* opt) {
  const flexbuffers::Reference ref = map[key];
  if (ref.IsNull()) return;
  bool ok = false;
  if (ref.IsIntOrUint() && ref.AsInt64() == kInnermostBytes) {
    out->rank = kInnermostBytes;
    return;
  }
  if (ref.IsTypedVector()) {
    const flexbuffers::TypedVector vector = ref.AsTypedVector();
    ok = ReadDims(vector, 0, vector.size(), out);
  } else if (ref.IsUntypedVector()) {
    const flexbuffers::Vector vector = ref.AsVector();
    ok = ReadDims(vector, 0, vector.size(), out);
  }
  if (!ok) {
    out->rank = 0;
    opt->bad_options = true;
  }
}

// Layouts 3 and 4: integers in the README's field order, then input_shape,
// input2_shape and output_shape, each as rank (0: not given) + dims or as
// kInnermostBytes alone, then pad_h, pad_w and alpha_bits; fields past the
// end of the vector keep their defaults.
template <typename Vector>
void ParseFields(const Vector& vector, Options* opt) {
  int32_t* const fields[] = {
      &opt->input_bits, &opt->weight_bits,  &opt->output_bits,
      &opt->act_min,    &opt->act_max,      &opt->padding,
      &opt->stride_h,   &opt->stride_w,     &opt->filter_h,
      &opt->filter_w,   &opt->dilation_h,   &opt->dilation_w,
      &opt->depth_multiplier, &opt->input2_bits};
  const size_t field_count = sizeof(fields) / sizeof(fields[0]);
  const size_t size = vector.size();
  for (size_t i = 0; i < field_count && i < size; ++i) {
    const flexbuffers::Reference ref = vector[i];
    if (!ref.IsIntOrUint()) {
      opt->bad_options = true;
      return;
    }
    *fields[i] = ref.AsInt32();
  }
  opt->has_act_min = size > 3;
  opt->has_act_max = size > 4;
  if (size < field_count) opt->input2_bits = opt->input_bits;
  if (size > 5 && (vector[5].AsInt64() < kPaddingMissing ||
                   vector[5].AsInt64() > kPaddingExplicit)) {
    opt->bad_options = true;
    return;
  }
  Dims* const shapes[] = {&opt->input_shape, &opt->input2_shape,
                          &opt->output_shape};
  size_t at = field_count;
  for (Dims* shape : shapes) {
    if (at >= size) return;
    const flexbuffers::Reference rank = vector[at];
    if (rank.IsIntOrUint() && rank.AsInt64() == kInnermostBytes) {
      shape->rank = kInnermostBytes;
      at += 1;
      continue;
    }
    if (!rank.IsIntOrUint() || rank.AsInt64() < 0 ||
        rank.AsInt64() > tfq::kMaxRank) {
      opt->bad_options = true;
      return;
    }
    const size_t dims = static_cast<size_t>(rank.AsInt64());
    if (dims > 0 && !ReadDims(vector, at + 1, dims, shape)) {
      shape->rank = 0;
      opt->bad_options = true;
      return;
    }
    at += 1 + dims;
  }
  for (int32_t* pad : {&opt->pad_h, &opt->pad_w, &opt->alpha_bits}) {
    if (at >= size) return;
    const flexbuffers::Reference ref = vector[at++];
    if (!ref.IsIntOrUint()) {
      opt->bad_options = true;
      return;
    }
    *pad = ref.AsInt32();
  }
}

inline void ParseOptions(const char* buffer, size_t length, Options* opt) {
  if (buffer == nullptr || length == 0) {
    opt->bad_options = true;  // every tfq op needs at least its bit widths
    return;
  }
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(buffer);
  if (!flexbuffers::VerifyBuffer(bytes, length)) {  // bounds, types, alignment
    opt->bad_options = true;
    return;
  }
  const flexbuffers::Reference root = flexbuffers::GetRoot(bytes, length);
  if (root.IsTypedVector()) {
    ParseFields(root.AsTypedVector(), opt);
    return;
  }
  if (root.IsUntypedVector()) {
    ParseFields(root.AsVector(), opt);
    return;
  }
  if (!root.IsMap()) {  // layout 2: a map keyed by the field names
    opt->bad_options = true;
    return;
  }
  const flexbuffers::Map map = root.AsMap();
  ReadInt(map, "stride_h", &opt->stride_h, nullptr, opt);
  ReadInt(map, "stride_w", &opt->stride_w, nullptr, opt);
  ReadInt(map, "dilation_h", &opt->dilation_h, nullptr, opt);
  ReadInt(map, "dilation_w", &opt->dilation_w, nullptr, opt);
  ReadInt(map, "filter_h", &opt->filter_h, nullptr, opt);
  ReadInt(map, "filter_w", &opt->filter_w, nullptr, opt);
  ReadInt(map, "depth_multiplier", &opt->depth_multiplier, nullptr, opt);
  ReadInt(map, "pad_h", &opt->pad_h, nullptr, opt);
  ReadInt(map, "pad_w", &opt->pad_w, nullptr, opt);
  ReadInt(map, "alpha_bits", &opt->alpha_bits, nullptr, opt);
  ReadInt(map, "input_bits", &opt->input_bits, nullptr, opt);
  opt->input2_bits = opt->input_bits;  // ADD: input2_bits defaults to input_bits
  ReadInt(map, "input2_bits", &opt->input2_bits, nullptr, opt);
  ReadInt(map, "weight_bits", &opt->weight_bits, nullptr, opt);
  ReadInt(map, "output_bits", &opt->output_bits, nullptr, opt);
  ReadInt(map, "act_min", &opt->act_min, &opt->has_act_min, opt);
  ReadInt(map, "act_max", &opt->act_max, &opt->has_act_max, opt);
  ReadShape(map, "input_shape", &opt->input_shape, opt);
  ReadShape(map, "input2_shape", &opt->input2_shape, opt);
  ReadShape(map, "output_shape", &opt->output_shape, opt);
  const flexbuffers::Reference padding = map["padding"];
  if (!padding.IsNull()) {
    if (!padding.IsString()) {
      opt->bad_options = true;
    } else if (std::strcmp(padding.AsString().c_str(), "SAME") == 0) {
      opt->padding = kPaddingSame;
    } else if (std::strcmp(padding.AsString().c_str(), "VALID") == 0) {
      opt->padding = kPaddingValid;
    } else if (std::strcmp(padding.AsString().c_str(), "EXPLICIT") == 0) {
      opt->padding = kPaddingExplicit;
    } else {
      opt->bad_options = true;
    }
  }
}

}  // namespace tfq_tflm

#endif  // TFQ_TINY_TFLM_EXT_TFLM_TFQ_OPTIONS_H_
