"""Quantization-aware fine-tuning (QAT) of quantized models: the stage after a mixed-precision
search (HAQ-for-MCU) or PTQ, training weights and quantizer ranges with straight-through
gradients, resumable per epoch."""
from tfq_tiny.qat.finetune import FineTuner, FinetuneError, QATModel, finetune

__all__ = ["FineTuner", "FinetuneError", "QATModel", "finetune"]
