"""Fold a ZeroPadding layer into the convolution after it, as that convolution's SAME padding.

Keras writes a strided convolution as ``ZeroPadding2D(((0, 1), (0, 1)))`` and a VALID convolution
(``keras.applications.MobileNet`` does so at every stride-2 depthwise layer). Where the explicit
padding equals what SAME padding would add, the pair is one TFLite convolution with SAME padding,
which pads with the input's zero point, i.e. real zeros, as ZeroPadding does. There is no packed
PAD kernel, so this is how such a model deploys; outputs are unchanged.
"""
from tfq_tiny._compat import keras
from tfq_tiny.graph import Graph, clone_call, rebuild

layers = keras.layers
_PADS = (layers.ZeroPadding1D, layers.ZeroPadding2D)
_CONVS = (layers.Conv1D, layers.Conv2D, layers.DepthwiseConv1D, layers.DepthwiseConv2D)


def _same_padding(size, kernel, stride, dilation):
    """(before, after) that TF's SAME padding adds along one spatial axis of ``size``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _explicit_padding(layer):
    padding = layer.get_config()["padding"]
    if isinstance(layer, layers.ZeroPadding1D):
        return [tuple(padding)]
    return [tuple(p) for p in padding]


def _folds_into(graph, node):
    """The VALID convolution that ``node`` (a ZeroPadding layer) folds into, or None."""
    consumer = graph.sole_consumer(node.name)
    if consumer is None or not isinstance(consumer.layer, _CONVS):
        return None
    conv = consumer.layer.get_config()
    if conv["padding"] != "valid" or conv.get("data_format", "channels_last") != "channels_last":
        return None
    sizes = node.layer.input_shape[1:-1]
    if any(s is None for s in sizes):
        return None
    expected = [_same_padding(s, k, st, d) for s, k, st, d in
                zip(sizes, conv["kernel_size"], conv["strides"], conv["dilation_rate"])]
    return consumer if _explicit_padding(node.layer) == expected else None


def fold_zero_padding(model):
    """A copy of ``model`` with every foldable ZeroPadding layer folded (the model if none)."""
    graph = Graph(model)
    folds = {}
    for node in graph:
        if isinstance(node.layer, _PADS):
            conv = _folds_into(graph, node)
            if conv is not None:
                folds[node.name] = conv.name
    if not folds:
        return model
    same = set(folds.values())

    def transform(node, inputs):
        if node.name in graph.input_names or node.name in folds:
            return inputs[0]
        if node.name in same:
            return clone_call(node, inputs, padding="same")
        return clone_call(node, inputs)

    return rebuild(graph, transform)
