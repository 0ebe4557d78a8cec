"""TFMOT ``Quantizer``s that put tensors on the b-bit grid of ``grid.py``.

State lives in layer variables created by ``build``: ``scale`` and ``zero_point`` (float,
integer-valued zero point), plus whatever the rounding strategy adds. Calibration writes
them; PTQ optimisers may train them (LSQ) or swap the rounding (AdaRound, BitSplit). The
forward pass is ``x_hat = (clamp(round(x / s) + zp, qmin, qmax) - zp) * s`` with
straight-through gradients for ``round`` (and for the zero point's rounding).
"""
import numpy as np

from tfq_tiny._compat import keras, tf, tfmot
from tfq_tiny.quantization.grid import check_bits, int_range, tf_round_half_away
from tfq_tiny.quantization.range_init import ACTIVATION_INIT_METHODS, INIT_METHODS
from tfq_tiny.quantization.fused import fake_quant
from tfq_tiny.quantization.rounding import NearestRounding, get_rounding

_Quantizer = tfmot.quantization.keras.quantizers.Quantizer


def _ste_round(x):
    return x + tf.stop_gradient(tf_round_half_away(x) - x)


class UniformQuantizer(_Quantizer):
    """b-bit uniform fake quantizer; symmetric per channel, or asymmetric per tensor."""

    def __init__(self, num_bits, symmetric, channel_axes=(), init="mse", rounding=None):
        self.num_bits = check_bits(num_bits, "num_bits")
        self.symmetric = bool(symmetric)
        self.channel_axes = tuple(int(a) for a in channel_axes)
        allowed = INIT_METHODS if self.symmetric else ACTIVATION_INIT_METHODS
        if init not in allowed:
            raise ValueError(f"init must be one of {allowed}, got {init!r}.")
        self.init = init
        self.rounding = get_rounding(rounding)

    @property
    def int_range(self):
        return int_range(self.num_bits)

    def _param_shape(self, tensor_shape):
        dims = list(tensor_shape)
        return [int(dims[a]) for a in sorted(a % len(dims) for a in self.channel_axes)]

    def build(self, tensor_shape, name, layer):
        shape = self._param_shape(tensor_shape)
        weights = {
            "scale": layer.add_weight(
                f"{name}_scale", shape=shape, initializer=keras.initializers.Constant(1.0),
                trainable=False),
            "zero_point": layer.add_weight(
                f"{name}_zero_point", shape=shape, initializer=keras.initializers.Zeros(),
                trainable=False),
        }
        weights.update(self.rounding.build(tensor_shape, name, layer))
        return weights

    def _broadcast(self, param, ndim):
        if not self.channel_axes:
            return param
        shape = [1] * ndim
        for axis, size in zip(sorted(a % ndim for a in self.channel_axes), param.shape):
            shape[axis] = size
        return tf.reshape(param, shape)

    def _codes(self, scaled, zero_point, weights, training):
        """round(x / s) + zp, before clamping (subclasses may round elsewhere)."""
        return self.rounding.round(scaled, weights, training) + zero_point

    def __call__(self, inputs, training, weights, **kwargs):
        ndim = inputs.shape.rank
        scale = self._broadcast(weights["scale"], ndim)
        zero_point = self._broadcast(_ste_round(weights["zero_point"]), ndim)
        qmin, qmax = self.int_range
        q = tf.clip_by_value(self._codes(inputs / scale, zero_point, weights, training), qmin, qmax)
        return (q - zero_point) * scale

    def to_integers(self, values, weights):
        """Integer codes of ``values`` (NumPy) under the current qparams and rounding."""
        x = tf.convert_to_tensor(values, tf.float32)
        scale = self._broadcast(weights["scale"], x.shape.rank)
        zero_point = self._broadcast(tf_round_half_away(weights["zero_point"]), x.shape.rank)
        qmin, qmax = self.int_range
        q = tf.clip_by_value(self._codes(x / scale, zero_point, weights, False), qmin, qmax)
        return np.asarray(tf_round_half_away(q).numpy(), np.int32)

    def get_config(self):
        return {
            "num_bits": self.num_bits,
            "symmetric": self.symmetric,
            "channel_axes": list(self.channel_axes),
            "init": self.init,
            "rounding": self.rounding.get_config(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self == other


class WeightQuantizer(UniformQuantizer):
    """Symmetric (zero point 0), per output channel: the weight side of the contract."""

    def __init__(self, num_bits, channel_axes=(-1,), init="mse", rounding=None, **kwargs):
        kwargs.pop("symmetric", None)
        super().__init__(num_bits, True, channel_axes, init, rounding)


class ActivationQuantizer(UniformQuantizer):
    """Asymmetric per-tensor quantizer with signed storage and a zero point (TFLite int8 style).

    ``tie_to_input``: calibration copies the qparams of the tensor feeding this layer
    (average pooling keeps its input's grid in TFLite). ``tie_to_consumer``: calibration copies
    the qparams of the Concatenate this tensor feeds (TFLM's CONCATENATION copies integers, so
    its inputs must already be on its grid). ``fixed_range``: qparams fixed to
    this real range instead of calibrated (softmax outputs [0, 1)). ``window``: for a tied
    average pool, the number of elements averaged (None when it varies, SAME padding).

    A tied average pool rounds as TFLite's integer AVERAGE_POOL_2D does: the mean of the stored
    integers (zero point included) half away from zero, so a .5 tie goes down where the stored
    value is negative. The float mean of grid values lands on a tie only up to rounding noise;
    with ``window`` it is first snapped to the nearest multiple of 1/window, the exact value.

    ``requantization`` (a runtime attribute set by ``requantization.link_requantization``)
    makes the output of a TFLM builtin round as TFLM's double rounding does.

    With nearest rounding and no tie the quantizer runs as ``fused.fake_quant``: the same
    numbers as ``UniformQuantizer.__call__``, in one XLA kernel each way.
    """

    def __init__(self, num_bits, init="mse", rounding=None, tie_to_input=False,
                 fixed_range=None, window=None, tie_to_consumer=False, **kwargs):
        kwargs.pop("symmetric", None)
        kwargs.pop("channel_axes", None)
        super().__init__(num_bits, False, (), init, rounding)
        self.tie_to_input = bool(tie_to_input)
        self.tie_to_consumer = bool(tie_to_consumer)
        self.fixed_range = None if fixed_range is None else tuple(float(v) for v in fixed_range)
        self.window = None if window is None else int(window)
        if self.window is not None and (self.window < 1 or not self.tie_to_input):
            raise ValueError(f"window={window!r} needs tie_to_input=True and must be >= 1.")

    def __call__(self, inputs, training, weights, **kwargs):
        if self.tie_to_input or not isinstance(self.rounding, NearestRounding):
            return super().__call__(inputs, training, weights, **kwargs)
        requantization = getattr(self, "requantization", None)
        return fake_quant(inputs, weights["scale"], _ste_round(weights["zero_point"]),
                          *self.int_range, requant=requantization)

    def _codes(self, scaled, zero_point, weights, training):
        requantization = getattr(self, "requantization", None)
        if requantization is not None:
            rounded = requantization.round(scaled, weights["scale"])
            return scaled + tf.stop_gradient(rounded - scaled) + zero_point
        if not self.tie_to_input:
            return super()._codes(scaled, zero_point, weights, training)
        if self.window is not None:
            n = float(self.window)
            scaled = scaled + tf.stop_gradient(tf.round(scaled * n) / n - scaled)
        return self.rounding.round(scaled + zero_point, weights, training)

    def get_config(self):
        config = super().get_config()
        config.pop("symmetric")
        config.pop("channel_axes")
        config.update(tie_to_input=self.tie_to_input, tie_to_consumer=self.tie_to_consumer,
                      fixed_range=None if self.fixed_range is None else list(self.fixed_range),
                      window=self.window)
        return config
