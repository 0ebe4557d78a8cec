"""Shared fixtures: small models and data, and TFQ_DATA_DIR pointing at ../shared/data."""
import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("TFQ_DATA_DIR", str(REPO.parent / "shared" / "data"))

from tfq_tiny._compat import keras  # noqa: E402


def _randomize_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, c), rng.normal(0, 0.5, c),
                               rng.normal(0, 0.3, c), rng.uniform(0.3, 2.0, c)])
    return model


@pytest.fixture
def small_cnn():
    """Conv-BN-ReLU, depthwise-separable pair, residual Add, pools and a Dense head."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    i = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", name="c1")(i)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="r1")(x)
    y = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = layers.BatchNormalization(name="bn2")(y)
    y = layers.ReLU(name="r2")(y)
    y = layers.Conv2D(8, 1, name="pw")(y)
    y = layers.BatchNormalization(name="bn3")(y)
    z = layers.Add(name="add")([x, y])
    z = layers.ReLU(name="r3")(z)
    z = layers.AveragePooling2D(name="ap")(z)
    z = layers.MaxPooling2D(name="mp")(z)
    z = layers.GlobalAveragePooling2D(name="gap")(z)
    z = layers.Dense(5, name="fc")(z)
    return _randomize_bn(keras.Model(i, z), np.random.default_rng(0))


@pytest.fixture
def small_conv1d():
    keras.utils.set_random_seed(1)
    layers = keras.layers
    i = keras.Input((32, 4), name="signal")
    x = layers.Conv1D(6, 5, name="c1")(i)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="r1")(x)
    x = layers.Conv1D(6, 3, name="c2", activation="relu")(x)
    x = layers.MaxPooling1D(2, name="mp")(x)
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(3, name="fc")(x)
    return _randomize_bn(keras.Model(i, x), np.random.default_rng(1))


@pytest.fixture
def images():
    return np.random.default_rng(2).normal(size=(64, 16, 16, 3)).astype("float32")


@pytest.fixture
def signals():
    return np.random.default_rng(3).normal(size=(64, 32, 4)).astype("float32")
