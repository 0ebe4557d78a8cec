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
from tfq_tiny.quantization.configs import fused_relu
from tfq_tiny.quantization.grid import tf_round_half_away


class DoubleRounding:
    """TFLM's default double rounding of ``u = acc * s_in * s_w[c] / s_out`` (per channel on the
    last axis), from live scale variables."""

    def __init__(self, input_scale, weight_scale):
        self.input_scale = input_scale
        self.weight_scale = weight_scale

    def right_shifts(self, output_scale):
        """``max(-shift[c], 0)`` of ``QuantizeMultiplier(s_in * s_w[c] / s_out)``, exactly: the
        binary exponent read from the float32 bits (frexp), not from a logarithm."""
        multiplier = (tf.reshape(self.input_scale, [-1])[0] * tf.reshape(self.weight_scale, [-1])
                      / tf.reshape(output_scale, [-1])[0])
        bits = tf.bitcast(tf.cast(multiplier, tf.float32), tf.int32)
        exponent = tf.bitwise.right_shift(bits, 23) % 256 - 126
        return tf.cast(tf.maximum(-exponent, 0), tf.float32)

    def round(self, scaled, output_scale):
        """Round ``scaled`` (real values in output steps, before the zero point) twice."""
        step = tf.pow(2.0, self.right_shifts(output_scale))
        high = tf.round(scaled * step)
        return tf_round_half_away(high / step)


def _fused_output_slot(slot, graph, by_layer):
    """The output slot that quantizes ``slot``'s layer result (its own, or its fused ReLU's)."""
    own = by_layer.get((id(slot.layer), "output"))
    if own is not None:
        return own
    relu = fused_relu(graph, slot.layer.name)
    return None if relu is None else by_layer.get((id(relu.layer), "output"))


def link_requantization(qmodel, slots=None):
    """Give the output quantizer of every weighted layer with a quantized input its
    DoubleRounding (and clear it elsewhere). Returns the number of linked quantizers."""
    slots = quantizer_slots(qmodel) if slots is None else slots
    graph = Graph(qmodel)
    by_layer = {(id(s.layer), s.kind): s for s in slots}
    for s in slots:
        if s.kind in ("input", "output"):
            s.quantizer.requantization = None
    linked = 0
    for slot in slots:
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


__all__ = ["DoubleRounding", "link_requantization"]
