"""Model builders: exact parameter counts, output shapes, the layer vocabulary the quantizer supports,
and the committed float checkpoints scoring what their JSON records."""
import json
import os

import numpy as np
import pytest

from tfq_tiny import data, models
from tfq_tiny._compat import keras
from tfq_tiny.errors import TfqError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.environ.get("TFQ_DATA_DIR") or os.path.join(REPO, "..", "shared", "data")

ALLOWED = {"InputLayer", "Conv1D", "Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization", "ReLU",
           "Add", "AveragePooling2D", "MaxPooling1D", "MaxPooling2D", "GlobalAveragePooling2D",
           "Flatten", "Reshape", "Dropout"}


def conv_bn(k_elems, cin, cout):
    """Parameters of a conv with bias (k_elems kernel taps) followed by BatchNorm (4 per channel)."""
    return k_elems * cin * cout + cout + 4 * cout


def dw_bn(c):
    return 9 * c + c + 4 * c


def res8_params():
    def block(cin, cout, projection):
        return conv_bn(9, cin, cout) + conv_bn(9, cout, cout) + (conv_bn(1, cin, cout) if projection else 0)

    return conv_bn(9, 3, 16) + block(16, 16, False) + block(16, 32, True) + block(32, 64, True) + 64 * 10 + 10


def ds_cnn_params():
    return conv_bn(40, 1, 64) + 4 * (dw_bn(64) + conv_bn(1, 64, 64)) + 64 * 12 + 12


def mobilenet_params(alpha, classes):
    widths = [int(w * alpha) for w in (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)]
    blocks = sum(dw_bn(cin) + conv_bn(1, cin, cout) for cin, cout in zip(widths, widths[1:]))
    return conv_bn(9, 3, widths[0]) + blocks + widths[-1] * classes + classes


def cnn1d_params():
    flat = ((128 - 2 - 2) // 2) * 64
    return conv_bn(3, 9, 64) + conv_bn(3, 64, 64) + flat * 6 + 6


EXPECTED = {
    "res8": (79_050, (None, 10), (None, 32, 32, 3)),
    "ds_cnn": (24_908, (None, 12), (None, 49, 10, 1)),
    "mobilenet_v1": (221_794, (None, 2), (None, 96, 96, 3)),
    "cnn1d": (38_470, (None, 6), (None, 128, 9)),
}
HAND = {"res8": res8_params, "ds_cnn": ds_cnn_params, "cnn1d": cnn1d_params,
        "mobilenet_v1": lambda: mobilenet_params(0.25, 2)}


@pytest.fixture(scope="module")
def built():
    return {name: models.build(name) for name in models.MODELS}


def test_registry_lists_the_four_models():
    assert set(models.MODELS) == {"res8", "ds_cnn", "mobilenet_v1", "cnn1d"}
    with pytest.raises(TfqError, match="unknown model"):
        models.build("resnet50")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_count_and_shapes(built, name):
    params, out_shape, in_shape = EXPECTED[name]
    model = built[name]
    assert HAND[name]() == params
    assert model.count_params() == params
    assert model.output_shape == out_shape
    assert model.input_shape == in_shape


def test_mobilenet_imagenet_shape():
    model = models.build("mobilenet_v1", input_shape=(224, 224, 3), alpha=1.0, classes=1000)
    assert model.count_params() == mobilenet_params(1.0, 1000) == 4_264_808
    assert model.output_shape == (None, 1000)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_layer_vocabulary(built, name):
    model = built[name]
    layers = model.layers
    assert {type(layer).__name__ for layer in layers} <= ALLOWED
    assert len({layer.name for layer in layers}) == len(layers)
    assert all(not layer.name.startswith(type(layer).__name__.lower() + "_") for layer in layers)
    dense = [i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.Dense)]
    assert dense == [len(layers) - 1]
    for layer in layers:
        if hasattr(layer, "activation"):
            assert layer.activation is keras.activations.linear, layer.name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_conv_feeds_batchnorm(built, name):
    for layer in built[name].layers:
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
            consumers = [node.outbound_layer for node in layer.outbound_nodes]
            assert [type(c).__name__ for c in consumers] == ["BatchNormalization"], layer.name


def test_res8_and_mobilenet_use_same_padding(built):
    for name in ("res8", "mobilenet_v1", "ds_cnn"):
        for layer in built[name].layers:
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
                assert layer.padding == "same", layer.name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_outputs_are_logits(built, name):
    model = built[name]
    x = np.random.default_rng(0).normal(size=(2,) + model.input_shape[1:]).astype(np.float32)
    y = model(x, training=False).numpy()
    assert y.shape == (2, model.output_shape[-1])
    assert not np.allclose(y.sum(-1), 1.0)


def _checkpoint(name):
    path = models.checkpoint_path(name)
    if not os.path.exists(path):
        pytest.skip(f"no committed checkpoint {path} yet")
    with open(path[:-3] + ".json") as f:
        return path, json.load(f)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_checkpoint_scores_recorded_accuracy(name):
    if not os.path.isdir(DATA_DIR):
        pytest.skip(f"no data at {DATA_DIR}")
    path, report = _checkpoint(name)
    model = keras.models.load_model(path, compile=False)
    assert model.count_params() == EXPECTED[name][0]
    ds = data.load(models.DATASET_OF[name], data_dir=DATA_DIR, seed=report["seed"])
    assert ds.name == report["dataset"]["name"]
    rows = slice(0, 500)
    logits = model.predict(ds.features("test", rows), batch_size=250, verbose=0)
    acc = float(np.mean(np.argmax(logits, -1) == ds.labels("test", rows)))
    assert abs(acc - report["test_accuracy_first500"]) <= 0.01
