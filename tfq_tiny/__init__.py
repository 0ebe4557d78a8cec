"""tfq_tiny: post-training 2-8 bit quantization of tinyML tf_keras models, exported to TFLM.

Importing tfq_tiny binds TensorFlow to Keras 2 (tf_keras), which TFMOT requires.
"""
from tfq_tiny import _compat  # noqa: F401  (must run before anything imports Keras)
from tfq_tiny.errors import TfqError
from tfq_tiny.keras3 import as_tf_keras, load_float_model
from tfq_tiny.quantization import (BitPolicy, load_model, quantize_annotate_layer,
                                   quantize_model, quantize_scope, save_model)

__version__ = "0.1.0"

__all__ = ["BitPolicy", "TfqError", "as_tf_keras", "load_float_model", "load_model",
           "quantize_annotate_layer", "quantize_model", "quantize_scope", "save_model",
           "__version__"]
