"""Single place where tfq_tiny binds to Keras 2 (tf_keras) and TFMOT.

TFMOT only works with Keras 2. Setting ``TF_USE_LEGACY_KERAS`` before TensorFlow is
imported makes ``tf.keras`` resolve to ``tf_keras`` too, so users never set it by hand.
Every module of the package imports ``keras``/``tfmot`` from here.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
# Not exported by TFMOT's public API, but part of every quantized model it builds.
from tensorflow_model_optimization.python.core.quantization.keras.quantize_annotate import (  # noqa: E402,E501
    QuantizeAnnotate)
from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import (  # noqa: E402,E501
    QuantizeLayer)

__all__ = ["tf", "keras", "tfmot", "QuantizeAnnotate", "QuantizeLayer"]
