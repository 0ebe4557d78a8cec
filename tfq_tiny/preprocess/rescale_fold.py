"""Fold input scaling (``Rescaling``, adapted ``Normalization``) into the weight layers after it.

Keras models usually start with ``Rescaling(1/255)`` or a ``Normalization`` layer. Neither has an
integer kernel, and neither needs one: ``y = x * scale + offset`` per channel folds into every
Conv/Dense layer reading ``y`` (kernel rows times ``scale``; ``offset`` times the kernel summed
over its window added to the bias). The model then takes the raw input (pixels 0-255, raw sensor
units), which is what a device feeds it, and the input quantizer calibrates on that.

The fold is exact except where the layer after it pads: a SAME convolution pads ``y`` with zeros,
which after folding would be ``x = 0``, i.e. ``y = offset``. A non-zero offset into a padded
convolution is therefore refused, with what to do instead.
"""
import numpy as np

from tfq_tiny._compat import keras
from tfq_tiny.errors import UnsupportedLayerError
from tfq_tiny.graph import Graph, clone_call, rebuild
from tfq_tiny.quantization.configs import is_depthwise, weight_attr

layers = keras.layers
SCALING_LAYERS = (layers.Rescaling, layers.Normalization)


def channel_affine(layer):
    """(scale, offset) of ``layer`` as arrays over the last axis (length 1 or C), or None when
    they vary along another axis."""
    if isinstance(layer, layers.Rescaling):
        scale, offset = layer.scale, layer.offset
    else:
        std = np.maximum(np.sqrt(np.asarray(layer.variance, np.float64)), keras.backend.epsilon())
        mean = np.asarray(layer.mean, np.float64)
        scale, offset = (std, mean) if layer.invert else (1.0 / std, -mean / std)
    rank = len(layer.input_shape)
    out = []
    for value in (scale, offset):
        value = np.asarray(value, np.float64)
        if value.ndim > rank or any(d != 1 for d in value.shape[:-1]):
            return None
        out.append(value.reshape(-1))
    return tuple(out)


def _refusal(graph, node, affine):
    """Why ``node`` (a scaling layer) cannot fold, or None when it can."""
    name = f"{type(node.layer).__name__} '{node.name}'"
    if affine is None:
        return (f"{name} scales along more than the channel (last) axis; only per-channel "
                "scaling folds into the next layer.")
    if node.name in graph.output_names or not graph.consumers(node.name):
        return f"{name} is a model output; there is no layer to fold it into."
    offset = affine[1]
    for consumer in (graph[c] for c in graph.consumers(node.name)):
        layer = consumer.layer
        config = layer.get_config()
        if weight_attr(layer) is None or config.get("groups", 1) != 1 or \
                config.get("data_format", "channels_last") != "channels_last":
            return (f"{name} feeds '{consumer.name}' ({type(layer).__name__}); it folds only into "
                    "Conv1D/Conv2D/DepthwiseConv2D/Dense layers (channels last, no groups). Move "
                    "the scaling into your input pipeline, or put it directly before such a layer.")
        if np.any(offset != 0) and config.get("padding", "valid") != "valid":
            return (f"{name} has a non-zero offset and feeds '{consumer.name}', which pads: after "
                    "folding its padding would stand for input 0 instead of scaled 0. Give "
                    f"'{consumer.name}' padding='valid', or apply the offset in your input pipeline "
                    "and keep only the scale in the model.")
    return None


def _folded_weights(layer, scale, offset):
    """``layer``'s [kernel, bias] when its input is ``x * scale + offset`` (per input channel)."""
    weights = layer.get_weights()
    dtype = weights[0].dtype
    kernel = weights[0].astype(np.float64)
    bias = weights[1].astype(np.float64) if layer.use_bias else 0.0
    channels = kernel.shape[-2]
    scale = np.broadcast_to(scale, (channels,)).reshape(channels, 1)
    offset = np.broadcast_to(offset, (channels,)).reshape(channels, 1)
    window = tuple(range(kernel.ndim - 2))
    if is_depthwise(layer):
        shift = (kernel.sum(axis=window) * offset).reshape(-1)
    else:
        shift = (kernel.sum(axis=window) * offset).sum(axis=0)
    return [(kernel * scale).astype(dtype), (bias + shift).astype(dtype)]


def fold_input_scaling(model):
    """A copy of ``model`` with its Rescaling/Normalization layers folded into the weight layers
    they feed (the model itself if it has none). Raises UnsupportedLayerError when one cannot
    fold, saying why and what to do."""
    graph = Graph(model)
    scalings = {n.name: channel_affine(n.layer) for n in graph
                if isinstance(n.layer, SCALING_LAYERS)}
    if not scalings:
        return model
    for name, affine in scalings.items():
        reason = _refusal(graph, graph[name], affine)
        if reason:
            raise UnsupportedLayerError(reason)

    def transform(node, inputs):
        if node.name in graph.input_names or node.name in scalings:
            return inputs[0]
        scaled = [p for p in node.inputs if p in scalings]
        if not scaled:
            return clone_call(node, inputs)
        return clone_call(node, inputs, _folded_weights(node.layer, *scalings[scaled[0]]),
                          use_bias=True)

    return rebuild(graph, transform)
