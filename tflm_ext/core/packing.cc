// Pack / unpack helpers and status strings.
#include "tfq_packing.h"
#include "tfq_status.h"

namespace tfq {

const char* StatusString(int32_t status) {
  switch (status) {
    case kOk:
      return "ok";
    case kErrNullPointer:
      return "a required data pointer is null";
    case kErrBadBits:
      return "bit width must be 2, 4 or 8";
    case kErrBadRank:
      return "a tensor has the wrong number of dimensions";
    case kErrBadDim:
      return "a dimension is <= 0 or a tensor has more than 2^31-1 elements";
    case kErrShapeMismatch:
      return "tensor shapes do not agree";
    case kErrBadOutputShape:
      return "output height/width inconsistent with input, filter, stride, "
             "dilation and padding";
    case kErrBadStride:
      return "stride and dilation must be in [1, 65535]";
    case kErrBadPadding:
      return "padding must be in [0, 65535] (and pool windows must overlap "
             "the input)";
    case kErrBadZeroPoint:
      return "a zero point is outside its tensor's bit range";
    case kErrBadActRange:
      return "act_min/act_max must satisfy qmin <= act_min <= act_max <= qmax "
             "of the output bits";
    case kErrBadMultiplier:
      return "quantized multipliers must be >= 0 and one per output channel "
             "(or one per tensor where allowed)";
    case kErrBadShift:
      return "a shift is outside its allowed range";
    case kErrBufferTooSmall:
      return "a buffer is smaller than its shape and bit width require";
    case kErrAliasing:
      return "the output buffer overlaps an input buffer";
    case kErrBadParam:
      return "invalid parameter";
    case kErrValueOutOfRange:
      return "a value is outside the signed range of its bit width";
    default:
      return "unknown status";
  }
}

Status Pack(const int8_t* values, int32_t count, int32_t bits, uint8_t* out,
            size_t out_bytes) {
  if (!IsSupportedBits(bits)) return kErrBadBits;
  if (count < 0) return kErrBadDim;
  if (count > 0 && (values == nullptr || out == nullptr)) {
    return kErrNullPointer;
  }
  const uint64_t need = PackedBytes(static_cast<uint64_t>(count), bits);
  if (static_cast<uint64_t>(out_bytes) < need) return kErrBufferTooSmall;
  const int32_t lo = QMin(bits), hi = QMax(bits);
  for (int32_t i = 0; i < count; ++i) {
    if (values[i] < lo || values[i] > hi) return kErrValueOutOfRange;
  }
  for (uint64_t i = 0; i < need; ++i) out[i] = 0;
  for (int32_t i = 0; i < count; ++i) SetPacked(out, i, bits, values[i]);
  return kOk;
}

Status Unpack(const uint8_t* packed, size_t packed_bytes, int32_t count,
              int32_t bits, int8_t* out, size_t out_count) {
  if (!IsSupportedBits(bits)) return kErrBadBits;
  if (count < 0) return kErrBadDim;
  if (count > 0 && (packed == nullptr || out == nullptr)) {
    return kErrNullPointer;
  }
  if (static_cast<uint64_t>(packed_bytes) <
          PackedBytes(static_cast<uint64_t>(count), bits) ||
      out_count < static_cast<uint64_t>(count)) {
    return kErrBufferTooSmall;
  }
  for (int32_t i = 0; i < count; ++i) {
    out[i] = static_cast<int8_t>(GetPacked(packed, i, bits));
  }
  return kOk;
}

}  // namespace tfq
