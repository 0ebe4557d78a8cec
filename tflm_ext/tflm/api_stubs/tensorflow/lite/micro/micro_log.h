// Stand-in for TFLM's tensorflow/lite/micro/micro_log.h (compile check only).
#ifndef TFQ_STUB_TENSORFLOW_LITE_MICRO_MICRO_LOG_H_
#define TFQ_STUB_TENSORFLOW_LITE_MICRO_MICRO_LOG_H_
void MicroPrintf(const char* format, ...);
#endif
