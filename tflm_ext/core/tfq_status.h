// Status codes returned by every tfq_tiny core kernel.
//
// A kernel validates all shapes and parameters before it touches a tensor
// element; on any problem it returns a non-zero status and writes nothing.
#ifndef TFQ_TINY_TFLM_EXT_CORE_TFQ_STATUS_H_
#define TFQ_TINY_TFLM_EXT_CORE_TFQ_STATUS_H_

#include <cstdint>

namespace tfq {

enum Status : int32_t {
  kOk = 0,
  kErrNullPointer = 1,       // a required data pointer is null
  kErrBadBits = 2,           // a bit width outside {2, 4, 8}
  kErrBadRank = 3,           // a tensor has the wrong number of dimensions
  kErrBadDim = 4,            // a dimension <= 0, or a tensor too large
  kErrShapeMismatch = 5,     // tensors whose shapes do not agree
  kErrBadOutputShape = 6,    // output H/W not consistent with stride/pad/...
  kErrBadStride = 7,         // stride or dilation outside [1, 65535]
  kErrBadPadding = 8,        // pad outside [0, 65535] or empty pool window
  kErrBadZeroPoint = 9,      // a zero point outside its tensor's bit range
  kErrBadActRange = 10,      // act_min > act_max or outside output range
  kErrBadMultiplier = 11,    // a quantized multiplier < 0 or array length
  kErrBadShift = 12,         // a shift outside the allowed range
  kErrBufferTooSmall = 13,   // a byte/element count smaller than needed
  kErrAliasing = 14,         // output buffer overlaps an input buffer
  kErrBadParam = 15,         // any other parameter (depth_multiplier, ...)
  kErrValueOutOfRange = 16,  // pack(): a value outside the b-bit range
};

// Short, static, human-readable description of a status (never null).
const char* StatusString(int32_t status);

}  // namespace tfq

#endif  // TFQ_TINY_TFLM_EXT_CORE_TFQ_STATUS_H_
