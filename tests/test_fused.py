"""The fused activation quantizer computes what the reference expression defines."""
import numpy as np
import pytest

from tfq_tiny._compat import keras, tf
from tfq_tiny.quantization import ActivationQuantizer
from tfq_tiny.quantization.quantizers import UniformQuantizer
from tfq_tiny.quantization.requantization import DoubleRounding


def _inputs(scale, zero_point, bits, rng):
    """Random values plus every grid point, tie and clamp boundary of the grid."""
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    levels = np.arange(qmin - 2, qmax + 3, 0.5) - zero_point
    x = np.concatenate([rng.normal(0, scale * (qmax - qmin) / 3, 4000), levels * scale,
                        np.nextafter(levels * scale, np.inf), np.nextafter(levels * scale, -np.inf)])
    return tf.constant(x.astype(np.float32).reshape(-1, 4))


def _quantizer(bits, scale, zero_point, requant):
    quantizer = ActivationQuantizer(bits)
    weights = quantizer.build((None, 4), "t", keras.layers.Layer())
    weights["scale"].assign(scale)
    weights["zero_point"].assign(zero_point)
    if requant:
        quantizer.requantization = DoubleRounding(tf.Variable(0.037),
                                                  tf.Variable([0.011, 0.002, 0.02, 0.0071]))
    return quantizer, weights


def _value_and_grads(call, x, weights):
    with tf.GradientTape() as tape:
        tape.watch([x, weights["scale"], weights["zero_point"]])
        y = call(x)
        # A non-uniform upstream gradient, so every element's own gradient is checked.
        loss = tf.reduce_sum(y * tf.reshape(tf.range(tf.size(y), dtype=tf.float32) % 7 - 3.0,
                                            tf.shape(y)))
    return [y] + tape.gradient(loss, [x, weights["scale"], weights["zero_point"]])


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("requant", [False, True])
@pytest.mark.parametrize("graph", [False, True])
def test_fused_equals_reference_bit_for_bit(bits, requant, graph):
    rng = np.random.default_rng(bits)
    scale, zero_point = 0.0173, float(-(1 << (bits - 1)) + bits)
    quantizer, weights = _quantizer(bits, scale, zero_point, requant)
    x = _inputs(scale, zero_point, bits, rng)

    def fused(v):
        return quantizer(v, False, weights)

    def reference(v):
        return UniformQuantizer.__call__(quantizer, v, False, weights)

    run = (lambda f: tf.function(lambda v: _value_and_grads(f, v, weights))) if graph else \
        (lambda f: lambda v: _value_and_grads(f, v, weights))
    got, want = run(fused)(x), run(reference)(x)
    np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
    np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
    np.testing.assert_allclose(got[2].numpy(), want[2].numpy(), rtol=1e-5)
    np.testing.assert_allclose(got[3].numpy(), want[3].numpy(), rtol=1e-5, atol=1e-3)
    assert np.any(got[1].numpy() == 0) and np.any(got[1].numpy() != 0)  # clamped and passed


def test_only_untied_quantizers_take_the_fused_path(monkeypatch):
    """A tied average pool rounds its own way (``window``, ties), so it keeps the reference
    expression; an untied activation quantizer with nearest rounding is fused."""
    import tfq_tiny.quantization.quantizers as quantizers

    calls = []
    original = quantizers.fake_quant
    monkeypatch.setattr(quantizers, "fake_quant",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    x = tf.constant([[0.1, -0.3, 0.7, 1.9]])
    for quantizer in (ActivationQuantizer(4), ActivationQuantizer(4, tie_to_input=True)):
        weights = quantizer.build((None, 4), "t", keras.layers.Layer())
        weights["scale"].assign(0.1)
        quantizer(x, False, weights)
    assert calls == [1]
