// Stand-in for TFLM's tensorflow/lite/c/common.h (compile check only).
#ifndef TFQ_STUB_TENSORFLOW_LITE_C_COMMON_H_
#define TFQ_STUB_TENSORFLOW_LITE_C_COMMON_H_
#include <cstddef>
#include <cstdint>

typedef enum TfLiteStatus { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;

typedef enum {
  kTfLiteNoType = 0, kTfLiteFloat32 = 1, kTfLiteInt32 = 2, kTfLiteUInt8 = 3,
  kTfLiteInt64 = 4, kTfLiteString = 5, kTfLiteBool = 6, kTfLiteInt16 = 7,
  kTfLiteComplex64 = 8, kTfLiteInt8 = 9, kTfLiteFloat16 = 10, kTfLiteFloat64 = 11,
  kTfLiteComplex128 = 12, kTfLiteUInt64 = 13, kTfLiteResource = 14,
  kTfLiteVariant = 15, kTfLiteUInt32 = 16, kTfLiteUInt16 = 17, kTfLiteInt4 = 18,
  kTfLiteBFloat16 = 19, kTfLiteInt2 = 20
} TfLiteType;

typedef struct TfLiteIntArray { int size; int data[1]; } TfLiteIntArray;
typedef struct TfLiteFloatArray { int size; float data[1]; } TfLiteFloatArray;

typedef enum TfLiteQuantizationType {
  kTfLiteNoQuantization = 0, kTfLiteAffineQuantization = 1
} TfLiteQuantizationType;

typedef struct TfLiteQuantization {
  TfLiteQuantizationType type;
  void* params;
} TfLiteQuantization;

typedef struct TfLiteAffineQuantization {
  TfLiteFloatArray* scale;
  TfLiteIntArray* zero_point;
  int32_t quantized_dimension;
} TfLiteAffineQuantization;

typedef struct TfLiteQuantizationParams { float scale; int32_t zero_point; } TfLiteQuantizationParams;

typedef union TfLitePtrUnion {
  int32_t* i32; int8_t* int8; uint8_t* uint8; char* raw; const char* raw_const; void* data;
} TfLitePtrUnion;

typedef struct TfLiteTensor {
  TfLiteType type;
  TfLitePtrUnion data;
  TfLiteIntArray* dims;
  TfLiteQuantizationParams params;
  int allocation_type;
  size_t bytes;
  const void* allocation;
  const char* name;
  void* delegate;
  int buffer_handle;
  bool data_is_stale;
  bool is_variable;
  TfLiteQuantization quantization;
} TfLiteTensor;

typedef struct TfLiteEvalTensor {
  TfLitePtrUnion data;
  TfLiteIntArray* dims;
  TfLiteType type;
} TfLiteEvalTensor;

typedef struct TfLiteNode {
  TfLiteIntArray* inputs;
  TfLiteIntArray* outputs;
  TfLiteIntArray* intermediates;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
} TfLiteNode;

typedef struct TfLiteContext {
  void* (*AllocatePersistentBuffer)(struct TfLiteContext* ctx, size_t bytes);
  void (*ReportError)(struct TfLiteContext*, const char* format, ...);
  void* impl_;
} TfLiteContext;

#define TF_LITE_ENSURE_OK(context, status) \
  do {                                     \
    const TfLiteStatus s_ = (status);      \
    if (s_ != kTfLiteOk) return s_;        \
  } while (0)

#endif
