/* C ABI of the tfq_tiny core kernels (used by tfq_tiny/runtime/native.py via
 * ctypes; usable from any C caller). Every function returns a status code:
 * 0 on success, otherwise a tfq::Status value (tfq_status_string() explains
 * it), and writes nothing on error.
 *
 * All structs contain only 32/64-bit fields in a fixed order; the Python
 * side checks their sizes with tfq_struct_size() at load time.
 */
#ifndef TFQ_TINY_TFLM_EXT_CAPI_TFQ_CAPI_H_
#define TFQ_TINY_TFLM_EXT_CAPI_TFQ_CAPI_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define TFQ_CAPI_EXPORT __declspec(dllexport)
#else
#define TFQ_CAPI_EXPORT __attribute__((visibility("default")))
#endif

/* 2: tfq_pool_params_t gained zero points and a multiplier; the average pool
 * requantizes. */
#define TFQ_CAPI_VERSION 2

/* A packed tensor: `nbytes` bytes at `data` hold prod(dims[:rank]) signed
 * `bits`-bit elements (bits in {2, 4, 8}), TFLite INT4/INT2 packing. */
typedef struct tfq_tensor_t {
  void* data;
  uint64_t nbytes;
  int32_t bits;
  int32_t rank;
  int32_t dims[4];
} tfq_tensor_t;

/* Offsets follow TFLM: input_offset = -input_zero_point,
 * output_offset = +output_zero_point. pad_* is the padding before
 * (top/left). */
typedef struct tfq_conv_params_t {
  int32_t stride_height, stride_width;
  int32_t dilation_height, dilation_width;
  int32_t pad_height, pad_width;
  int32_t input_offset, output_offset;
  int32_t act_min, act_max;
} tfq_conv_params_t;

typedef struct tfq_depthwise_params_t {
  int32_t stride_height, stride_width;
  int32_t dilation_height, dilation_width;
  int32_t pad_height, pad_width;
  int32_t depth_multiplier;
  int32_t input_offset, output_offset;
  int32_t act_min, act_max;
} tfq_depthwise_params_t;

typedef struct tfq_fc_params_t {
  int32_t input_offset, output_offset;
  int32_t act_min, act_max;
} tfq_fc_params_t;

typedef struct tfq_add_params_t {
  int32_t input1_offset, input2_offset, output_offset;
  int32_t left_shift;
  int32_t input1_multiplier, input1_shift;
  int32_t input2_multiplier, input2_shift;
  int32_t output_multiplier, output_shift;
  int32_t act_min, act_max;
} tfq_add_params_t;

/* Pools: zero points (not offsets). tfq_average_pool_2d requantizes with
 * them and output_multiplier/output_shift (QuantizeMultiplier of
 * input_scale / output_scale); tfq_max_pool_2d ignores those four fields. */
typedef struct tfq_pool_params_t {
  int32_t filter_height, filter_width;
  int32_t stride_height, stride_width;
  int32_t pad_height, pad_width;
  int32_t input_zero_point, output_zero_point;
  int32_t output_multiplier, output_shift;
  int32_t act_min, act_max;
} tfq_pool_params_t;

enum {
  TFQ_STRUCT_TENSOR = 0,
  TFQ_STRUCT_CONV_PARAMS = 1,
  TFQ_STRUCT_DEPTHWISE_PARAMS = 2,
  TFQ_STRUCT_FC_PARAMS = 3,
  TFQ_STRUCT_ADD_PARAMS = 4,
  TFQ_STRUCT_POOL_PARAMS = 5
};

TFQ_CAPI_EXPORT int32_t tfq_abi_version(void);
/* sizeof() of one of the structs above (TFQ_STRUCT_*), -1 if unknown. */
TFQ_CAPI_EXPORT int32_t tfq_struct_size(int32_t which);
TFQ_CAPI_EXPORT const char* tfq_status_string(int32_t status);

/* input [N,H,W,C], filter [O,KH,KW,C/groups], output [N,OH,OW,O];
 * bias may be NULL (bias_count ignored), else bias_count == O;
 * quant_count == O. */
TFQ_CAPI_EXPORT int32_t tfq_conv_2d(const tfq_conv_params_t* params,
                                    const int32_t* output_multiplier,
                                    const int32_t* output_shift,
                                    int32_t quant_count,
                                    const tfq_tensor_t* input,
                                    const tfq_tensor_t* filter,
                                    const int32_t* bias, int32_t bias_count,
                                    const tfq_tensor_t* output);

/* input [N,H,W,C], filter [1,KH,KW,C*M], output [N,OH,OW,C*M]. */
TFQ_CAPI_EXPORT int32_t tfq_depthwise_conv_2d(
    const tfq_depthwise_params_t* params, const int32_t* output_multiplier,
    const int32_t* output_shift, int32_t quant_count,
    const tfq_tensor_t* input, const tfq_tensor_t* filter,
    const int32_t* bias, int32_t bias_count, const tfq_tensor_t* output);

/* input [N,K], filter [O,K], output [N,O]; quant_count is O or 1. */
TFQ_CAPI_EXPORT int32_t tfq_fully_connected(
    const tfq_fc_params_t* params, const int32_t* output_multiplier,
    const int32_t* output_shift, int32_t quant_count,
    const tfq_tensor_t* input, const tfq_tensor_t* filter,
    const int32_t* bias, int32_t bias_count, const tfq_tensor_t* output);

/* Same-shape element-wise add (rank 1..4). */
TFQ_CAPI_EXPORT int32_t tfq_add(const tfq_add_params_t* params,
                                const tfq_tensor_t* input1,
                                const tfq_tensor_t* input2,
                                const tfq_tensor_t* output);

/* input [N,H,W,C], output [N,OH,OW,C]. The average pool's output has its own
 * scale and zero point: per window of n in-image elements,
 * clamp(floor((acc * output_multiplier + d / 2) / d) + output_zp, act_min,
 * act_max) with acc = sum(x - input_zp), d = n * 2^(31 - output_shift): one
 * rounding of acc * (input_scale / output_scale) / n. */
TFQ_CAPI_EXPORT int32_t tfq_average_pool_2d(const tfq_pool_params_t* params,
                                            const tfq_tensor_t* input,
                                            const tfq_tensor_t* output);
TFQ_CAPI_EXPORT int32_t tfq_max_pool_2d(const tfq_pool_params_t* params,
                                        const tfq_tensor_t* input,
                                        const tfq_tensor_t* output);

/* Element-wise LEAKY_RELU (input and output of one shape): offsets as above;
 * the identity multiplier/shift apply where x - input_zp >= 0, the alpha ones
 * below (QuantizeMultiplier's form, shift in [-31, 30]). */
TFQ_CAPI_EXPORT int32_t tfq_leaky_relu(int32_t input_offset, int32_t output_offset,
                                       int32_t identity_multiplier,
                                       int32_t identity_shift,
                                       int32_t alpha_multiplier,
                                       int32_t alpha_shift,
                                       const tfq_tensor_t* input,
                                       const tfq_tensor_t* output);

TFQ_CAPI_EXPORT int32_t tfq_pack(const int8_t* values, int32_t count,
                                 int32_t bits, uint8_t* out,
                                 uint64_t out_bytes);
TFQ_CAPI_EXPORT int32_t tfq_unpack(const uint8_t* packed,
                                   uint64_t packed_bytes, int32_t count,
                                   int32_t bits, int8_t* out,
                                   uint64_t out_count);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* TFQ_TINY_TFLM_EXT_CAPI_TFQ_CAPI_H_ */
