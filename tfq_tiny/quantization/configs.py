"""TFMOT ``QuantizeConfig``s for the layers tinyML models use, and the registry that picks them.

Two configs cover everything: ``WeightLayerQuantizeConfig`` (a kernel quantized per output
channel, plus the layer's output) for Conv1D/Conv2D/DepthwiseConv1D/DepthwiseConv2D/Dense, and
``OutputQuantizeConfig`` (the output only) for ReLU/ReLU6/LeakyReLU, Add, pooling, softmax, sigmoid,
tanh and Concatenate layers.
Layers that cannot move a value off the grid (Flatten, Reshape, Dropout, MaxPooling,
ZeroPadding) pass through unwrapped, as their TFLite counterparts keep the input's
quantization.
"""
import numpy as np

from tfq_tiny._compat import keras, tfmot
from tfq_tiny.errors import UnsupportedLayerError
from tfq_tiny.quantization.quantizers import ActivationQuantizer, WeightQuantizer

layers = keras.layers

WEIGHT_LAYERS = {
    layers.DepthwiseConv1D: ("depthwise_kernel", (-2, -1)),
    layers.DepthwiseConv2D: ("depthwise_kernel", (-2, -1)),
    layers.Conv1D: ("kernel", (-1,)),
    layers.Conv2D: ("kernel", (-1,)),
    layers.Dense: ("kernel", (-1,)),
}
OUTPUT_LAYERS = (layers.ReLU, layers.Add, layers.Softmax, layers.Concatenate)
AVERAGE_POOL_LAYERS = (layers.AveragePooling1D, layers.AveragePooling2D,
                       layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D)
PASS_THROUGH_LAYERS = (layers.InputLayer, layers.Flatten, layers.Reshape, layers.Dropout,
                       layers.MaxPooling1D, layers.MaxPooling2D, layers.ZeroPadding1D,
                       layers.ZeroPadding2D)
FUSABLE_ACTIVATIONS = ("linear", "relu", "relu6")
FIXED_GRID_RANGES = {"softmax": (0.0, 255.0 / 256.0), "sigmoid": (0.0, 255.0 / 256.0),
                     "tanh": (-1.0, 127.0 / 128.0)}
"""Real output ranges of the functions TFLM runs as int8 SOFTMAX, LOGISTIC and TANH. Those
kernels read int8 and write a fixed grid, which these ranges give at 8 bits: scale 1/256 and
zero point -128 (softmax, sigmoid), scale 1/128 and zero point 0 (tanh)."""


def activation_name(layer):
    """'linear', 'relu', 'relu6' or another name for the layer's (fused) activation."""
    if isinstance(layer, layers.LeakyReLU):
        return "leaky_relu"
    if isinstance(layer, layers.ReLU):
        cfg = layer.get_config()
        if cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
            return "leaky_relu"
        max_value = cfg.get("max_value")
        if max_value is None:
            return "relu"
        return "relu6" if float(max_value) == 6.0 else f"relu{max_value}"
    if isinstance(layer, layers.Activation):
        return keras.activations.serialize(layer.activation)
    activation = getattr(layer, "activation", None)
    return "linear" if activation is None else keras.activations.serialize(activation)


def unwrap(layer):
    """The float layer inside a TFMOT QuantizeWrapper (other layers as they are)."""
    if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
        return layer.layer
    return layer


def is_relu(layer):
    """A ReLU/ReLU6 layer (ReLU or Activation) that TFLite can fuse into the operator before it."""
    layer = unwrap(layer)
    return isinstance(layer, (layers.ReLU, layers.Activation)) and \
        activation_name(layer) in ("relu", "relu6")


def fused_relu(graph, name):
    """The ReLU/ReLU6 node that deploys fused into ``name``'s operator, else None.

    The one rule for fusion (quantization, PTQ units, simulated requantization): ``name`` is a
    weighted layer or an Add with a linear activation, and its only consumer (``name`` not being
    a model output) is a ReLU/ReLU6. Works on float and on quantized graphs.
    """
    layer = unwrap(graph[name].layer)
    if activation_name(layer) != "linear" or \
            (weight_attr(layer) is None and not isinstance(layer, layers.Add)):
        return None
    nxt = graph.sole_consumer(name)
    return nxt if nxt is not None and is_relu(nxt.layer) else None


class _BaseConfig(tfmot.quantization.keras.QuantizeConfig):
    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [self.output_quantizer] if self.output_quantizer is not None else []

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()


class WeightLayerQuantizeConfig(_BaseConfig):
    """Kernel per output channel (symmetric) and the output per tensor (asymmetric).

    ``activation_bits=None`` (or ``quantize_output=False`` when a following ReLU quantizes
    the fused result) leaves the output in float.
    """

    def __init__(self, weight_attr, channel_axes, weight_bits, activation_bits=None,
                 weight_init="mse", activation_init="mse", quantize_output=True,
                 weight_rounding=None, tie_to_consumer=False):
        self.weight_attr = weight_attr
        self.channel_axes = tuple(channel_axes)
        self.weight_bits = weight_bits
        self.activation_bits = activation_bits
        self.weight_init = weight_init
        self.activation_init = activation_init
        self.quantize_output = bool(quantize_output)
        self.tie_to_consumer = bool(tie_to_consumer)
        self.weight_quantizer = WeightQuantizer(weight_bits, self.channel_axes, weight_init,
                                                weight_rounding)
        self.output_quantizer = (ActivationQuantizer(activation_bits, activation_init,
                                                     tie_to_consumer=tie_to_consumer)
                                 if activation_bits is not None and quantize_output else None)

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, self.weight_attr), self.weight_quantizer)]

    def set_quantize_weights(self, layer, quantize_weights):
        setattr(layer, self.weight_attr, quantize_weights[0])

    def get_config(self):
        return {"weight_attr": self.weight_attr, "channel_axes": list(self.channel_axes),
                "weight_bits": self.weight_bits, "activation_bits": self.activation_bits,
                "weight_init": self.weight_init, "activation_init": self.activation_init,
                "quantize_output": self.quantize_output,
                "weight_rounding": self.weight_quantizer.rounding.get_config(),
                "tie_to_consumer": self.tie_to_consumer}


class OutputQuantizeConfig(_BaseConfig):
    """Quantizes only the layer's output (ReLU, LeakyReLU, Add, pooling, softmax, sigmoid, tanh,
    Concatenate)."""

    def __init__(self, activation_bits, activation_init="mse", tie_to_input=False,
                 fixed_range=None, window=None, tie_to_consumer=False):
        self.activation_bits = activation_bits
        self.activation_init = activation_init
        self.tie_to_input = bool(tie_to_input)
        self.tie_to_consumer = bool(tie_to_consumer)
        self.fixed_range = None if fixed_range is None else tuple(fixed_range)
        self.window = window if self.tie_to_input else None
        self.output_quantizer = (
            ActivationQuantizer(activation_bits, activation_init, tie_to_input=tie_to_input,
                                fixed_range=fixed_range, window=self.window,
                                tie_to_consumer=tie_to_consumer)
            if activation_bits is not None else None)

    def get_weights_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def get_config(self):
        return {"activation_bits": self.activation_bits,
                "activation_init": self.activation_init, "tie_to_input": self.tie_to_input,
                "fixed_range": None if self.fixed_range is None else list(self.fixed_range),
                "window": self.window, "tie_to_consumer": self.tie_to_consumer}


def weight_attr(layer):
    """(kernel attribute, channel axes) of a supported weight layer, else None."""
    return WEIGHT_LAYERS.get(type(layer))


def fixed_grid_function(layer):
    """'softmax', 'sigmoid' or 'tanh' for a Softmax layer or an Activation of those (deployed
    as TFLM's int8 SOFTMAX, LOGISTIC or TANH: int8 input, fixed output grid), else None."""
    layer = unwrap(layer)
    if isinstance(layer, layers.Softmax):
        return "softmax"
    if isinstance(layer, layers.Activation) and activation_name(layer) in FIXED_GRID_RANGES:
        return activation_name(layer)
    return None


def is_pass_through(layer):
    return isinstance(layer, PASS_THROUGH_LAYERS)


def is_concatenate(layer):
    return isinstance(unwrap(layer), layers.Concatenate)


DEPTHWISE_LAYERS = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)


def is_depthwise(layer):
    """A DepthwiseConv1D/2D (TFLite's DEPTHWISE_CONV_2D; a 1-D one over ``[N, 1, T, C]``):
    kernel ``[*window, C, multiplier]``, one output channel per (input channel, multiplier)."""
    return isinstance(unwrap(layer), DEPTHWISE_LAYERS)


def leaky_relu_alpha(layer):
    """The negative slope of a LeakyReLU, or of a ReLU with ``negative_slope`` (no threshold or
    cap), deployed as TFLM's int8 LEAKY_RELU; None for any other layer."""
    layer = unwrap(layer)
    if isinstance(layer, layers.LeakyReLU):
        return float(layer.get_config()["alpha"])
    if isinstance(layer, layers.ReLU):
        cfg = layer.get_config()
        if cfg.get("negative_slope") and not cfg.get("threshold") and cfg.get("max_value") is None:
            return float(cfg["negative_slope"])
    return None


def int8_only(layer):
    """True for layers TFLM runs with int8 kernels only, reading and writing 8-bit tensors:
    softmax, sigmoid, tanh and Concatenate (CONCATENATION copies int8 values)."""
    return fixed_grid_function(layer) is not None or is_concatenate(layer)


def ties_average_pool(input_bits, output_bits):
    """True when an average pool keeps its input's grid: only at 8 bits in and out, where it
    deploys as TFLite's builtin AVERAGE_POOL_2D (which requires one grid). Below 8 bits it gets
    its own grid (TFQ_AVERAGE_POOL_2D requantizes): pooled features put on the grid of a low-bit
    pre-pool ReLU keep only a few of its levels (Res8 W4A4: 68 % tied vs 75 % untied)."""
    return input_bits == 8 and output_bits == 8


def average_pool_window(layer):
    """Elements per window of an average pool when every window is full, else None."""
    spatial = list(layer.input_shape[1:-1])
    if isinstance(layer, (layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D)):
        sizes = spatial
    elif layer.get_config().get("padding") == "valid":
        sizes = list(layer.pool_size)
    else:
        return None
    if any(size is None for size in sizes):
        return None
    return int(np.prod(sizes))


def default_config(layer, weight_bits, activation_bits, weight_init="mse",
                   activation_init="mse", quantize_output=True, input_bits=None,
                   tie_to_consumer=False):
    """The QuantizeConfig for ``layer``; None for pass-through layers. ``input_bits`` (the width
    of the layer's input tensor) decides whether an average pool is tied to its input's grid;
    ``tie_to_consumer`` puts the output on the grid of the Concatenate it feeds instead.

    Raises UnsupportedLayerError naming the layer when there is no config for it.
    """
    if is_pass_through(layer):
        return None
    for layer_type, (attr, axes) in WEIGHT_LAYERS.items():
        if type(layer) is layer_type:
            act = activation_name(layer)
            if act not in FUSABLE_ACTIVATIONS:
                raise UnsupportedLayerError(
                    f"Layer '{layer.name}' ({type(layer).__name__}) has activation '{act}'; "
                    f"only {list(FUSABLE_ACTIVATIONS)} can be fused into a quantized kernel. "
                    "Use one of those, or split the activation into its own layer.")
            return WeightLayerQuantizeConfig(attr, axes, weight_bits, activation_bits,
                                             weight_init, activation_init, quantize_output,
                                             tie_to_consumer=tie_to_consumer)
    out_bits = activation_bits if quantize_output else None
    tie = {"tie_to_consumer": tie_to_consumer}
    if isinstance(layer, (layers.ReLU, layers.Activation)) and \
            activation_name(layer) in ("relu", "relu6"):
        return OutputQuantizeConfig(out_bits, activation_init, **tie)
    if (function := fixed_grid_function(layer)) is not None:
        return OutputQuantizeConfig(out_bits, activation_init,
                                    fixed_range=FIXED_GRID_RANGES[function])
    if isinstance(layer, AVERAGE_POOL_LAYERS):
        tied = ties_average_pool(input_bits, out_bits) and not tie_to_consumer
        return OutputQuantizeConfig(out_bits, activation_init, tie_to_input=tied,
                                    window=average_pool_window(layer) if tied else None, **tie)
    if isinstance(layer, (layers.ReLU, layers.LeakyReLU)) and leaky_relu_alpha(layer) is None \
            and activation_name(layer) not in ("relu", "relu6"):
        raise UnsupportedLayerError(
            f"Layer '{layer.name}' ({type(layer).__name__} {layer.get_config()}) has no TFLM "
            "kernel: TFLite deploys ReLU, ReLU6 (max_value 6) and LeakyReLU (negative_slope "
            "without threshold or max_value). Use one of those.")
    if isinstance(layer, OUTPUT_LAYERS + (layers.LeakyReLU,)):
        return OutputQuantizeConfig(out_bits, activation_init, **tie)
    if isinstance(layer, layers.BatchNormalization):
        raise UnsupportedLayerError(
            f"BatchNormalization '{layer.name}' could not be folded: it must directly follow a "
            "Conv1D/Conv2D/DepthwiseConv2D/Dense layer with a linear activation whose only "
            "consumer it is. Move it after such a layer, or remove it.")
    raise UnsupportedLayerError(
        f"Layer '{layer.name}' of type {type(layer).__name__} is not supported. Supported: "
        "Conv1D, Conv2D, DepthwiseConv1D/2D, Dense, ReLU/ReLU6/LeakyReLU, Add, Average/Max/GlobalAverage/"
        "GlobalMax pooling, Concatenate, Softmax/sigmoid/tanh, pass-through Flatten/Reshape/Dropout/ZeroPadding, and "
        "Rescaling/Normalization/BatchNormalization where they fold into a weight layer. Give it a "
        "QuantizeConfig with tfq_tiny.quantize_annotate_layer(layer, config), or replace it.")
