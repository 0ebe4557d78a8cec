"""Quantizer grid, clamping, zero representability, per-channel independence, STE, init."""
import numpy as np
import pytest

from tfq_tiny._compat import keras, tf
from tfq_tiny.errors import BitWidthError
from tfq_tiny.quantization import ActivationQuantizer, WeightQuantizer, int_range
from tfq_tiny.quantization.range_init import activation_qparams, numpy_fake_quant, weight_qparams

BITS = range(2, 9)


def _run(quantizer, x, scale, zero_point):
    holder = keras.layers.Layer()
    weights = quantizer.build(x.shape, "t", holder)
    weights["scale"].assign(np.broadcast_to(scale, weights["scale"].shape))
    weights["zero_point"].assign(np.broadcast_to(zero_point, weights["zero_point"].shape))
    return quantizer(tf.constant(x), False, weights).numpy(), weights


@pytest.mark.parametrize("bits", BITS)
def test_int_range_is_full_signed_range(bits):
    assert int_range(bits) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


@pytest.mark.parametrize("bits", BITS)
def test_weight_values_on_grid_with_at_most_2b_levels(bits):
    w = np.random.default_rng(bits).normal(size=(3, 3, 4, 5)).astype("float32")
    scale, zp = weight_qparams(w, bits, "minmax")
    out, _ = _run(WeightQuantizer(bits), w, scale, zp)
    codes = out / scale
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
    for c in range(w.shape[-1]):
        assert len(np.unique(np.round(codes[..., c]))) <= 2 ** bits
    qmin, qmax = int_range(bits)
    assert codes.min() >= qmin - 1e-4 and codes.max() <= qmax + 1e-4


@pytest.mark.parametrize("bits", BITS)
def test_activation_clamps_and_represents_zero_exactly(bits):
    x = np.linspace(-3, 5, 1001).astype("float32")
    scale, zp = activation_qparams(x, bits, "minmax", lo=-1.0, hi=2.0)
    out, _ = _run(ActivationQuantizer(bits), x, scale, zp)
    qmin, qmax = int_range(bits)
    assert out.min() == pytest.approx((qmin - zp) * scale, rel=1e-5)
    assert out.max() == pytest.approx((qmax - zp) * scale, rel=1e-5)
    assert len(np.unique(out)) <= 2 ** bits
    zero, _ = _run(ActivationQuantizer(bits), np.zeros(4, "float32"), scale, zp)
    assert np.all(zero == 0.0)
    assert zp == np.round(zp) and qmin <= zp <= qmax


def test_zero_exact_for_one_sided_ranges():
    for lo, hi in [(0.5, 3.0), (-4.0, -0.1), (0.0, 6.0)]:
        scale, zp = activation_qparams(np.array([lo, hi]), 4, "minmax")
        assert numpy_fake_quant(np.zeros(1), scale, zp, 4)[0] == 0.0


def test_per_channel_independence():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 2, 4)).astype("float32")
    w2 = w.copy()
    w2[..., 0] *= 100.0
    s1, _ = weight_qparams(w, 4, "minmax")
    s2, _ = weight_qparams(w2, 4, "minmax")
    np.testing.assert_allclose(s1[1:], s2[1:])
    out1, _ = _run(WeightQuantizer(4), w, s1, 0)
    out2, _ = _run(WeightQuantizer(4), w2, s2, 0)
    np.testing.assert_allclose(out1[..., 1:], out2[..., 1:])


def test_depthwise_scales_per_channel_and_multiplier():
    w = np.random.default_rng(1).normal(size=(3, 3, 4, 2)).astype("float32")
    scale, _ = weight_qparams(w, 4, "minmax", channel_axes=(-2, -1))
    assert scale.shape == (4, 2)
    np.testing.assert_allclose(scale, np.abs(w).max(axis=(0, 1)) / 7, rtol=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_mse_init_never_worse_than_minmax(bits):
    rng = np.random.default_rng(bits)
    w = rng.standard_t(3, size=(3, 3, 8, 16))
    err = {m: np.sum((w - numpy_fake_quant(w, *(p.reshape(1, 1, 1, -1) for p in
                                          weight_qparams(w, bits, m)), bits)) ** 2)
           for m in ("minmax", "mse")}
    assert err["mse"] <= err["minmax"]
    a = np.maximum(rng.standard_t(3, size=20000), 0) - 0.2
    aerr = {m: np.sum((a - numpy_fake_quant(a, *activation_qparams(a, bits, m), bits)) ** 2)
            for m in ("minmax", "mse")}
    assert aerr["mse"] <= aerr["minmax"]
    if bits <= 4:
        assert aerr["mse"] < aerr["minmax"]


def test_ste_gradients():
    x = tf.Variable(np.array([-10.0, -0.26, 0.1, 0.84, 10.0], "float32"))
    quantizer = ActivationQuantizer(4)
    holder = keras.layers.Layer()
    weights = quantizer.build(x.shape, "t", holder)
    weights["scale"].assign(0.1)
    weights["zero_point"].assign(0.0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(weights["scale"])
        y = tf.reduce_sum(quantizer(x, True, weights))
    grad = tape.gradient(y, x).numpy()
    np.testing.assert_array_equal(grad, [0.0, 1.0, 1.0, 0.0, 0.0])
    assert tape.gradient(y, weights["scale"]) is not None


@pytest.mark.parametrize("bad", [1, 9, 0, 3.5, "4", None])
def test_bits_outside_range_raise(bad):
    with pytest.raises(BitWidthError, match="must be one of"):
        WeightQuantizer(bad)


def test_tied_average_rounds_ties_like_tflite_average_pool():
    """Means of grid values that end in .5 round half away from zero in the stored-integer domain
    (zero point included), as TFLite's AVERAGE_POOL_2D, whatever float noise the mean carries."""
    scale, zp = 0.1, -128
    stored = np.array([[-128, -127], [-126, -125], [-2, -1], [0, 1], [126, 127]])  # pairs
    real = ((stored - zp) * np.float32(scale)).astype(np.float32)
    means = real.mean(axis=1).astype(np.float32)
    out, _ = _run(ActivationQuantizer(8, tie_to_input=True, window=2), means, scale, zp)
    expected = np.where(stored.sum(1) > 0, np.floor(stored.sum(1) / 2 + 0.5),
                        np.ceil(stored.sum(1) / 2 - 0.5))
    np.testing.assert_allclose(out / scale + zp, expected, atol=1e-3)
    with pytest.raises(ValueError, match="tie_to_input"):
        ActivationQuantizer(8, window=4)


def test_quantizer_config_round_trip():
    q = ActivationQuantizer(3, init="minmax", tie_to_input=True, window=64)
    assert ActivationQuantizer.from_config(q.get_config()) == q
    w = WeightQuantizer(5, channel_axes=(-2, -1))
    assert WeightQuantizer.from_config(w.get_config()) == w
