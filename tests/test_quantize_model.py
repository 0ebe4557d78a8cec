"""Preprocessing, quantize_model, policies, annotations, save/load and bad input."""
import json

import numpy as np
import pytest

import tfq_tiny
from tfq_tiny._compat import keras, tf
from tfq_tiny.errors import (BitWidthError, CalibrationDataError, ModelFormatError, TfqError,
                             UnsupportedLayerError)
from tfq_tiny.preprocess import as_deployed, cross_layer_equalize, fold_batch_norm
from tfq_tiny.preprocess.cle import equalization_pairs
from tfq_tiny.graph import Graph
from tfq_tiny.quantization import (BitPolicy, OutputQuantizeConfig, WeightLayerQuantizeConfig,
                                   quantizer_slots)
from tfq_tiny.quantization.configs import activation_name

def test_bn_fold_preserves_outputs(small_cnn, images, small_conv1d, signals):
    for model, x in [(small_cnn, images), (small_conv1d, signals)]:
        folded = fold_batch_norm(model)
        assert not any(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
        np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                                   rtol=1e-4, atol=1e-4)


def separable_softmax_model():
    """A KWS-style head as users write it: SeparableConv2D (+BN) and Dense(softmax)."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    i = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c1")(i)
    x = L.SeparableConv2D(12, 3, padding="same", depth_multiplier=2, name="sep")(x)
    x = L.ReLU(name="r")(L.BatchNormalization(name="bn")(x))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, L.Dense(5, activation="softmax", name="head")(x))


def test_separable_and_softmax_layers_split_into_their_deployed_operators(images):
    model = separable_softmax_model()
    bn = model.get_layer("bn")
    bn.set_weights([w + np.random.default_rng(1).uniform(0.1, 0.5, w.shape) for w in
                    bn.get_weights()])
    deployed = as_deployed(model)
    kinds = {l.name: type(l).__name__ for l in deployed.layers}
    assert kinds["sep_depthwise"] == "DepthwiseConv2D" and kinds["sep_pointwise"] == "Conv2D"
    assert kinds["head"] == "Dense" and kinds["head_softmax"] == "Softmax"
    assert not {"SeparableConv2D", "BatchNormalization"} & set(kinds.values())
    np.testing.assert_allclose(deployed.predict(images, verbose=0),
                               model.predict(images, verbose=0), rtol=1e-4, atol=1e-6)


def test_sigmoid_tanh_and_softmax_activations_split_off_every_weight_layer(images):
    L = keras.layers
    keras.utils.set_random_seed(2)
    i = keras.Input((16, 16, 3))
    x = L.SeparableConv2D(6, 3, activation="tanh", name="sep")(i)
    x = L.Conv2D(4, 3, activation="sigmoid", name="gate")(x)
    x = L.Dense(3, activation="softmax", name="head")(L.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(i, x)
    deployed = as_deployed(model)
    kinds = {l.name: (type(l).__name__, activation_name(l)) for l in deployed.layers}
    assert kinds["sep_pointwise"] == ("Conv2D", "linear") and kinds["sep_tanh"] == ("Activation", "tanh")
    assert kinds["gate"] == ("Conv2D", "linear") and kinds["gate_sigmoid"] == ("Activation", "sigmoid")
    assert kinds["head_softmax"][0] == "Softmax"
    np.testing.assert_allclose(deployed.predict(images, verbose=0),
                               model.predict(images, verbose=0), rtol=1e-4, atol=1e-6)


def test_zero_padding_folds_into_the_same_padding_of_the_next_convolution(images):
    L = keras.layers
    i = keras.Input((16, 16, 3))
    x = L.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(i)              # = SAME at stride 2
    x = L.DepthwiseConv2D(3, strides=2, name="dw")(x)
    x = L.ZeroPadding2D(1, name="pad_sym")(x)                          # not SAME at stride 2
    x = L.Conv2D(4, 3, strides=2, name="c")(x)
    model = keras.Model(i, x)
    deployed = as_deployed(model)
    names = [l.name for l in deployed.layers]
    assert "pad" not in names and "pad_sym" in names
    assert deployed.get_layer("dw").padding == "same" and deployed.get_layer("c").padding == "valid"
    np.testing.assert_allclose(deployed.predict(images, verbose=0), model.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_input_scaling_folds_into_the_weight_layers_it_feeds():
    L = keras.layers
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (8, 12, 12, 3)).astype(np.float32)
    i = keras.Input((12, 12, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0, name="scale")(i)
    dw = L.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="dw")(x)   # both kinds of
    c = L.Conv2D(5, 3, strides=2, name="c")(x)                                     # consumer
    y = L.Concatenate()([L.GlobalAveragePooling2D()(dw), L.GlobalAveragePooling2D()(c)])
    sensors = (rng.normal(3, 2, (64, 6)) * np.arange(1, 7)).astype(np.float32)
    norm = L.Normalization(name="norm")
    norm.adapt(sensors)
    j = keras.Input((6,))
    for model, x in [(keras.Model(i, y), pixels), (keras.Model(j, L.Dense(4)(norm(j))), sensors),
                     (keras.Model(i, L.Conv2D(4, 3, padding="same")(L.Rescaling(1 / 255)(i))),
                      pixels)]:
        deployed = as_deployed(model)
        assert not any(isinstance(l, (L.Rescaling, L.Normalization)) for l in deployed.layers)
        expected = model.predict(x, verbose=0)
        np.testing.assert_allclose(deployed.predict(x, verbose=0), expected,
                                   rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("build, match", [
    (lambda L, i: L.Conv2D(4, 3, padding="same")(L.Rescaling(1 / 127.5, offset=-1, name="s")(i)),
     "'s' has a non-zero offset and feeds .* padding='valid'"),
    (lambda L, i: L.MaxPooling2D(name="mp")(L.Rescaling(1 / 255, name="s")(i)),
     "'s' feeds 'mp' \\(MaxPooling2D\\); it folds only into"),
    (lambda L, i: L.Rescaling(2.0, name="s")(i), "'s' is a model output")])
def test_input_scaling_that_cannot_fold_is_refused_with_the_reason(build, match, images):
    i = keras.Input((16, 16, 3))
    with pytest.raises(UnsupportedLayerError, match=match):
        tfq_tiny.quantize_model(keras.Model(i, build(keras.layers, i)), "w8a8",
                                calibration_data=images)


def test_softmax_input_is_logits_at_output_bits(images):
    def bits(policy):
        q = tfq_tiny.quantize_model(separable_softmax_model(), policy, calibration_data=images)
        return {s.layer_name: s.quantizer.num_bits for s in quantizer_slots(q)
                if s.kind == "output"}

    assert bits("w4a4")["head"] == 8 and bits("w4a4")["r"] == 4
    assert bits(BitPolicy(4, 4, output_bits=None))["head"] == 4


def test_cle_preserves_outputs_and_equalizes_ranges(small_cnn, images):
    folded = fold_batch_norm(small_cnn)
    equalized = cross_layer_equalize(folded)
    np.testing.assert_allclose(equalized.predict(images, verbose=0),
                               folded.predict(images, verbose=0), rtol=1e-4, atol=1e-4)
    pairs = [(a.name, b.name) for a, b in equalization_pairs(Graph(equalized))]
    assert pairs == [("dw", "pw")]  # r1 also feeds the residual Add, so c1 is not paired
    dw = equalized.get_layer("dw").get_weights()[0]
    pw = equalized.get_layer("pw").get_weights()[0]
    np.testing.assert_allclose(np.abs(dw).max(axis=(0, 1, 3)), np.abs(pw).max(axis=(0, 1, 3)),
                               rtol=1e-3)


@pytest.mark.parametrize("policy", ["w8a8", "w4a4", "w2a2", "w4a32"])
def test_quantize_model_outputs_track_float(small_cnn, images, policy):
    q = tfq_tiny.quantize_model(small_cnn, policy, calibration_data=images)
    ref = small_cnn.predict(images, verbose=0)
    err = np.abs(q.predict(images, verbose=0) - ref).mean() / np.abs(ref).mean()
    assert err < {"w8a8": 0.02, "w4a4": 0.3, "w2a2": 1.5, "w4a32": 0.3}[policy]


def test_quantized_activations_lie_on_their_grid(small_cnn, images):
    q = tfq_tiny.quantize_model(small_cnn, "w4a4", calibration_data=images)
    slots = [s for s in quantizer_slots(q) if s.kind == "output"]
    probe = keras.Model(q.inputs, [s.layer.output for s in slots])
    for slot, out in zip(slots, probe.predict(images[:8], verbose=0)):
        scale = slot.variables["scale"].numpy()
        zp = slot.variables["zero_point"].numpy()
        codes = out / scale + zp
        np.testing.assert_allclose(codes, np.round(codes), atol=2e-3)
        qmin, qmax = slot.quantizer.int_range
        assert codes.min() >= qmin - 1e-3 and codes.max() <= qmax + 1e-3
        assert (qmin, qmax) == ((-128, 127) if slot.layer_name == "fc" else (-8, 7))


def test_fused_relu_quantized_once(small_cnn, images):
    q = tfq_tiny.quantize_model(small_cnn, "w4a4", calibration_data=images)
    outputs = {s.layer_name for s in quantizer_slots(q) if s.kind == "output"}
    assert {"r1", "r2", "r3", "ap", "gap", "fc"} <= outputs
    assert "c1" not in outputs and "add" not in outputs and "mp" not in outputs


@pytest.mark.parametrize("policy,tied", [("w8a8", True), ("w4a4", False), ("w8a4", False)])
def test_average_pool_tied_only_at_8_bits(small_cnn, images, policy, tied):
    """8-bit pools keep the input grid (TFLite builtin); low-bit pools get their own range."""
    q = tfq_tiny.quantize_model(small_cnn, policy, calibration_data=images)
    slots = {s.layer_name: s for s in quantizer_slots(q) if s.kind == "output"}
    ap, r3 = slots["ap"], slots["r3"]
    assert ap.quantizer.tie_to_input is tied
    same = ap.variables["scale"].numpy() == r3.variables["scale"].numpy()
    assert bool(np.all(same)) is tied


def test_policy_overrides_per_layer(small_cnn, images):
    policy = BitPolicy.uniform(4, 8).with_override("pw", weight_bits=2).with_override(
        "r2", activation_bits=4)
    q = tfq_tiny.quantize_model(small_cnn, policy, calibration_data=images)
    bits = {(s.layer_name, s.kind): s.quantizer.num_bits for s in quantizer_slots(q)}
    assert bits[("pw", "weight")] == 2 and bits[("c1", "weight")] == 4
    assert bits[("r2", "output")] == 4 and bits[("r1", "output")] == 8


def test_an_override_of_a_layer_the_model_lacks_is_an_error(small_cnn, images):
    # a typo, or a layer preprocessing folds away, must not silently leave the default width
    for name in ("fcc", "bn1"):
        with pytest.raises(TfqError, match=f"does not have: \\['{name}'\\]"):
            tfq_tiny.quantize_model(small_cnn, BitPolicy(4, 4).with_override(name, weight_bits=8),
                                    calibration_data=images)


@pytest.mark.parametrize("name, bits, match", [
    ("mp", {"activation_bits": 4}, "'mp' passes its input's values through"),
    ("r1", {"weight_bits": 2}, "'r1' has no weights"),
    ("c1", {"activation_bits": 4}, "'c1' deploys with 'r1' fused.* set activation_bits on 'r1'"),
    ("image", {"weight_bits": 4}, "'image' has no weights")])
def test_an_override_that_no_tensor_takes_is_an_error(small_cnn, images, name, bits, match):
    with pytest.raises(TfqError, match=match):
        tfq_tiny.quantize_model(small_cnn, BitPolicy(4, 4).with_override(name, **bits),
                                calibration_data=images)
    for name, bits in [("r1", {"activation_bits": 2}), ("fc", {"weight_bits": 2}),
                       ("pw", {"activation_bits": 2}), ("image", {"activation_bits": 8}),
                       ("image", {"activation_bits": None}),
                       ("ap", {"activation_bits": 8})]:
        tfq_tiny.quantize_model(small_cnn, BitPolicy(4, 4).with_override(name, **bits),
                                calibration_data=images[:8])


def test_logits_stay_8bit_unless_asked(small_cnn, images):
    def fc_bits(policy):
        q = tfq_tiny.quantize_model(small_cnn, policy, calibration_data=images)
        return {s.layer_name: s.quantizer.num_bits for s in quantizer_slots(q)
                if s.kind == "output"}["fc"]

    assert fc_bits("w4a4") == 8
    assert fc_bits(BitPolicy(4, 4, output_bits=None)) == 4
    assert fc_bits(BitPolicy(4, 4).with_override("fc", activation_bits=2)) == 2


def test_policy_json_round_trip_and_shorthand():
    policy = BitPolicy(4, 8, {"conv": {"weight_bits": 2}, "relu": {"activation_bits": None}},
                       output_bits=None)
    assert BitPolicy.from_json(policy.to_json()) == policy
    assert BitPolicy.parse(json.loads(policy.to_json())) == policy
    assert BitPolicy.parse("w4a4") == BitPolicy.uniform(4, 4)
    assert BitPolicy.parse("W2A8") == BitPolicy(2, 8)
    assert BitPolicy.parse("w4a32").activation_bits is None
    with pytest.raises(ValueError, match="shorthand"):
        BitPolicy.parse("int4")
    with pytest.raises(BitWidthError):
        BitPolicy(1, 8)
    with pytest.raises(BitWidthError):
        BitPolicy(4, 4, {"x": {"weight_bits": 16}})


def test_save_load_round_trip(small_cnn, images, tmp_path):
    q = tfq_tiny.quantize_model(small_cnn, "w4a4", calibration_data=images)
    expected = q.predict(images, verbose=0)
    for path in (tmp_path / "q.h5", tmp_path / "q_savedmodel"):
        tfq_tiny.save_model(q, path)
        loaded = tfq_tiny.load_model(path)
        np.testing.assert_array_equal(loaded.predict(images, verbose=0), expected)
    with pytest.raises(ValueError, match="h5"):
        tfq_tiny.save_model(q, tmp_path / "q.keras")


def test_annotated_layer_uses_hand_picked_config(small_conv1d, signals):
    layers = keras.layers
    i = keras.Input((32, 4))
    x = tfq_tiny.quantize_annotate_layer(
        layers.Conv1D(4, 3, name="c1"),
        WeightLayerQuantizeConfig("kernel", (-1,), weight_bits=3, activation_bits=6))(i)
    x = tfq_tiny.quantize_annotate_layer(layers.ReLU(name="r"), OutputQuantizeConfig(5))(x)
    x = layers.Flatten()(x)
    x = layers.Dense(2, name="fc")(x)
    q = tfq_tiny.quantize_model(keras.Model(i, x), "w8a8", calibration_data=signals)
    bits = {(s.layer_name, s.kind): s.quantizer.num_bits for s in quantizer_slots(q)}
    assert bits[("c1", "weight")] == 3 and bits[("c1", "output")] == 6
    assert bits[("r", "output")] == 5 and bits[("fc", "weight")] == 8
    with tfq_tiny.quantize_scope():
        config = WeightLayerQuantizeConfig.from_config(
            q.get_layer("quant_c1").quantize_config.get_config())
    assert config == q.get_layer("quant_c1").quantize_config


def test_a_config_on_a_layer_preprocessing_rewrites_is_refused(images):
    """A SeparableConv2D is split and a BatchNormalization folded before quantization: a
    QuantizeConfig annotated on either would silently not apply."""
    layers = keras.layers
    for rewritten in (layers.SeparableConv2D(4, 3, name="sep"), layers.BatchNormalization(name="bn")):
        i = keras.Input((16, 16, 3))
        x = layers.Conv2D(4, 3, name="c")(i)
        x = tfq_tiny.quantize_annotate_layer(rewritten, OutputQuantizeConfig(6))(x)
        with pytest.raises(TfqError, match=f"rewrites away: \\['{rewritten.name}'\\].*as deployed"):
            tfq_tiny.quantize_model(keras.Model(i, x), "w8a8", calibration_data=images)


def test_conv1d_model_quantizes(small_conv1d, signals):
    q = tfq_tiny.quantize_model(small_conv1d, "w8a8", calibration_data=signals)
    ref = small_conv1d.predict(signals, verbose=0)
    assert np.abs(q.predict(signals, verbose=0) - ref).mean() < 0.05 * np.abs(ref).mean()


def test_unsupported_layer_is_named(images):
    i = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="c")(i)
    x = keras.layers.LayerNormalization(name="my_layernorm")(x)
    model = keras.Model(i, x)
    with pytest.raises(UnsupportedLayerError, match="my_layernorm.*LayerNormalization"):
        tfq_tiny.quantize_model(model, "w8a8", calibration_data=images)
    i = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="elu", name="elu_conv")(i)
    with pytest.raises(UnsupportedLayerError, match="elu_conv.*elu"):
        tfq_tiny.quantize_model(keras.Model(i, x), "w8a8", calibration_data=images)


@pytest.mark.parametrize("relu", [dict(threshold=0.5), dict(max_value=3.0),
                                  dict(negative_slope=0.1, max_value=6.0)])
def test_relu_variants_without_a_tflm_kernel_are_refused_by_name(images, relu):
    """ReLU(threshold=...), ReLU(max_value=3) and a capped leaky ReLU have no TFLM kernel:
    refused when quantizing (they used to quantize, then fail in the converter)."""
    i = keras.Input((16, 16, 3))
    x = keras.layers.ReLU(name="odd_relu", **relu)(keras.layers.Conv2D(4, 3, name="c")(i))
    with pytest.raises(UnsupportedLayerError, match="odd_relu.*LeakyReLU"):
        tfq_tiny.quantize_model(keras.Model(i, x), "w8a8", calibration_data=images)


def test_keras3_model_rejected_with_advice_where_not_converted():
    import keras as keras3

    from tfq_tiny.analysis import model_statistics

    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    with pytest.raises(ModelFormatError, match="tfq_tiny.as_tf_keras\\(model\\)"):
        model_statistics(model)

    class Sub(keras3.Model):
        def call(self, x):
            return x

    with pytest.raises(ModelFormatError, match="not a functional or Sequential"):
        tfq_tiny.quantize_model(Sub(), "w8a8", calibration_data=np.zeros((4, 4)))


def test_subclassed_and_unbuilt_models_rejected():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ModelFormatError, match="subclassed"):
        tfq_tiny.quantize_model(Sub(), "w8a8", calibration_data=np.zeros((4, 4)))
    with pytest.raises(ModelFormatError, match="input shape"):
        tfq_tiny.quantize_model(keras.Sequential([keras.layers.Dense(2)]), "w8a8")


@pytest.mark.parametrize("data, match", [
    (None, "required"),
    (np.zeros((0, 16, 16, 3), "float32"), "empty"),
    (np.full((4, 16, 16, 3), np.nan, "float32"), "NaN"),
    (np.full((4, 16, 16, 3), np.inf, "float32"), "NaN or Inf"),
    (np.zeros((4, 8, 8, 3), "float32"), "shape"),
])
def test_bad_calibration_data(small_cnn, data, match):
    with pytest.raises(CalibrationDataError, match=match):
        tfq_tiny.quantize_model(small_cnn, "w4a4", calibration_data=data)


def test_weights_only_needs_no_data(small_cnn):
    q = tfq_tiny.quantize_model(small_cnn, "w4a32")
    assert {s.kind for s in quantizer_slots(q)} == {"weight"}


def test_dataset_calibration_matches_array(small_cnn, images):
    from tfq_tiny._compat import tf

    a = tfq_tiny.quantize_model(small_cnn, "w4a4", calibration_data=images)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images)))).batch(16)
    b = tfq_tiny.quantize_model(small_cnn, "w4a4", calibration_data=ds)
    np.testing.assert_allclose(a.predict(images, verbose=0), b.predict(images, verbose=0),
                               atol=1e-6)


def test_biases_snapped_to_their_int32_grid(small_cnn, images):
    """Every simulated bias is b_int * s_in * s_w[c], the value the converter stores."""
    from tfq_tiny.quantization.calibration import input_activation_slot

    q = tfq_tiny.quantize_model(small_cnn, "w4a4", calibration_data=images)
    slots = quantizer_slots(q)
    checked = 0
    for slot in slots:
        layer = slot.layer.layer if slot.kind == "weight" else None
        if layer is None or not layer.use_bias:
            continue
        s_in = float(input_activation_slot(slot.layer, slots).variables["scale"].numpy().reshape(-1)[0])
        grid = np.float64(np.float32(s_in)) * slot.variables["scale"].numpy().astype(np.float64).reshape(-1)
        codes = layer.bias.numpy().astype(np.float64) / grid
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
        checked += 1
    assert checked >= 4


def test_tf_fixed_point_equals_the_kernels_numpy_arithmetic():
    """The simulation's TF QuantizeMultiplier / MultiplyByQuantizedMultiplier equal the NumPy
    arithmetic of the integer kernels on every element (negative values, ties, left shifts)."""
    from tfq_tiny.quantization import requantization as rq
    from tfq_tiny.runtime import arithmetic as ar

    rng = np.random.default_rng(1)
    reals = np.concatenate([rng.uniform(1e-6, 4.0, 300), 2.0 ** np.arange(-20, 2),
                            np.nextafter(2.0 ** np.arange(-20, 2), 0)])
    multiplier, shift = rq.quantize_multiplier(tf.constant(reals, tf.float64))
    expected = [ar.quantize_multiplier(r, "double") for r in reals]
    np.testing.assert_array_equal(multiplier.numpy(), [m for m, _ in expected])
    np.testing.assert_array_equal(shift.numpy(), [s for _, s in expected])
    x = np.concatenate([rng.integers(-(1 << 22), 1 << 22, (500, 1)), np.arange(-64, 64)[:, None],
                        rng.integers(-(1 << 28), 1 << 28, (200, 1)), [[(1 << 29) - 1], [-(1 << 29)]]])
    got = rq.multiply_by_quantized_multiplier(tf.constant(x, tf.float64), multiplier, shift).numpy()
    want = ar.multiply_by_quantized_multiplier(x, np.array([m for m, _ in expected]),
                                               np.array([s for _, s in expected]), "double")
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("policy", ["w8a8", "w4a4"])
def test_weighted_outputs_simulate_tflm_double_rounding(small_cnn, images, policy):
    """Weighted layers' (fused) output quantizers get a DoubleRounding linked to their live input
    and weight scales; it equals the shim's TFLM arithmetic; other quantizers get none."""
    from tfq_tiny.quantization.requantization import DoubleRounding
    from tfq_tiny.runtime import arithmetic as ar

    q = tfq_tiny.quantize_model(small_cnn, policy, calibration_data=images)
    linked = {s.layer_name for s in quantizer_slots(q) if getattr(s.quantizer, "requantization", None)}
    assert {"r1", "fc"} <= linked and not linked & {"add", "ap", "gap"}

    rng = np.random.default_rng(0)
    s_in, s_out = np.float32(0.037), np.float32(0.11)
    s_w = rng.uniform(1e-3, 2e-2, size=6).astype(np.float32)
    acc = rng.integers(-20000, 20000, size=(400, 6))
    real = s_in * s_w.astype(np.float64) / s_out
    expected = []
    for c in range(6):
        m, shift = ar.quantize_multiplier(float(real[c]))
        expected.append(ar.multiply_by_quantized_multiplier(acc[:, c], m, shift, "double"))
    scaled = (acc * real).astype(np.float32)
    got = DoubleRounding(tf.constant(s_in), tf.constant(s_w)).round(tf.constant(scaled), tf.constant(s_out))
    np.testing.assert_array_equal(got.numpy(), np.stack(expected, axis=1))
    single = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    assert np.any(single != np.stack(expected, axis=1))  # the case is not trivial


def test_edge_bits_hold_input_first_last_and_residual_inputs():
    from tfq_tiny import models
    from tfq_tiny.quantization import edge_tensors, with_edge_bits
    from tfq_tiny.search.memory import MemoryModel

    res8 = models.build("res8")
    branch_outputs = ["block1_conv2", "block2_conv2", "block2_shortcut", "block3_conv2",
                      "block3_shortcut"]
    expected = {"input": ["activation_bits"], "conv1": ["weight_bits"], "logits": ["weight_bits"],
                "avg_pool": ["activation_bits"],
                **{name: ["activation_bits"] for name in branch_outputs}}
    assert edge_tensors(res8) == expected
    assert edge_tensors(res8, edges="input") == {"input": ["activation_bits"]}
    # block1's identity shortcut also feeds block1_conv1, so it stays at the policy's width.
    assert "conv1_relu" not in edge_tensors(res8)
    policy = with_edge_bits("w4a4", res8)
    assignment = MemoryModel(res8).assignment(policy)
    for (kind, layer), bits in assignment.items():
        held = kind + "_bits" in expected.get(layer, [])
        assert bits == (8 if held else 4), (kind, layer, bits)
    assert with_edge_bits("w8a8", res8) == BitPolicy.uniform(8, 8)
    wider = BitPolicy.uniform(4, 4).with_override("conv1", weight_bits=8)
    assert with_edge_bits(wider, res8, bits=6).weight_bits_for("conv1") == 8
    assert sorted(edge_tensors(models.build("ds_cnn"))) == ["avg_pool", "conv1", "input", "logits"]
    with pytest.raises(ValueError, match="Unknown edges"):
        edge_tensors(res8, edges=("middle",))
    with pytest.raises(BitWidthError):
        with_edge_bits("w4a4", res8, bits=16)
