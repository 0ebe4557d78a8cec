"""Split layers that deploy as two TFLite operators into those two layers.

Keras layers that TFLite's own converter lowers to two operators are split the same way here,
so that each quantized layer is one integer kernel with its own output grid:

- ``SeparableConv1D/2D`` -> ``DepthwiseConv1D/2D`` (``<name>_depthwise``, no bias) and a 1x1
  ``Conv1D/2D`` (``<name>_pointwise``, with the bias and fused activation; a softmax, sigmoid or
  tanh follows it as its own layer, as below);
- a weight layer with ``activation="softmax"`` (the usual ``Dense(n, activation="softmax")``
  classifier head) -> the linear layer (same name) and ``Softmax`` (``<name>_softmax``), and
  likewise ``"sigmoid"``/``"tanh"`` -> the linear layer and ``Activation`` (``<name>_sigmoid``,
  ``<name>_tanh``): TFLM's LOGISTIC and TANH are operators of their own;
- ``GlobalMaxPooling1D/2D`` -> a max pooling over the whole feature map (same name) and, unless
  ``keepdims``, a ``Reshape`` to channels (``<name>_flat``): TFLM's MAX_POOL_2D with a full
  window, which every bit width deploys, where TFLite's converter would emit REDUCE_MAX.

The outputs are the float model's (up to float32 summation order).
"""
from tfq_tiny._compat import keras
from tfq_tiny.graph import Graph, call_layer, clone_call, clone_layer, rebuild
from tfq_tiny.errors import UnsupportedLayerError
from tfq_tiny.quantization.configs import FIXED_GRID_RANGES, activation_name, weight_attr

layers = keras.layers


_GLOBAL_MAX = {layers.GlobalMaxPooling1D: layers.MaxPooling1D,
               layers.GlobalMaxPooling2D: layers.MaxPooling2D}


def _needs_split(layer):
    if type(layer) in _GLOBAL_MAX:
        return layer.get_config().get("data_format", "channels_last") == "channels_last" and \
            None not in layer.input_shape[1:]
    return type(layer) in _SEPARABLE or (
        weight_attr(layer) is not None and activation_name(layer) in FIXED_GRID_RANGES)


def _global_max(layer, x):
    window = tuple(layer.input_shape[1:-1])
    out = _GLOBAL_MAX[type(layer)](window, name=layer.name)(x)
    if layer.get_config().get("keepdims"):
        return out
    return layers.Reshape((layer.input_shape[-1],), name=f"{layer.name}_flat")(out)


_SEPARABLE = {layers.SeparableConv1D: (layers.DepthwiseConv1D, layers.Conv1D),
              layers.SeparableConv2D: (layers.DepthwiseConv2D, layers.Conv2D)}


def _separable(layer, x):
    config = layer.get_config()
    if config["padding"] == "causal":
        raise UnsupportedLayerError(
            f"SeparableConv1D '{layer.name}' has causal padding, which its depthwise half cannot "
            "have as a layer of its own (Keras' DepthwiseConv1D refuses it). Use a causal Conv1D, "
            "or padding='same'.")
    depthwise_type, pointwise_type = _SEPARABLE[type(layer)]
    depthwise_kernel, pointwise_kernel, *bias = layer.get_weights()
    depthwise = depthwise_type(
        config["kernel_size"], strides=config["strides"], padding=config["padding"],
        depth_multiplier=config["depth_multiplier"], data_format=config["data_format"],
        dilation_rate=config["dilation_rate"], use_bias=False, name=f"{layer.name}_depthwise")
    function = activation_name(layer)
    squash = function in FIXED_GRID_RANGES
    pointwise = pointwise_type(config["filters"], 1, data_format=config["data_format"],
                              activation="linear" if squash else config["activation"],
                              use_bias=config["use_bias"], name=f"{layer.name}_pointwise")
    y = depthwise(x)
    depthwise.set_weights([depthwise_kernel])
    out = pointwise(y)
    pointwise.set_weights([pointwise_kernel] + bias)
    return _fixed_grid_layer(function, layer.name)(out) if squash else out


def _fixed_grid_layer(function, name):
    if function == "softmax":
        return layers.Softmax(name=f"{name}_softmax")
    return layers.Activation(function, name=f"{name}_{function}")


def split_layers(model):
    """A copy of ``model`` with its two-operator layers split (the model itself if none)."""
    graph = Graph(model)
    if not any(_needs_split(node.layer) for node in graph):
        return model

    def transform(node, inputs):
        if node.name in graph.input_names:
            return inputs[0]
        layer = node.layer
        if not _needs_split(layer):
            return clone_call(node, inputs)
        if type(layer) in _SEPARABLE:
            return _separable(layer, inputs[0])
        if type(layer) in _GLOBAL_MAX:
            return _global_max(layer, inputs[0])
        linear = clone_layer(layer, activation="linear")
        out = call_layer(linear, inputs)
        linear.set_weights(layer.get_weights())
        return _fixed_grid_layer(activation_name(layer), layer.name)(out)

    return rebuild(graph, transform)
