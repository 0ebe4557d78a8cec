"""Cross-layer equalization (Nagel et al., 2019, "Data-Free Quantization").

For consecutive weight layers ``l1 -> [ReLU] -> l2`` where ``l1``'s output reaches only
``l2``, output channel ``c`` of ``l1`` is divided by ``s_c`` and input channel ``c`` of
``l2`` multiplied by it, with ``s_c = sqrt(r1_c / r2_c)`` (``r`` = per-channel absolute
weight range). ReLU is positively homogeneous, so the float function is unchanged while the
per-channel ranges of both layers become equal, which helps per-tensor and low-bit grids.
ReLU6 is not homogeneous (it clips at 6); pairs through ReLU6 are left alone.
"""
import numpy as np

from tfq_tiny._compat import keras
from tfq_tiny.graph import Graph, copy_model
from tfq_tiny.quantization.configs import activation_name, is_depthwise, weight_attr

_MAX_ROUNDS = 20
_TOL = 1e-6


def _window_axes(kernel):
    """The window axes of a depthwise kernel ``[*window, C, multiplier]``."""
    return tuple(range(kernel.ndim - 2))


def _out_absmax(layer):
    k = layer.get_weights()[0]
    if is_depthwise(layer):
        return np.max(np.abs(k), axis=_window_axes(k)).reshape(-1)
    return np.max(np.abs(k.reshape(-1, k.shape[-1])), axis=0)


def _in_absmax(layer):
    k = layer.get_weights()[0]
    if is_depthwise(layer):
        if k.shape[-1] != 1:
            return None
        return np.max(np.abs(k), axis=_window_axes(k) + (k.ndim - 1,))
    return np.max(np.abs(np.moveaxis(k, -2, 0).reshape(k.shape[-2], -1)), axis=1)


def _scale_out(layer, s):
    weights = layer.get_weights()
    k = weights[0]
    shape = k.shape[-2:] if is_depthwise(layer) else k.shape[-1:]
    weights[0] = k / s.reshape(shape)
    if layer.use_bias:
        weights[1] = weights[1] / s
    layer.set_weights(weights)


def _scale_in(layer, s):
    weights = layer.get_weights()
    k = weights[0]
    shape = [1] * k.ndim
    shape[-2] = s.size
    weights[0] = k * s.reshape(shape)
    layer.set_weights(weights)


def equalization_pairs(graph):
    """(l1, l2) layer pairs that CLE can equalize in ``graph``."""
    pairs = []
    for node in graph:
        if weight_attr(node.layer) is None or isinstance(node.layer, keras.layers.Dense):
            continue
        act = activation_name(node.layer)
        if act not in ("linear", "relu"):
            continue
        nxt = graph.sole_consumer(node.name)
        if nxt is not None and act == "linear" and isinstance(nxt.layer, keras.layers.ReLU) \
                and activation_name(nxt.layer) == "relu":
            nxt = graph.sole_consumer(nxt.name)
        if nxt is None or weight_attr(nxt.layer) is None or len(nxt.inputs) != 1:
            continue
        if activation_name(nxt.layer) not in ("linear", "relu", "relu6"):
            continue
        if _in_absmax(nxt.layer) is None:
            continue
        pairs.append((node.layer, nxt.layer))
    return pairs


def cross_layer_equalize(model, rounds=_MAX_ROUNDS):
    """A copy of ``model`` (BN already folded) with CLE applied to every eligible pair."""
    model = copy_model(model)
    pairs = equalization_pairs(Graph(model))
    for _ in range(rounds):
        change = 0.0
        for l1, l2 in pairs:
            r1, r2 = _out_absmax(l1), _in_absmax(l2)
            if r1.shape != r2.shape:
                continue
            valid = (r1 > 0) & (r2 > 0)
            s = np.ones_like(r1)
            s[valid] = np.sqrt(r1[valid] / r2[valid])
            _scale_out(l1, s)
            _scale_in(l2, s)
            change = max(change, float(np.max(np.abs(s - 1.0))))
        if change < _TOL:
            break
    return model
