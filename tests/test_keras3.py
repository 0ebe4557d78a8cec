"""Keras 3 models in: ``as_tf_keras``, ``load_float_model`` and quantize_model on Keras 3."""
import numpy as np
import pytest

import tfq_tiny
from tfq_tiny._compat import keras
from tfq_tiny.errors import ModelFileError, ModelFormatError

keras3 = pytest.importorskip("keras")
if keras3.__version__.split(".")[0] != "3":
    pytest.skip("needs Keras 3 beside tf_keras", allow_module_level=True)
L3 = keras3.layers


def keras3_image_model():
    """A Keras 3 model as users write it, with a trained-looking BatchNorm."""
    keras3.utils.set_random_seed(0)
    i = keras3.Input((12, 12, 3), name="pixels")
    x = L3.Conv2D(8, 3, padding="same", name="c1")(L3.Rescaling(1 / 255, name="scale")(i))
    x = L3.ReLU(6.0, name="r1")(L3.BatchNormalization(name="bn")(x))
    y = L3.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L3.SeparableConv2D(8, 3, padding="same", activation="relu", name="sep")(y)
    z = L3.Dropout(0.2, name="drop")(L3.MaxPooling2D(name="mp")(L3.Add(name="add")([x, y])))
    z = L3.Dense(4, activation="softmax", name="head")(L3.GlobalAveragePooling2D(name="gap")(z))
    model = keras3.Model(i, z)
    bn = model.get_layer("bn")
    rng = np.random.default_rng(1)
    bn.set_weights([w + rng.uniform(0.1, 0.5, w.shape) for w in bn.get_weights()])
    return model


def pixels(n=32):
    return np.random.default_rng(2).uniform(0, 255, (n, 12, 12, 3)).astype(np.float32)


def test_functional_model_is_rebuilt_with_equal_outputs_and_quantizes():
    model = keras3_image_model()
    rebuilt = tfq_tiny.as_tf_keras(model)
    assert isinstance(rebuilt, keras.Model)
    assert [l.name for l in rebuilt.layers] == [l.name for l in model.layers]
    x = pixels()
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    assert tfq_tiny.as_tf_keras(rebuilt) is rebuilt
    qmodel = tfq_tiny.quantize_model(model, "w8a8", calibration_data=x)
    np.testing.assert_allclose(qmodel.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=0.05)


def test_keras3_tcn_with_leaky_relu_is_rebuilt():
    """Keras 3 names LeakyReLU's slope ``negative_slope`` (tf_keras: ``alpha``); a causal TCN
    with one rebuilds with equal outputs."""
    keras3.utils.set_random_seed(0)
    i = L3.Input((40, 6))
    x = L3.LeakyReLU(negative_slope=0.15, name="lr")(L3.Conv1D(8, 3, padding="causal")(i))
    x = L3.Conv1D(8, 3, padding="causal", dilation_rate=2, activation="relu")(x)
    model = keras3.Model(i, L3.Dense(3)(L3.GlobalAveragePooling1D()(x)))
    rebuilt = tfq_tiny.as_tf_keras(model)
    assert rebuilt.get_layer("lr").get_config()["alpha"] == pytest.approx(0.15)
    x = np.random.default_rng(0).normal(size=(8, 40, 6)).astype(np.float32)
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


def test_sequential_with_adapted_normalization_and_saved_files(tmp_path):
    signals = np.random.default_rng(3).normal(2, 3, (64, 20, 3)).astype(np.float32)
    norm = L3.Normalization()
    norm.adapt(signals)
    model = keras3.Sequential([keras3.Input((20, 3)), norm, L3.Conv1D(4, 5, activation="relu"),
                               L3.Flatten(), L3.Dense(2)])
    expected = model.predict(signals, verbose=0)
    np.testing.assert_allclose(tfq_tiny.as_tf_keras(model).predict(signals, verbose=0), expected,
                               atol=1e-5)
    model.save(tmp_path / "k3.keras")
    loaded = tfq_tiny.load_float_model(tmp_path / "k3.keras")
    assert isinstance(loaded, keras.Model)
    np.testing.assert_allclose(loaded.predict(signals, verbose=0), expected, atol=1e-5)
    tf_keras_model = tfq_tiny.as_tf_keras(model)
    tf_keras_model.save(tmp_path / "tfk.h5")
    np.testing.assert_allclose(tfq_tiny.load_float_model(tmp_path / "tfk.h5").predict(
        signals, verbose=0), expected, atol=1e-5)
    with pytest.raises(ModelFileError, match="not found"):
        tfq_tiny.load_float_model(tmp_path / "missing.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="Cannot load .*junk.keras"):
        tfq_tiny.load_float_model(tmp_path / "junk.keras")


class Scale(L3.Layer):
    def call(self, x):
        return 2.0 * x


@pytest.mark.parametrize("build, match", [
    (lambda i: L3.Dense(3, name="d")(Scale(name="custom")(i)), "'custom' is a Scale"),
    (lambda i: L3.Dense(3, lora_rank=2, name="d")(i), "'d' \\(Dense\\) sets lora_rank=2"),
    (lambda i: (lambda shared: L3.Add()([shared(i), shared(i)]))(L3.Dense(4, name="shared")),
     "'shared' is called 2 times")])
def test_what_cannot_be_rebuilt_is_named(build, match):
    i = keras3.Input((4,))
    model = keras3.Model(i, build(i))
    with pytest.raises(ModelFormatError, match=match):
        tfq_tiny.as_tf_keras(model)
