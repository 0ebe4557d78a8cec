"""Fold BatchNormalization into the Conv/Dense layer before it (inference statistics)."""
import numpy as np

from tfq_tiny._compat import keras
from tfq_tiny.graph import Graph, clone_call, rebuild
from tfq_tiny.quantization.configs import activation_name, weight_attr


def _bn_factors(bn):
    """(multiplier, offset) per channel: BN(x) = x * multiplier + offset."""
    cfg = bn.get_config()
    params = dict(zip([w.name.split("/")[-1].split(":")[0] for w in bn.weights], bn.get_weights()))
    mean, var = params["moving_mean"], params["moving_variance"]
    gamma = params.get("gamma", np.ones_like(mean))
    beta = params.get("beta", np.zeros_like(mean))
    multiplier = gamma / np.sqrt(var + cfg["epsilon"])
    return multiplier, beta - mean * multiplier


def _foldable(graph, node):
    """The weight layer ``node`` (a BN) can fold into, or None."""
    if len(node.inputs) != 1:
        return None
    producer = graph[node.inputs[0]]
    axis = node.layer.get_config()["axis"]
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    rank = len(node.layer.input_shape)
    if not isinstance(axis, int) or axis % rank != rank - 1:
        return None
    if weight_attr(producer.layer) is None or activation_name(producer.layer) != "linear":
        return None
    if graph.sole_consumer(producer.name) is not node:
        return None
    return producer


def fold_batch_norm(model):
    """A copy of ``model`` with every foldable BatchNormalization folded into its producer."""
    graph = Graph(model)
    folded = {}
    for node in graph:
        if isinstance(node.layer, keras.layers.BatchNormalization):
            producer = _foldable(graph, node)
            if producer is not None:
                folded[producer.name] = node.layer
    skip = {bn.name for bn in folded.values()}

    def transform(node, inputs):
        if node.name in graph.input_names or node.name in skip:
            return inputs[0]
        if node.name not in folded:
            return clone_call(node, inputs)
        multiplier, offset = _bn_factors(folded[node.name])
        layer = node.layer
        kernel = layer.get_weights()[0]
        bias = layer.get_weights()[1] if layer.use_bias else 0.0
        out_shape = kernel.shape[-2:] if weight_attr(layer)[1] == (-2, -1) else kernel.shape[-1:]
        kernel = kernel * multiplier.reshape(out_shape)
        bias = np.asarray(bias) * multiplier + offset
        return clone_call(node, inputs, [kernel, bias], use_bias=True)

    return rebuild(graph, transform)
