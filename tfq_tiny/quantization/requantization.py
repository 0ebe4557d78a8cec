"""The simulated output rounding of weighted layers: TFLM's double rounding.

A weighted operator deploys as ``out = MultiplyByQuantizedMultiplier(acc, M[c], shift[c]) + zp``
with ``M[c] * 2^shift[c] = s_in * s_w[c] / s_out``, which TFLM's reference kernels (and ours,
tflm_ext) compute with gemmlowp's double rounding: ``h = round(acc * M / 2^31)``, then
``round(h / 2^right)``, ``right = -shift``. A fake-quant quantizer rounds ``acc * M`` once; the
first rounding of the double form moves values just below a .5 boundary up, in about
``2^-(right+1)`` of the outputs per layer (3-6 % at 4 bits, where ``right`` is 2-4), and the
differences compound through a network.

``link_requantization(qmodel)`` finds, for every weighted layer with a quantized input, the
activation quantizer that quantizes its (fused) output and gives it live references to the
input and weight scale variables; the quantizer then reproduces the double rounding from the
current scales on every call (PTQ may train them). The links are runtime attributes, not
configuration: ``calibrate`` and ``load_model`` make them, and a model without them simulates
single rounding, at most one step per layer from the deployed model.
"""
from tfq_tiny._compat import tf
from tfq_tiny.quantization.calibration import input_activation_slot, quantizer_slots
from tfq_tiny.graph import Graph
from tfq_tiny.quantization.configs import fused_relu, leaky_relu_alpha
from tfq_tiny.quantization.grid import tf_round_half_away


class DoubleRounding:
    """TFLM's default double rounding of ``u = acc * s_in * s_w[c] / s_out`` (per channel on the
    last axis), from live scale variables, computed exactly as TFLM's integer code does.

    The int32 accumulator (bias included) is recovered from the float layer output by
    rounding ``u * s_out / (s_in * s_w)``: the float sum is within float32 noise (far below
    0.5) of that integer. The multiplier and shift come from the float64 product of the
    float32 scales, as ``QuantizeMultiplier`` gets them, and the two roundings are computed
    exactly, so the result equals the integer kernel's on every element rather than up to
    float32 noise near a rounding boundary (which flipped about 1 output in 10^5 of 8-bit
    layers). The integer part runs in int64 inside an XLA kernel.
    """

    def __init__(self, input_scale, weight_scale):
        self.input_scale = input_scale
        self.weight_scale = weight_scale

    def round(self, scaled, output_scale):
        """Round ``scaled`` (real values in output steps, before the zero point) as TFLM's
        ``MultiplyByQuantizedMultiplier`` rounds the accumulator behind it."""
        return _requantize(scaled, self.parameters(output_scale))

    def parameters(self, output_scale):
        """``requantize_parameters`` from the current scales."""
        return requantize_parameters(*(tf.convert_to_tensor(s) for s in
                                       (self.input_scale, self.weight_scale, output_scale)))


def requantize_parameters(input_scale, weight_scale, output_scale):
    """Per-channel (float64 1 / real multiplier, then int64 M, left shift, right shift) of the
    double rounding.

    Computed apart from the elementwise part: inside one XLA fusion they would be recomputed
    for every element of the layer output."""
    s_in = tf.cast(tf.reshape(input_scale, [-1])[0], tf.float64)
    s_w = tf.cast(tf.reshape(weight_scale, [-1]), tf.float64)
    s_out = tf.cast(tf.reshape(output_scale, [-1])[0], tf.float64)
    real = s_in * s_w / s_out
    multiplier, shift = quantize_multiplier(real)
    return 1.0 / real, multiplier, tf.maximum(shift, 0), tf.maximum(-shift, 0)


class LeakyRounding:
    """TFLM's int8 LEAKY_RELU from the input grid to the output grid, from live scale
    variables: ``MultiplyByQuantizedMultiplier(x - zp_in, M)`` with ``M`` the identity
    multiplier ``s_in / s_out`` where the input is >= 0, else ``s_in * alpha / s_out``, both
    computed in float32 as TFLM's Prepare does before ``QuantizeMultiplier``. The input codes are
    recovered from the layer's float output (``x`` or ``alpha * x``)."""

    def __init__(self, input_scale, alpha):
        self.input_scale = input_scale
        self.alpha = float(alpha)

    def round(self, scaled, output_scale):
        return _requantize(scaled, self.parameters(output_scale))

    def parameters(self, output_scale):
        """Two ``requantize_parameters`` tuples, for outputs >= 0 and < 0, concatenated."""
        s_in = tf.reshape(tf.cast(tf.convert_to_tensor(self.input_scale), tf.float32), [-1])[0]
        s_out = tf.reshape(tf.cast(tf.convert_to_tensor(output_scale), tf.float32), [-1])[0]
        parameters = ()
        for numerator in (s_in, s_in * tf.constant(self.alpha, tf.float32)):
            real = tf.cast(numerator / s_out, tf.float64)
            multiplier, shift = quantize_multiplier(tf.reshape(real, [1]))
            parameters += (1.0 / tf.reshape(real, [1]), multiplier, tf.maximum(shift, 0),
                           tf.maximum(-shift, 0))
        return parameters


def requantize(scaled, parameters):
    """``DoubleRounding.round`` of ``scaled`` given ``requantize_parameters`` (or
    ``LeakyRounding``'s two sets, chosen by the sign of ``scaled``), as plain elementwise ops
    (``fused.py`` compiles them into its kernel)."""
    if len(parameters) == 8:
        return tf.where(scaled >= 0, requantize(scaled, parameters[:4]),
                        requantize(scaled, parameters[4:]))
    # The product is within float32 noise of an integer accumulator (|acc| < 2^31), so rounding
    # it gives the integer that dividing by the real multiplier does, without a division.
    inverse, multiplier, left, right = parameters
    accumulator = tf.cast(tf.round(tf.cast(scaled, tf.float64) * inverse), tf.int64)
    return tf.cast(_double_rounding(accumulator, multiplier, left, right), scaled.dtype)


# One XLA-fused kernel: a dozen elementwise int64 ops on a layer's whole output cost more than
# the layer itself when run one by one (TF's own int64 kernels are ~15x slower than XLA's).
_requantize = tf.function(requantize, jit_compile=True)


def _pow2(exponent):
    """``2^exponent`` in float64 (exact) for an integer-valued tensor ``exponent``."""
    return tf.pow(tf.constant(2.0, tf.float64), tf.cast(exponent, tf.float64))


def quantize_multiplier(real):
    """``tflite::QuantizeMultiplier`` of positive float64 ``real``: int64 (multiplier, shift),
    ``real = multiplier * 2^(shift - 31)``, the multiplier in [2^30, 2^31)."""
    bits = tf.bitcast(real, tf.int64)
    shift = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 52), 0x7FF) - 1022
    fraction = real / _pow2(shift)
    multiplier = tf.cast(tf_round_half_away(fraction * 2.0 ** 31), tf.int64)
    carry = tf.equal(multiplier, 1 << 31)
    return tf.where(carry, multiplier // 2, multiplier), tf.where(carry, shift + 1, shift)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLM's double-rounding ``MultiplyByQuantizedMultiplier`` of integer-valued ``x`` (any
    numeric dtype, |x| < 2^31; the result keeps it) with int64 ``multiplier`` and ``shift``:
    gemmlowp's SaturatingRoundingDoublingHighMul ``floor((x M + 2^30) / 2^31)``, then
    RoundingDivideByPOT (half away from zero). runtime/arithmetic.py is the NumPy twin the
    kernels use; tests hold them equal."""
    result = _double_rounding(tf.cast(x, tf.int64), multiplier, tf.maximum(shift, 0),
                              tf.maximum(-shift, 0))
    return tf.cast(result, x.dtype)


def _double_rounding(x, multiplier, left, right):
    """The two roundings in exact int64 arithmetic (x M < 2^62)."""
    one = tf.constant(1, tf.int64)
    high = tf.bitwise.right_shift(tf.bitwise.left_shift(x, left) * multiplier + (1 << 30),
                                  tf.constant(31, tf.int64))
    mask = tf.bitwise.left_shift(one, right) - 1
    threshold = tf.bitwise.right_shift(mask, one) + tf.cast(high < 0, tf.int64)
    round_up = tf.bitwise.bitwise_and(high, mask) > threshold
    return tf.bitwise.right_shift(high, right) + tf.cast(round_up, tf.int64)


def _fused_output_slot(slot, graph, by_layer):
    """The output slot that quantizes ``slot``'s layer result (its own, or its fused ReLU's)."""
    own = by_layer.get((id(slot.layer), "output"))
    if own is not None:
        return own
    relu = fused_relu(graph, slot.layer.name)
    return None if relu is None else by_layer.get((id(relu.layer), "output"))


def link_requantization(qmodel, slots=None):
    """Give the output quantizer of every weighted layer with a quantized input its
    DoubleRounding, and of every LeakyReLU its LeakyRounding (and clear it elsewhere). Returns
    the number of linked quantizers."""
    slots = quantizer_slots(qmodel) if slots is None else slots
    graph = Graph(qmodel)
    by_layer = {(id(s.layer), s.kind): s for s in slots}
    for s in slots:
        if s.kind in ("input", "output"):
            s.quantizer.requantization = None
    linked = 0
    for slot in slots:
        alpha = leaky_relu_alpha(slot.layer) if slot.kind == "output" else None
        if alpha is not None:
            source = input_activation_slot(slot.layer, slots)
            if source is not None:
                slot.quantizer.requantization = LeakyRounding(source.variables["scale"], alpha)
                linked += 1
            continue
        if slot.kind != "weight":
            continue
        source = input_activation_slot(slot.layer, slots)
        target = _fused_output_slot(slot, graph, by_layer)
        if source is None or target is None:
            continue
        target.quantizer.requantization = DoubleRounding(source.variables["scale"],
                                                         slot.variables["scale"])
        linked += 1
    return linked


__all__ = ["DoubleRounding", "LeakyRounding", "link_requantization", "multiply_by_quantized_multiplier",
           "quantize_multiplier"]
