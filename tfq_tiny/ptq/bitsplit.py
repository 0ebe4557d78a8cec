"""opt_bits: BitSplit (Wang et al. 2020) — the integer weight split into bit planes.

The paper splits a code into ternary planes, which reach only the narrow range; to keep the
full range of our numeric contract, a ``b``-bit code here is its two's-complement split,
``-2^(b-1) t_{b-1} + sum_{i<b-1} 2^i t_i`` with binary planes ``t_i``. Starting from nearest
rounding, each plane is optimised with the others fixed, most significant first, and the
per-channel scale is re-fitted in closed form between rounds ("split and stitch"). The objective is the layer's
output error on its cached (quantized) inputs, ``||X (W_hat - W)||^2 = (W_hat - W)^T H (W_hat
- W)`` with ``H = X^T X`` from the unit's im2col patches; each plane is solved by exact
coordinate descent over its ternary entries. Layer-wise only, as in the paper: the shared
reconstruction loop caches the inputs and calls ``solve`` instead of a gradient fit.
"""
import numpy as np

from tfq_tiny._compat import keras, tf
from tfq_tiny.ptq.optimiser import Optimiser, register, weight_slots
from tfq_tiny.quantization.configs import is_depthwise
from tfq_tiny.quantization.grid import round_half_away

MAX_ROWS = 1 << 16
ROUNDS = 2
SWEEPS = 2


def plane_weights(bits):
    """Value of a set bit in each plane: 1, 2, ..., 2^(b-2), -2^(b-1)."""
    weights = 2.0 ** np.arange(bits)
    weights[-1] = -weights[-1]
    return weights


def split_into_planes(codes, bits):
    """Binary planes ``t`` with ``plane_weights(bits) . t == codes`` (two's complement)."""
    unsigned = np.asarray(codes).astype(np.int64) & ((1 << bits) - 1)
    return np.stack([(unsigned >> i) & 1 for i in range(bits)]).astype(np.float64)


def _patches(layer, x, rng):
    """Im2col rows of ``layer``'s input: [rows, K] (depthwise: [rows, K, C])."""
    x = tf.convert_to_tensor(x, tf.float32)
    if isinstance(layer, keras.layers.Dense):
        rows = tf.reshape(x, [-1, x.shape[-1]]).numpy()
    else:
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.DepthwiseConv1D)):
            x = tf.expand_dims(x, 1)
            size, stride, rate = (1,) + layer.kernel_size, (1,) + layer.strides, \
                (1,) + layer.dilation_rate
        else:
            size, stride, rate = layer.kernel_size, layer.strides, layer.dilation_rate
        patches = tf.image.extract_patches(x, [1, *size, 1], [1, *stride, 1], [1, *rate, 1],
                                           layer.padding.upper()).numpy()
        rows = patches.reshape(-1, patches.shape[-1])
        if is_depthwise(layer):
            rows = rows.reshape(len(rows), size[0] * size[1], x.shape[-1])
    if len(rows) > MAX_ROWS:
        rows = rows[rng.choice(len(rows), MAX_ROWS, replace=False)]
    return rows.astype(np.float64)


def _hessians(layer, rows, out_channels):
    """H per output channel, [O, K, K] (shared H broadcast for conv/dense)."""
    if rows.ndim == 3:
        per_input = np.einsum("nkc,nlc->ckl", rows, rows)
        multiplier = out_channels // per_input.shape[0]
        return np.repeat(per_input, multiplier, axis=0)
    return np.broadcast_to(rows.T @ rows, (out_channels,) + (rows.shape[1],) * 2)


def _solve_plane(planes, i, scale, w, h):
    """Exact coordinate descent on plane ``i`` of every channel; arrays are [O, K] / [O, K, K]."""
    value = plane_weights(len(planes))
    codes = np.tensordot(value, planes, axes=1)
    he = np.einsum("okl,ol->ok", h, scale[:, None] * codes - w)
    channels = np.arange(w.shape[0])
    for _ in range(SWEEPS):
        for k in range(w.shape[1]):
            diag = h[:, k, k]
            best_gain = np.zeros(w.shape[0])
            best_v = planes[i][:, k].copy()
            for v in (0.0, 1.0):
                dw = scale * value[i] * (v - planes[i][:, k])
                gain = 2.0 * dw * he[:, k] + dw * dw * diag
                better = gain < best_gain - 1e-12
                best_gain = np.where(better, gain, best_gain)
                best_v = np.where(better, v, best_v)
            dw = scale * value[i] * (best_v - planes[i][:, k])
            if np.any(dw):
                he += h[channels, :, k] * dw[:, None]
                planes[i][:, k] = best_v


def _refit_scale(codes, w, h, scale):
    num = np.einsum("ok,okl,ol->o", codes, h, w)
    den = np.einsum("ok,okl,ol->o", codes, h, codes)
    return np.where((den > 0) & (num > 0), num / np.maximum(den, 1e-30), scale)


@register
class BitSplit(Optimiser):
    name = "bits"

    def prepare(self, unit):
        return []

    def solve(self, unit, inputs):
        """Optimise every weight layer of ``unit`` from its cached input ``inputs``."""
        if len(unit.weight_layers) != 1 or isinstance(inputs, dict):
            raise ValueError("BitSplit is layer-wise only: one weight layer per unit.")
        slot = weight_slots(unit)[0]
        layer = slot.layer.layer
        rng = np.random.default_rng(self.config.seed)
        kernel = slot.weight.numpy().astype(np.float64)
        shape = kernel.shape
        depthwise = is_depthwise(layer)
        w = (kernel.reshape(int(np.prod(shape[:-2])), -1) if depthwise
             else kernel.reshape(-1, shape[-1])).T
        scale = slot.variables["scale"].numpy().astype(np.float64).reshape(-1)
        h = _hessians(layer, _patches(layer, inputs, rng), w.shape[0])
        h = h / max(float(np.mean(np.diagonal(h, axis1=1, axis2=2))), 1e-30)
        bits = slot.quantizer.num_bits
        qmin, qmax = slot.quantizer.int_range
        planes = split_into_planes(np.clip(round_half_away(w / scale[:, None]), qmin, qmax), bits)
        for _ in range(ROUNDS):
            for i in reversed(range(bits)):
                _solve_plane(planes, i, scale, w, h)
            scale = _refit_scale(np.tensordot(plane_weights(bits), planes, axes=1), w, h, scale)
        codes = np.tensordot(plane_weights(bits), planes, axes=1)
        slot.variables["scale"].assign(scale.reshape(slot.variables["scale"].shape))
        new_kernel = (codes * scale[:, None]).T
        slot.weight.assign(new_kernel.reshape(shape).astype(np.float32))
