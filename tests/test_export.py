"""The converter (tfq_tiny.export.converter) end to end, on small tf_keras models.

(a) int8 exports run bit-exactly on the shim and the real TFLM interpreter (1000 inputs);
(b) W4A8 exports keep CONV_2D/DEPTHWISE_CONV_2D as builtins with packed INT4 filters and match
    TFLM and LiteRT; (c) the fake-quant model and the integer model agree within one step;
(d) TFQ_* custom ops give the same bits on the NumPy and the C++ kernels; (e) the flatbuffer is
close to the ideal size; (f) bad input fails with TfqError subclasses.

On (c): the contract is checked layer by layer (each fake-quant layer fed the integer model's own
inputs), where it holds on every element. End to end, one-step differences compound over layers
(TFLM's double rounding with the large multipliers of 2/4-bit grids, the int32 bias grid, exact
.5 ties of average pooling that the float simulation resolves by rounding noise), so only the
argmax agreement is asserted there and the within-one-step share is printed.
"""
import json
import os

import flatbuffers
import numpy as np
import pytest
from flatbuffers import flexbuffers

import tfq_tiny
from tfq_tiny import BitPolicy, models
from tfq_tiny._compat import keras
from tfq_tiny.analysis import op_graph
from tfq_tiny.errors import BitWidthError, ModelFileError, TfqError
from tfq_tiny.export import flatbuffer, packing, size_report
from tfq_tiny.export.converter import (ExportError, dequantize_output, layer_agreement, policy_of,
                                       quantize_input, read_metadata, strip_strings,
                                       to_tflite)
from tfq_tiny.runtime import custom_ops
from tfq_tiny.runtime.interpreter import Interpreter
from tfq_tiny.runtime.tflm import run_litert, run_tflm

L = keras.layers
fb = flatbuffer.schema_fb


def _randomize_bn(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, c), rng.normal(0, 0.5, c),
                               rng.normal(0, 0.3, c), rng.uniform(0.3, 2.0, c)])
    return model


def signal_model():
    """Conv1D/BN/ReLU, MaxPool1D, Conv1D+relu, AvgPool1D, GAP1D and Flatten heads, Add, Softmax."""
    keras.utils.set_random_seed(0)
    i = keras.Input((24, 3), name="signal")
    x = L.ReLU(name="r1")(L.BatchNormalization(name="bn1")(L.Conv1D(8, 3, padding="same", name="c1")(i)))
    x = L.MaxPooling1D(2, name="mp")(x)
    x = L.AveragePooling1D(2, name="ap")(L.Conv1D(8, 3, activation="relu", name="c2")(x))
    head = L.Add(name="add")([L.Dense(6, name="fc1")(L.GlobalAveragePooling1D(name="gap")(x)),
                              L.Dense(6, name="fc2")(L.Flatten(name="flat")(x))])
    return _randomize_bn(keras.Model(i, L.Softmax(name="softmax")(head)), 0)


def image_model():
    """Conv/BN/ReLU, depthwise (multiplier 2) + ReLU6, pointwise, 1x1 shortcut, Add+ReLU, pools, Dense."""
    keras.utils.set_random_seed(1)
    i = keras.Input((12, 12, 3), name="image")
    x = L.ReLU(name="r1")(L.BatchNormalization(name="bn1")(L.Conv2D(8, 3, padding="same", name="c1")(i)))
    y = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    y = L.ReLU(6.0, name="r2")(L.BatchNormalization(name="bn2")(y))
    y = L.BatchNormalization(name="bn3")(L.Conv2D(8, 1, name="pw")(y))
    z = L.ReLU(name="r3")(L.Add(name="add")([L.Conv2D(8, 1, name="sc")(x), y]))
    z = L.MaxPooling2D(2, name="mp")(L.AveragePooling2D(2, name="ap")(z))
    out = L.Dense(5, name="fc")(L.GlobalAveragePooling2D(name="gap")(z))
    return _randomize_bn(keras.Model(i, out), 1)


MIXED = (BitPolicy.uniform(4, 4).with_override("c1", weight_bits=8).with_override("r1", activation_bits=8)
         .with_override("dw", weight_bits=2).with_override("r2", activation_bits=2)
         .with_override("pw", weight_bits=8).with_override("sc", weight_bits=2, activation_bits=8)
         .with_override("fc", weight_bits=2))
POLICIES = {"w8a8": "w8a8", "w4a8": "w4a8", "w4a4": "w4a4", "w2a2": "w2a2", "mixed": MIXED}


def _data(shape, n, seed):
    return np.random.default_rng(seed).normal(size=(n,) + shape).astype(np.float32)


@pytest.fixture(scope="module")
def exports():
    """Cached (qmodel, model bytes, float test inputs) per (model, policy, converter options)."""
    builders = {"signal": (signal_model, (24, 3)), "image": (image_model, (12, 12, 3))}
    qmodels, cache = {}, {}

    def get(model_name, policy, **options):
        key = (model_name, policy, tuple(sorted(options.items())))
        if key not in cache:
            build, shape = builders[model_name]
            if (model_name, policy) not in qmodels:
                qmodels[model_name, policy] = tfq_tiny.quantize_model(
                    build(), POLICIES[policy], calibration_data=_data(shape, 128, 0))
            qmodel = qmodels[model_name, policy]
            cache[key] = (qmodel, to_tflite(qmodel, **options), _data(shape, 1000, 1))
        return cache[key]
    return get


def op_names(model_bytes):
    return [name for _, name in Interpreter(model_content=model_bytes).operators]


def tensor_types(model_bytes):
    model = flatbuffer.read_model(model_bytes)
    names = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    return {t.name.decode(): names[t.type] for t in model.subgraphs[0].tensors}


# ---- (a) int8 ------------------------------------------------------------------------------------

def test_int8_export_is_bit_exact_with_tflm_on_1000_inputs(exports):
    qmodel, model_bytes, x = exports("signal", "w8a8")
    ops = op_names(model_bytes)
    assert not any(name.startswith("CUSTOM") for name in ops)
    assert {"CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "ADD", "SOFTMAX"} <= set(ops)
    assert "MEAN" not in ops, "global average pooling deploys as a full-window AVERAGE_POOL_2D"
    xs = quantize_input(model_bytes, x)
    assert xs.shape == (1000, 24, 3) and xs.dtype == np.int8
    ours = Interpreter(model_content=model_bytes).run(xs)[0]
    tflm = run_tflm(model_bytes, xs)
    assert ours.size == 6000
    assert np.array_equal(ours, tflm), f"{np.sum(ours != tflm)} of {ours.size} elements differ"
    lite = run_litert(exports("signal", "w8a8", litert_compatible=True)[1], xs[:200])
    assert np.abs(lite.astype(int) - ours[:200]).max() <= 1  # LiteRT's FC rounds once


def test_int8_export_tensors_carry_our_grids(exports):
    qmodel, model_bytes, _ = exports("signal", "w8a8")
    ops, _, _ = op_graph(qmodel)
    shim = Interpreter(model_content=model_bytes)
    slots = {s.layer_name: s for s in tfq_tiny.quantization.quantizer_slots(qmodel)}
    by_name = {t["name"]: t for t in shim.tensors}
    checked = 0
    for op in ops:
        owner = op.fused[-1] if op.fused else op.name
        if owner in slots and owner != "softmax":
            for name, t in by_name.items():
                if name == op.name or name.startswith(op.name + "#"):
                    assert t["scales"][0] == np.float32(slots[owner].variables["scale"].numpy()), name
                    assert t["zero_points"][0] == int(slots[owner].variables["zero_point"].numpy()), name
                    checked += 1
    assert checked >= 8
    softmax = by_name["softmax"]
    assert softmax["scales"][0] == np.float32(1 / 256) and softmax["zero_points"][0] == -128
    c1 = next(t for t in shim.tensors if t["name"] == "c1/kernel")
    slot = slots["c1"]
    assert np.array_equal(c1["scales"], slot.variables["scale"].numpy().astype(np.float32))
    codes = slot.quantizer.to_integers(slot.weight.numpy(), slot.variables)
    assert np.array_equal(shim.get_tensor(c1["index"]).reshape(8, 3, 3), np.transpose(codes, (2, 0, 1)))


# ---- (b) W4A8 ------------------------------------------------------------------------------------

def test_w4a8_int4_builtins_match_tflm_and_litert(exports):
    qmodel, model_bytes, x = exports("image", "w4a8", dense_int4="conv_1x1")
    ops = op_names(model_bytes)
    assert not any(name.startswith("CUSTOM") for name in ops)
    types = tensor_types(model_bytes)
    for layer in ("c1", "dw", "pw", "sc", "fc"):
        assert types[f"{layer}/kernel"] == "INT4"
    xs = quantize_input(model_bytes, x[:400])
    ours = Interpreter(model_content=model_bytes).run(xs)[0]
    assert np.array_equal(ours, run_tflm(model_bytes, xs))
    litert_bytes = exports("image", "w4a8", dense_int4="conv_1x1", litert_compatible=True)[1]
    assert np.array_equal(ours, run_litert(litert_bytes, xs))


def test_w4a8_default_dense_is_a_custom_op_and_8bit_dense_stays_builtin(exports):
    _, model_bytes, x = exports("image", "w4a8")
    ops = op_names(model_bytes)
    assert ops.count("CUSTOM 'TFQ_FULLY_CONNECTED'") == 1
    assert ops.count("CONV_2D") == 3 and "DEPTHWISE_CONV_2D" in ops
    as_conv = exports("image", "w4a8", dense_int4="conv_1x1")[1]
    xs = quantize_input(model_bytes, x[:100])
    assert np.array_equal(Interpreter(model_content=model_bytes).run(xs)[0],
                          Interpreter(model_content=as_conv).run(xs)[0])
    POLICIES["w4a8_fc8"] = BitPolicy.uniform(4, 8).with_override("fc", weight_bits=8)
    _, fc8, _ = exports("image", "w4a8_fc8")
    assert "FULLY_CONNECTED" in op_names(fc8)
    ours = Interpreter(model_content=fc8).run(xs)[0]
    assert np.array_equal(ours, run_tflm(fc8, xs))
    fc8_litert = exports("image", "w4a8_fc8", litert_compatible=True)[1]
    assert np.abs(run_litert(fc8_litert, xs).astype(int) - ours).max() <= 1


# ---- (c) fake quant vs integer ------------------------------------------------------------------

@pytest.mark.parametrize("policy,min_argmax", [("w8a8", 0.95), ("w4a8", 0.95), ("w4a4", 0.9), ("w2a2", 0.75),
                                               ("mixed", 0.9)])
def test_fake_quant_and_integer_model_agree_within_one_step(exports, policy, min_argmax):
    qmodel, model_bytes, x = exports("image", policy)
    report = layer_agreement(qmodel, model_bytes, x[:16])
    assert set(report) == {"c1", "dw", "pw", "sc", "add", "ap", "mp", "gap", "fc"}
    for layer, row in report.items():
        assert row["within_one_step"] >= 0.999, (layer, row)
    meta = read_metadata(model_bytes)
    ours = dequantize_output(meta, Interpreter(model_content=model_bytes).run(quantize_input(meta, x[:200]))[0])
    fake = qmodel.predict(x[:200], verbose=0)
    step = meta["outputs"][0]["scale"]
    within = np.mean(np.abs(ours - fake) <= step * (1 + 1e-4))
    argmax = np.mean(ours.argmax(1) == fake.argmax(1))
    print(f"{policy}: end to end within one step {within:.4f}, argmax agreement {argmax:.4f}; "
          f"per layer exact {min(r['exact'] for r in report.values()):.4f} (min)")
    assert argmax >= min_argmax
    # Biases snapped to their int32 grid, requantization simulated with TFLM's double rounding,
    # tied pools rounding ties as TFLite: the simulation is the integer model, layer by layer and
    # end to end.
    assert min(r["exact"] for r in report.values()) == 1.0, report
    assert within >= 0.999


@pytest.mark.parametrize("policy", ["w8a8", "w4a4"])
def test_signal_model_layers_agree_exactly(exports, policy):
    """W4A4 too: the softmax's input is logits, held at output_bits (8) for TFLM's SOFTMAX."""
    qmodel, model_bytes, x = exports("signal", policy)
    for layer, row in layer_agreement(qmodel, model_bytes, x[:24]).items():
        assert row["exact"] == 1.0, (layer, row)


def keras_applications_style_model():
    """The head and stride-2 blocks as keras.applications.MobileNet writes them: ZeroPadding2D
    before a VALID strided depthwise conv, SeparableConv2D, GAP -> Reshape -> 1x1 conv classifier
    -> Reshape -> softmax Activation."""
    keras.utils.set_random_seed(3)
    i = keras.Input((12, 12, 3), name="image")
    x = L.ReLU(6.0, name="r1")(L.BatchNormalization(name="bn1")(
        L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(i)))
    x = L.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(x)
    x = L.ReLU(6.0, name="r2")(L.DepthwiseConv2D(3, strides=2, name="dw")(x))
    x = L.SeparableConv2D(8, 3, padding="same", activation="relu", name="sep")(x)
    x = L.Reshape((1, 1, 8), name="to_map")(L.GlobalAveragePooling2D(name="gap")(x))
    x = L.Reshape((4,), name="to_logits")(L.Conv2D(4, 1, name="preds")(x))
    return _randomize_bn(keras.Model(i, L.Activation("softmax", name="prob")(x)), 3)


@pytest.mark.parametrize("policy", ["w8a8", "w4a4"])
def test_keras_applications_style_model_exports_and_agrees_exactly(policy):
    x = _data((12, 12, 3), 64, 5)
    qmodel = tfq_tiny.quantize_model(keras_applications_style_model(), policy, calibration_data=x)
    model_bytes = to_tflite(qmodel)
    assert not {"SHAPE", "PAD", "STRIDED_SLICE"} & {n.split()[0] for n in op_names(model_bytes)}
    report = layer_agreement(qmodel, model_bytes, x[:16])
    assert {"c1", "dw", "sep_depthwise", "sep_pointwise", "preds", "prob"} <= set(report)
    for layer, row in report.items():
        assert row["exact"] == 1.0, (policy, layer, row)


def assert_agrees_exactly(qmodel, model_bytes, x, layers):
    """Every layer (``layers`` among them) of the export equals the simulation on 16 inputs,
    and an all-builtin export equals TFLM on all of ``x``."""
    report = layer_agreement(qmodel, model_bytes, x[:16])
    assert set(layers) <= set(report)
    for layer, row in report.items():
        assert row["exact"] == 1.0, (layer, row)
    if not any(name.startswith("CUSTOM") for name in op_names(model_bytes)):
        xs = quantize_input(model_bytes, x)
        assert np.array_equal(Interpreter(model_content=model_bytes).run(xs)[0],
                              run_tflm(model_bytes, xs))


@pytest.mark.parametrize("policy", ["w8a8", "w4a4"])
def test_model_with_input_rescaling_takes_raw_pixels_and_agrees_exactly(policy):
    """``Rescaling(1/255)`` first, as Keras tutorials write it: it folds into the first conv, so
    the deployed model reads raw 0-255 pixels, on the shim and (int8) on TFLM."""
    keras.utils.set_random_seed(4)
    i = keras.Input((12, 12, 3), name="pixels")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(L.Rescaling(1 / 255)(i))
    x = L.GlobalAveragePooling2D(name="gap")(L.DepthwiseConv2D(3, activation="relu", name="dw")(x))
    model = keras.Model(i, L.Dense(4, activation="softmax", name="head")(x))
    pixels = np.random.default_rng(6).integers(0, 256, (64, 12, 12, 3)).astype(np.float32)
    qmodel = tfq_tiny.quantize_model(model, policy, calibration_data=pixels)
    model_bytes = to_tflite(qmodel)
    assert not {"MUL", "ADD"} & set(op_names(model_bytes))
    image = next(t for t in flatbuffer.read_model(model_bytes).subgraphs[0].tensors
                 if t.name == b"pixels")
    step = 255 / (2 ** (8 if policy == "w8a8" else 4) - 1)
    assert step / 2 < image.quantization.scale[0] <= step * 1.01  # pixel units (MSE may clip)
    assert_agrees_exactly(qmodel, model_bytes, pixels, {"c1", "dw", "head", "head_softmax"})


@pytest.mark.parametrize("policy", ["w8a8", "w4a4"])
def test_global_max_pooling_deploys_as_a_full_window_max_pool(policy):
    keras.utils.set_random_seed(5)
    i = keras.Input((40, 3), name="signal")
    x = L.GlobalMaxPooling1D(name="gmp")(L.Conv1D(8, 5, activation="relu", name="c1")(i))
    j = keras.Input((10, 10, 3), name="image")
    y = L.GlobalMaxPooling2D(keepdims=True, name="gmp")(L.Conv2D(8, 3, activation="relu")(j))
    for model, shape in [(keras.Model(i, L.Dense(4, name="fc")(x)), (40, 3)),
                         (keras.Model(j, L.Flatten()(L.Conv2D(4, 1, name="fc")(y))), (10, 10, 3))]:
        x_in = _data(shape, 64, 7)
        qmodel = tfq_tiny.quantize_model(model, policy, calibration_data=x_in)
        model_bytes = to_tflite(qmodel)
        assert "MAX_POOL_2D" in op_names(model_bytes) or policy != "w8a8"
        assert_agrees_exactly(qmodel, model_bytes, x_in, {"gmp", "fc"})


def _sigmoid_and_tanh_models():
    """A binary wake-word head (Dense(1, sigmoid)) and a tanh inside a 1D network."""
    keras.utils.set_random_seed(3)
    i = keras.Input((12, 12, 3))
    x = L.GlobalAveragePooling2D(name="gap")(L.Conv2D(8, 3, activation="relu", name="c1")(i))
    wake = keras.Model(i, L.Dense(1, activation="sigmoid", name="wake")(x))
    j = keras.Input((40, 3))
    y = L.Conv1D(8, 3, activation="relu", name="c2")(L.Conv1D(8, 5, activation="tanh", name="t1")(j))
    y = L.GlobalAveragePooling1D(name="gap")(y)
    return wake, keras.Model(j, L.Dense(3, activation="softmax", name="head")(y))


@pytest.mark.parametrize("policy", ["w8a8", "w4a4"])
def test_sigmoid_and_tanh_deploy_as_tflm_logistic_and_tanh(policy):
    """Each splits from its weight layer into TFLM's int8 LOGISTIC/TANH, whose input and output
    stay at 8 bits (output_bits) under any policy; the layers after it take the policy's width."""
    from tfq_tiny.export.arena import plan_arena
    from tfq_tiny.quantization.calibration import quantizer_slots
    from tfq_tiny.search.memory import tflm_arena_usage

    wake, gated = _sigmoid_and_tanh_models()
    for model, shape, builtin, function, before in [(wake, (12, 12, 3), "LOGISTIC", "wake_sigmoid", "wake"),
                                                    (gated, (40, 3), "TANH", "t1_tanh", "t1")]:
        x_in = _data(shape, 64, 8)
        qmodel = tfq_tiny.quantize_model(model, policy, calibration_data=x_in)
        model_bytes = to_tflite(qmodel)
        assert builtin in op_names(model_bytes)
        bits = {s.layer_name: s.quantizer.num_bits for s in quantizer_slots(qmodel) if s.kind == "output"}
        assert bits[function] == 8 and bits[before] == 8
        assert_agrees_exactly(qmodel, model_bytes, x_in, {function, before})
        if policy == "w8a8":   # LOGISTIC/TANH take no scratch: the arena plan is TFLM's
            assert plan_arena(model_bytes)["head"] == \
                tflm_arena_usage(model_bytes, arena_size=1 << 20)["head"]
    assert bits["c2"] == (4 if policy == "w4a4" else 8)


def test_a_binary_classifier_is_scored_at_probability_one_half():
    """One output column is a binary score: accuracy and the search proxy threshold it (0.5
    after a sigmoid, 0 for a logit) instead of taking an argmax over one column."""
    from tfq_tiny.evaluate import accuracy
    from tfq_tiny.search.proxy import ProxyEvaluator

    wake, _ = _sigmoid_and_tanh_models()
    logit = keras.Model(wake.input, L.Dense(1, name="score")(wake.get_layer("gap").output))
    x = _data((12, 12, 3), 128, 9)
    labels = {}
    for model, dense, threshold in [(logit, "score", 0.0), (wake, "wake", 0.5)]:
        kernel, bias = model.get_layer(dense).get_weights()
        pre = keras.Model(model.input, model.get_layer("gap").output).predict(x, verbose=0) @ kernel
        kernel, pre = kernel * 2 / pre.std(), pre * 2 / pre.std()   # logits spread over +-4
        model.get_layer(dense).set_weights([kernel, np.full_like(bias, -np.median(pre))])
        y = labels[dense] = (model.predict(x, verbose=0)[:, 0] > threshold).astype(int)
        assert y.sum() == len(y) // 2 and accuracy(model, x, y) == 100.0
        assert accuracy(model, x, 1 - y) == 0.0
    y = labels["wake"]
    proxy = ProxyEvaluator(wake, x, x, y, preprocess=())
    qmodel = tfq_tiny.quantize_model(wake, "w8a8", calibration_data=x, preprocess=())
    assert proxy.accuracy("w8a8") == accuracy(qmodel, x, y) > 60   # an argmax would give 50
    assert 0 < proxy.kl("w8a8") < proxy.kl("w2a2")


@pytest.mark.parametrize("magnitude", [0.0, 1e-9])
def test_constant_logits_still_deploy_a_softmax_tflm_can_run(magnitude):
    """An untrained model's logits can be (nearly) constant; their grid must still give TFLM's
    SOFTMAX a usable multiplier (before: scale 1e-12, refused at prepare)."""
    keras.utils.set_random_seed(0)
    i = keras.Input((8,))
    dense = L.Dense(4, name="fc")
    model = keras.Model(i, L.Softmax(name="sm")(dense(i)))
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * magnitude, bias * 0])
    x = _data((8,), 64, 3)
    qmodel = tfq_tiny.quantize_model(model, "w8a8", calibration_data=x)
    model_bytes = to_tflite(qmodel)
    assert_agrees_exactly(qmodel, model_bytes, x, {"fc", "sm"})
    out = Interpreter(model_content=model_bytes).run(quantize_input(model_bytes, x))[0]
    assert np.abs(dequantize_output(model_bytes, out) - 0.25).max() <= 1 / 256


def test_a_sigmoid_below_8_bits_is_refused_at_export():
    wake, _ = _sigmoid_and_tanh_models()
    policy = BitPolicy(8, 8).with_override("wake_sigmoid", activation_bits=4)
    qmodel = tfq_tiny.quantize_model(wake, policy, calibration_data=_data((12, 12, 3), 16, 0))
    with pytest.raises(ExportError, match="'wake_sigmoid' \\(sigmoid\\) must read and write 8-bit.*LOGISTIC"):
        to_tflite(qmodel)


def _concatenation_models():
    """Inception-style branches joined on channels (one through a max pool), and two pooled
    feature vectors fused by a Concatenate before the classifier."""
    keras.utils.set_random_seed(2)
    i = keras.Input((12, 12, 3))
    a = L.Conv2D(6, 3, padding="same", activation="relu", name="a")(i)
    b = L.MaxPooling2D(1, name="mp")(L.Conv2D(4, 1, name="b")(i))
    x = L.Conv2D(8, 3, activation="relu", name="c")(L.Concatenate(name="cat")([a, b]))
    branches = keras.Model(i, L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(x)))
    fused = L.Concatenate(name="fuse")([L.GlobalAveragePooling2D(name="g1")(x),
                                        L.GlobalAveragePooling2D(name="g2")(a)])
    return branches, keras.Model(i, L.Dense(3, name="head")(fused))


@pytest.mark.parametrize("policy", ["w8a8", "w4a4"])
def test_concatenate_deploys_as_tflm_concatenation_on_one_grid(policy, tmp_path):
    """The concatenated layers write on the Concatenate's 8-bit grid (TFLM copies integers);
    the layers after it take the policy's width. Saved and loaded, the ties still hold."""
    from tfq_tiny.quantization.calibration import quantizer_slots

    x_in = _data((12, 12, 3), 64, 8)
    for model, joined in zip(_concatenation_models(), [("a", "b", "cat"), ("g1", "g2", "fuse")]):
        qmodel = tfq_tiny.quantize_model(model, policy, calibration_data=x_in)
        tfq_tiny.save_model(qmodel, str(tmp_path / "q.h5"))
        qmodel = tfq_tiny.load_model(str(tmp_path / "q.h5"))
        grids = {s.layer_name: (s.quantizer.num_bits, float(s.variables["scale"].numpy()),
                                float(s.variables["zero_point"].numpy()))
                 for s in quantizer_slots(qmodel) if s.kind == "output"}
        assert len({grids[name] for name in joined}) == 1 and grids[joined[0]][0] == 8
        assert grids["c"][0] == (4 if policy == "w4a4" else 8)
        model_bytes = to_tflite(qmodel)
        assert "CONCATENATION" in op_names(model_bytes)
        if policy == "w8a8" and joined[-1] == "cat":   # all builtins: also checked on TFLM
            assert not any(name.startswith("CUSTOM") for name in op_names(model_bytes))
        assert_agrees_exactly(qmodel, model_bytes, x_in, set(joined))


def test_concatenate_inputs_that_cannot_share_its_grid_are_refused():
    from tfq_tiny.errors import UnsupportedLayerError

    i = keras.Input((12, 12, 3))
    direct = keras.Model(i, L.Concatenate(name="cat")([i, L.Conv2D(3, 1, padding="same")(i)]))
    with pytest.raises(UnsupportedLayerError, match="reads 'input.*model input.*between"):
        tfq_tiny.quantize_model(direct, "w8a8", calibration_data=_data((12, 12, 3), 16, 0))
    c = L.Conv2D(3, 1, name="c")(i)
    twice = keras.Model(i, [L.Concatenate(name="x1")([c, c]), L.Concatenate(name="x2")([c, c])])
    with pytest.raises(UnsupportedLayerError, match="'c', which feeds 2 Concatenates"):
        tfq_tiny.quantize_model(twice, "w8a8", calibration_data=_data((12, 12, 3), 16, 0))
    branches, _ = _concatenation_models()
    low = tfq_tiny.quantize_model(branches, BitPolicy(8, 8).with_override("a", activation_bits=4),
                                  calibration_data=_data((12, 12, 3), 16, 0))
    with pytest.raises(ExportError, match="'cat' \\(Concatenate\\) must read and write one 8-bit grid"):
        to_tflite(low)


def test_a_padding_that_cannot_fold_is_refused_by_name():
    i = keras.Input((12, 12, 3))
    x = L.Conv2D(4, 3, strides=2, name="c")(L.ZeroPadding2D(1, name="pad_sym")(i))
    qmodel = tfq_tiny.quantize_model(keras.Model(i, x), "w8a8",
                                     calibration_data=_data((12, 12, 3), 16, 0))
    with pytest.raises(ExportError, match="'pad_sym' \\(ZeroPadding2D\\) deploys only folded"):
        to_tflite(qmodel)


# ---- (d) native vs NumPy -----------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["w4a4", "mixed", "w2a2"])
def test_custom_ops_native_equals_numpy_on_every_tensor(exports, policy):
    _, model_bytes, x = exports("image", policy)
    ops = op_names(model_bytes)
    # the image model has no LeakyReLU: test_leaky_relu_deploys_as_leaky_relu_at_every_width
    # compares TFQ_LEAKY_RELU's kernels
    covered = set(custom_ops.CUSTOM_CODES) - {custom_ops.LEAKY_RELU}
    assert {f"CUSTOM '{code}'" for code in covered} <= set(ops)
    numpy_shim = Interpreter(model_content=model_bytes)
    native_shim = Interpreter(model_content=model_bytes, kernels="native")
    compared = 0
    for row in quantize_input(model_bytes, x[:60]):
        numpy_shim.run(row[None])
        native_shim.run(row[None])
        for t in numpy_shim.tensors:
            if not t["constant"]:
                a, b = numpy_shim.get_tensor(t["index"]), native_shim.get_tensor(t["index"])
                assert np.array_equal(a, b), (policy, t["name"])
                compared += a.size
    assert compared > 60 * 1000


def test_mixed_policy_operator_table(exports):
    _, model_bytes, _ = exports("image", "mixed")
    model = flatbuffer.read_model(model_bytes)
    graph = model.subgraphs[0]
    options = {}
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if code.customCode:
            name = graph.tensors[op.outputs[0]].name.decode()
            options[name] = custom_ops.decode_options(bytes(np.asarray(op.customOptions, np.uint8)))
    assert {options["add"]["input_bits"], options["add"]["input2_bits"]} == {4, 8}
    assert options["dw"]["weight_bits"] == 2 and options["dw"]["output_bits"] == 2
    assert options["dw"]["depth_multiplier"] == 2 and options["dw"]["padding"] == "SAME"
    dw_zero_point = int(next(t for t in graph.tensors if t.name == b"dw").quantization.zeroPoint[0])
    assert options["dw"]["act_min"] == max(-2, dw_zero_point)  # ReLU6 folded into the range
    assert options["c1"]["input_bits"] == 4
    # the packed model input is declared [1, bytes] and c1 carries its logical shape; packed
    # tensors inside are declared with their innermost dimension in bytes, and marked so
    assert options["c1"]["input_shape"] == [1, 12, 12, 3] and "output_shape" not in options["c1"]
    assert list(next(t for t in graph.tensors if t.name == b"image").shape) == [1, 12 * 12 * 3 * 4 // 8]
    assert options["dw"]["output_shape"] == options["pw"]["input_shape"] == custom_ops.INNERMOST_BYTES
    dw_out = next(t for t in graph.tensors if t.name == b"dw")
    assert list(dw_out.shape) == [1, 12, 12, 16 * 2 // 8]
    assert options["c1"]["weight_bits"] == options["c1"]["output_bits"] == 8
    assert options["fc"]["output_bits"] == 8 and options["fc"]["weight_bits"] == 2
    assert all(options[k].get("stride_h", 1) == options[k].get("dilation_w", 1) == 1 for k in ("c1", "dw", "pw", "sc"))
    assert options["ap"]["stride_h"] == options["ap"]["filter_w"] == 2
    types = tensor_types(model_bytes)
    assert types["dw/kernel"] == "INT8" and types["c1/kernel"] == "INT8" and types["pw/kernel"] == "INT8"
    assert types["fc/kernel"] == "INT8" and types["add"] == "INT8"
    dw = next(t for t in graph.tensors if t.name == b"dw/kernel")
    assert len(model.buffers[dw.buffer].data) == packing.packed_size(int(np.prod(dw.shape)), 2)


def test_innermost_bytes_only_where_the_values_fill_whole_bytes():
    """A packed tensor is declared with its innermost dimension in bytes only when its channels
    fill whole bytes and every operator sees one shape; else [1, bytes] with explicit shapes.
    Both run identically in the NumPy and C++ kernels and agree with the fake-quant layers."""
    keras.utils.set_random_seed(3)
    i = keras.Input((8, 8, 3), name="img")
    x = L.ReLU(name="r1")(L.Conv2D(5, 3, padding="same", name="c1")(i))  # 5 x 4 bits: 2.5 bytes
    x = L.ReLU(name="r2")(L.Conv2D(8, 1, name="c2")(x))
    x = L.ReLU(name="r3")(L.Conv2D(8, 1, name="c3")(x))
    model = keras.Model(i, L.Dense(4, name="fc")(L.Flatten(name="flat")(x)))  # flatten: [1, 512]
    qmodel = tfq_tiny.quantize_model(model, "w4a4", calibration_data=_data((8, 8, 3), 64, 0))
    model_bytes = to_tflite(qmodel)
    graph = flatbuffer.read_model(model_bytes).subgraphs[0]
    declared = {t.name.decode(): [int(d) for d in t.shape] for t in graph.tensors}
    options = {}
    for op in graph.operators:
        if op.customOptions is not None:
            options[graph.tensors[op.outputs[0]].name.decode()] = custom_ops.decode_options(bytes(op.customOptions))
    assert declared["c1"] == [1, 8 * 8 * 5 // 2] and options["c2"]["input_shape"] == [1, 8, 8, 5]
    assert declared["c2"] == [1, 8, 8, 4]
    assert options["c2"]["output_shape"] == options["c3"]["input_shape"] == custom_ops.INNERMOST_BYTES
    assert declared["c3"] == [1, 8 * 8 * 8 // 2] and options["fc"]["input_shape"] == [1, 512]
    x = _data((8, 8, 3), 16, 1)
    assert min(row["exact"] for row in layer_agreement(qmodel, model_bytes, x).values()) == 1.0
    numpy_shim = Interpreter(model_content=model_bytes)
    native_shim = Interpreter(model_content=model_bytes, kernels="native")
    for row in quantize_input(model_bytes, x[:4]):
        numpy_shim.run(row[None])
        native_shim.run(row[None])
        for t in numpy_shim.tensors:
            assert np.array_equal(numpy_shim.get_tensor(t["index"]), native_shim.get_tensor(t["index"])), t["name"]
    model = flatbuffer.read_model(model_bytes)
    c2 = next(op for op in model.subgraphs[0].operators if model.subgraphs[0].tensors[op.outputs[0]].name == b"c2")
    c2.customOptions = np.frombuffer(custom_ops.encode_options(dict(options["c2"], output_bits=8)), np.uint8)
    with pytest.raises(ModelFileError, match="innermost dimension in bytes.*below 8 bits"):
        Interpreter(model_content=flatbuffer.write_model(model))


def test_int2_typed_filters_give_the_same_outputs(exports):
    _, as_int8, x = exports("image", "w2a2")
    _, as_int2, _ = exports("image", "w2a2", int2_type="INT2")
    assert tensor_types(as_int8)["dw/kernel"] == "INT8" and tensor_types(as_int2)["dw/kernel"] == "INT2"
    xs = quantize_input(as_int8, x[:40])
    assert np.array_equal(Interpreter(model_content=as_int8).run(xs)[0],
                          Interpreter(model_content=as_int2).run(xs)[0])


def test_sub_8bit_input_is_stored_packed(exports):
    _, model_bytes, x = exports("image", "w4a4")
    meta = read_metadata(model_bytes)
    grid = meta["inputs"][0]
    assert meta["layout_version"] == 4
    assert grid["bits"] == 4 and grid["storage_bits"] == 4 and grid["shape"] == [1, 12, 12, 3]
    rows = quantize_input(meta, x[:3])
    assert rows.shape == (3, 216) and rows.dtype == np.int8  # 432 int4 values per sample
    assert list(Interpreter(model_content=model_bytes).get_input_details()[0]["shape"]) == [1, 216]
    scaled = x[0] / np.float32(grid["scale"])
    values = np.clip(np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5)) + grid["zero_point"], -8, 7)
    assert np.array_equal(rows[0].view(np.uint8), packing.pack(values.astype(np.int8), 4))
    assert np.array_equal(custom_ops.unpack_storage(rows[0], 4, grid["shape"]), values[None])
    assert np.array_equal(quantize_input(meta, x[0]), rows[:1])  # one sample, no batch axis
    with pytest.raises(TfqError, match="logical shape"):
        quantize_input(meta, x[0, :5])


# ---- (e) size --------------------------------------------------------------------------------------

def _ideal_bytes(qmodel):
    ops, _, _ = op_graph(qmodel)
    total = 0
    for op in ops:
        if op.kernel_shape is not None:
            total += -(-int(np.prod(op.kernel_shape)) * op.weight_bits // 8) + 4 * op.bias_size + 4 * op.channels
    return total


@pytest.mark.parametrize("policy", ["w8a8", "w4a4", "w2a2"])
def test_flatbuffer_size_is_close_to_ideal(policy):
    model = models.build("cnn1d")
    qmodel = tfq_tiny.quantize_model(model, policy, calibration_data=_data((128, 9), 64, 0), init="minmax")
    model_bytes = to_tflite(qmodel)
    ideal = _ideal_bytes(qmodel)
    print(f"cnn1d {policy}: {len(model_bytes)} bytes, ideal {ideal} ({len(model_bytes) / ideal - 1:+.2%})")
    assert ideal < len(model_bytes) <= 1.03 * ideal + 4096


@pytest.mark.parametrize("policy", ["w8a8", "mixed"])
def test_size_report_accounts_for_every_byte(exports, policy):
    qmodel, model_bytes, _ = exports("image", policy)
    report = size_report(model_bytes)
    assert report["total"] == len(model_bytes)
    assert sum(v for k, v in report.items() if k != "total") == len(model_bytes)
    model = flatbuffer.read_model(model_bytes)
    graph = model.subgraphs[0]

    def stored(suffix):
        return sum(len(model.buffers[t.buffer].data) for t in graph.tensors if t.name.endswith(suffix))

    kernels = [t for t in graph.tensors if t.name.endswith(b"/kernel")]
    assert (report["weights"], report["biases"]) == (stored(b"/kernel"), stored(b"/bias"))
    assert report["scales"] == sum(4 * len(t.quantization.scale) for t in kernels)
    assert report["weights"] + report["biases"] + report["scales"] <= _ideal_bytes(qmodel)
    assert report["metadata"] == len(json.dumps(read_metadata(model_bytes), sort_keys=True, separators=(",", ":")))
    assert report["names"] >= sum(len(t.name) + 5 for t in graph.tensors if t.name)
    assert report["options"] >= sum(len(op.customOptions) for op in graph.operators if op.customOptions is not None)
    assert report["padding"] < 16 * len(model.buffers)
    for cut in (4, 100, len(model_bytes) // 2):
        with pytest.raises(ModelFileError, match="size_report"):
            size_report(model_bytes[:cut])


def test_writer_shares_equal_objects_and_readers_agree(exports):
    """write_model writes equal vectors, strings, quantization parameters and options once; the
    shim reads the same model as from a plain Pack. Activations use the empty buffer 0 and carry
    no shape_signature."""
    _, model_bytes, x = exports("image", "w4a4")
    model = flatbuffer.read_model(model_bytes)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=flatbuffer.FILE_IDENTIFIER)
    plain, shared = bytes(builder.Output()), flatbuffer.write_model(model)
    assert len(shared) < len(plain) - 200

    def content(data):
        graph = flatbuffer.read_model(data).subgraphs[0]
        return ([(t.name, t.type, t.buffer, list(t.shape), None if t.quantization is None else
                  (list(t.quantization.scale), list(t.quantization.zeroPoint))) for t in graph.tensors],
                [(list(op.inputs), list(op.outputs), bytes(np.asarray(op.customOptions, np.uint8)))
                 for op in graph.operators])
    assert content(shared) == content(plain)
    xs = quantize_input(model_bytes, x[:20])
    assert np.array_equal(Interpreter(model_content=shared).run(xs)[0], Interpreter(model_content=plain).run(xs)[0])
    graph = model.subgraphs[0]
    activations = [t for t in graph.tensors if model.buffers[t.buffer].data is None]
    assert len(activations) > 5 and all(t.buffer == 0 for t in activations)
    assert all(t.shapeSignature is None for t in graph.tensors)


def test_filters_carry_one_zero_point_unless_litert_compatible(exports):
    """TFLM accepts one zero point for all channels of a filter (up to 8 B per channel less FLASH);
    LiteRT needs the full array, which litert_compatible=True writes."""
    _, compact, _ = exports("image", "w8a8")
    _, full, _ = exports("image", "w8a8", litert_compatible=True)

    def filter_zero_points(model_bytes):
        graph = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(model_bytes, 0)).subgraphs[0]
        return {t.name.decode(): (len(t.quantization.scale), len(t.quantization.zeroPoint))
                for t in graph.tensors if t.name.endswith(b"/kernel")}

    compact_zps, full_zps = filter_zero_points(compact), filter_zero_points(full)
    assert all(zps == 1 for _, zps in compact_zps.values())
    assert all(scales == zps for scales, zps in full_zps.values())
    at_most = sum(8 * (scales - 1) for scales, _ in full_zps.values())  # less where filters share a vector
    assert 0 < len(full) - len(compact) <= at_most


def test_stripped_strings_save_flash_and_change_no_output(exports):
    """strip_strings drops every name (the size report shows no tensor-name bytes left) and the
    integer outputs stay the same on the shim and, for a builtin-only model, on TFLM."""
    for model_name, policy in (("signal", "w8a8"), ("image", "w4a4")):
        qmodel, named, x = exports(model_name, policy)
        _, stripped, _ = exports(model_name, policy, strip_strings=True)
        graph = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(stripped, 0)).subgraphs[0]
        assert all(t.name is None for t in graph.tensors) and graph.name is None
        assert size_report(stripped)["names"] < size_report(named)["names"]
        assert len(named) - len(stripped) >= 8 * len(graph.tensors)
        assert read_metadata(stripped) == read_metadata(named)
        assert strip_strings(named) == stripped
        xs = quantize_input(named, x[:50])
        out = Interpreter(model_content=stripped).run(xs)[0]
        np.testing.assert_array_equal(out, Interpreter(model_content=named).run(xs)[0])
        if policy == "w8a8":
            np.testing.assert_array_equal(out, run_tflm(stripped, xs))
        with pytest.raises(ExportError, match="strip_strings"):
            layer_agreement(qmodel, stripped, x[:4])


# ---- metadata, float I/O, command line ----------------------------------------------------------

def test_metadata_records_policy_version_and_grids(exports):
    qmodel, model_bytes, _ = exports("image", "mixed")
    meta = read_metadata(model_bytes)
    assert meta["tfq_tiny_version"] == tfq_tiny.__version__
    policy = BitPolicy.from_config(meta["policy"])
    assert policy == policy_of(qmodel)
    again = tfq_tiny.quantize_model(image_model(), policy, calibration_data=_data((12, 12, 3), 32, 0))
    bits = lambda m: [(s.layer_name, s.kind, s.quantizer.num_bits) for s in tfq_tiny.quantization.quantizer_slots(m)]
    assert bits(again) == bits(qmodel)
    assert [g["name"] for g in meta["inputs"]] == ["image"]
    tagged = to_tflite(qmodel, metadata={"run": "unit test", "seed": 0})
    assert read_metadata(tagged)["user"] == {"run": "unit test", "seed": 0}
    with pytest.raises(ModelFileError, match="no 'tfq_tiny' metadata"):
        read_metadata(_strip_metadata(model_bytes))


def _strip_metadata(model_bytes):
    model = flatbuffer.read_model(model_bytes)
    model.metadata = [m for m in model.metadata if m.name != b"tfq_tiny"]
    return flatbuffer.write_model(model)


def test_float_io_export(exports):
    qmodel, int8_bytes, x = exports("signal", "w8a8")
    float_bytes = to_tflite(qmodel, input_type="float32")
    ops = op_names(float_bytes)
    assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE"
    shim = Interpreter(model_content=float_bytes)
    assert shim.get_input_details()[0]["dtype"] == np.float32
    ours = shim.run(x[:100])[0]
    int8_out = Interpreter(model_content=int8_bytes).run(quantize_input(int8_bytes, x[:100]))[0]
    expected = dequantize_output(int8_bytes, int8_out)
    assert np.array_equal(ours, expected)
    assert np.array_equal(ours, run_tflm(float_bytes, x[:100]))


def test_command_line_export(exports, tmp_path, capsys):
    from absl import app
    from tfq_tiny.export import __main__ as cli

    qmodel, model_bytes, x = exports("image", "w4a4")
    tfq_tiny.save_model(qmodel, str(tmp_path / "q.h5"))
    out = tmp_path / "q.tflite"

    def run(*argv):
        cli.FLAGS.unparse_flags()
        cli.FLAGS(["tfq_tiny.export", *argv])
        try:
            return cli.main([])
        finally:
            cli.FLAGS.unparse_flags()

    assert run("--model", str(tmp_path / "q.h5"), "--output", str(out)) == 0
    printed = capsys.readouterr().out
    assert "TFQ_CONV_2D" in printed and "stored packed" in printed and "bytes: weights" in printed
    xs = quantize_input(model_bytes, x[:50])
    assert np.array_equal(Interpreter(model_path=str(out)).run(xs)[0],
                          Interpreter(model_content=model_bytes).run(xs)[0])
    assert "TFLM arena head" in printed
    named = tmp_path / "named.tflite"
    assert run("--model", str(tmp_path / "q.h5"), "--output", str(named), "--nostrip_strings",
               "--device_sources", str(tmp_path / "firmware")) == 0
    assert sorted(os.listdir(tmp_path / "firmware")) == ["named_model_data.cc", "named_model_data.h",
                                                         "named_ops.h"]
    assert "resolver->AddCustom(tfq_tflm::kConv2DName" in (tmp_path / "firmware" / "named_ops.h").read_text()
    assert out.stat().st_size < named.stat().st_size == len(model_bytes)
    with pytest.raises(app.UsageError):
        run("--model", str(tmp_path / "none.h5"), "--output", str(out))
    tfq_tiny.save_model(tfq_tiny.quantize_model(signal_model(), "w4a32"), str(tmp_path / "w.h5"))
    with pytest.raises(TfqError, match="float tensor"):   # tfq_tiny.cli.run prints it, exits 2
        run("--model", str(tmp_path / "w.h5"), "--output", str(tmp_path / "w.tflite"))


# ---- (f) bad input --------------------------------------------------------------------------------

def test_unsupported_bit_widths_are_named():
    qmodel = tfq_tiny.quantize_model(signal_model(), BitPolicy.uniform(8, 8).with_override("c2", weight_bits=3),
                                     calibration_data=_data((24, 3), 32, 0))
    with pytest.raises(BitWidthError, match=r"layer 'c2'.*weight 3 bits.*\[2, 4, 8\]"):
        to_tflite(qmodel)
    qmodel = tfq_tiny.quantize_model(image_model(), BitPolicy.uniform(4, 4).with_override("r3", activation_bits=6),
                                     calibration_data=_data((12, 12, 3), 32, 0))
    with pytest.raises(BitWidthError, match=r"layer 'r3'.*activation 6 bits"):
        to_tflite(qmodel)


def test_unexportable_models_raise_export_errors(exports):
    weights_only = tfq_tiny.quantize_model(signal_model(), "w4a32")
    with pytest.raises(ExportError, match="float tensor.*activations"):
        to_tflite(weights_only)
    with pytest.raises(ExportError, match="softmax.*8-bit"):
        to_tflite(tfq_tiny.quantize_model(signal_model(), BitPolicy.uniform(8, 4, output_bits=4),
                                          calibration_data=_data((24, 3), 32, 0)))
    qmodel, _, _ = exports("image", "w4a4")
    with pytest.raises(ExportError, match="float input can only feed an 8-bit"):
        to_tflite(qmodel, input_type="float32")
    for kwargs in ({"input_type": "uint8"}, {"int2_type": "UINT8"}, {"dense_int4": "matmul"}):
        with pytest.raises(ExportError):
            to_tflite(qmodel, **kwargs)
    keras.utils.set_random_seed(0)
    i = keras.Input((16, 2))
    float_model = keras.Model(i, L.Dense(2)(L.Flatten()(L.Conv1D(3, 3, padding="causal")(i))))
    with pytest.raises(ExportError, match="no quantizers"):
        to_tflite(float_model)


def _with_custom_options(model_bytes, code, options_bytes):
    model = flatbuffer.read_model(model_bytes)
    for op in model.subgraphs[0].operators:
        if model.operatorCodes[op.opcodeIndex].customCode == code.encode():
            op.customOptions = None if options_bytes is None else np.frombuffer(options_bytes, np.uint8)
            break
    return flatbuffer.write_model(model)


C1_SHAPES = {"input_shape": [1, 12, 12, 3], "output_shape": [1, 12, 12, 8]}  # image W4A4, first conv
C1_FIELDS = [4, 4, 4, -8, 7, 1, 1, 1, 0, 0, 1, 1, 1, 4]  # custom_ops.OPTION_FIELDS, padding SAME


def _vector(values):
    builder = flexbuffers.Builder()
    builder.TypedVectorFromElements(values)
    return bytes(builder.Finish())


@pytest.mark.parametrize("options,match", [
    (None, "custom options are missing"),
    (b"\x01\x02", "flexbuffer"),
    (bytes(flexbuffers.Dumps("SAME")), "must be a flexbuffer vector of integers"),
    (_vector(C1_FIELDS[:5] + [4]), "'padding' must be"),
    (bytes(flexbuffers.Dumps([4, "4"])), "'weight_bits' must be an integer"),
    (_vector([4, 3]), "weight_bits"),
    (_vector(C1_FIELDS + [5, 1, 1, 12, 12, 3]), "element 14 must be a rank from 0 to 4"),
    (_vector(C1_FIELDS + [4, 1, 12, 12, 3, 4, 1, 12]), "element 19 must be a rank"),
    (_vector(C1_FIELDS + [4, 1, 12, 0, 3, 0, 4, 1, 12, 12, 8]), "'input_shape' must be a vector"),
    (_vector(C1_FIELDS[:3] + [-9, 7] + C1_FIELDS[5:] + [4, 1, 12, 12, 3, 0, 4, 1, 12, 12, 8]), "act_min/act_max"),
    (bytes(flexbuffers.Dumps({"padding": "FULL", "input_bits": 4})), "padding"),
    (bytes(flexbuffers.Dumps({"padding": "SAME", "stride_h": "2"})), "'stride_h' must be an integer"),
    (bytes(flexbuffers.Dumps({"padding": "SAME", "weight_bits": 3})), "weight_bits"),
    (bytes(flexbuffers.Dumps({"padding": "SAME", "input_bits": 4, "weight_bits": 4, "output_bits": 4,
                              "act_min": -9, **C1_SHAPES})), "act_min/act_max"),
    (bytes(flexbuffers.Dumps({"padding": "SAME", "input_bits": 4, "weight_bits": 4, "output_bits": 4,
                              "input_shape": [1, 12, "12", 3]})), "'input_shape' must be a vector"),
    (bytes(flexbuffers.Dumps({"padding": "SAME", "input_bits": 4, "weight_bits": 4, "output_bits": 4,
                              **dict(C1_SHAPES, input_shape=[1, 24, 12, 3])})), "holds 216 bytes"),
    (bytes(flexbuffers.Dumps({"padding": "SAME", "input_bits": 4, "weight_bits": 4, "output_bits": 4})),
     "4-D"),  # without its logical shapes, the [1, 216] packed input is not an image
])
def test_bad_custom_options_fail_at_load(exports, options, match):
    _, model_bytes, _ = exports("image", "w4a4")
    with pytest.raises(ModelFileError, match=r"operator #\d+ \(CUSTOM 'TFQ_CONV_2D'\).*" + match):
        Interpreter(model_content=_with_custom_options(model_bytes, "TFQ_CONV_2D", options))


def test_explicit_padding_that_does_not_fit_fails_at_load(exports):
    """A SAME 3x3 convolution relabelled EXPLICIT with no zeros before would need two after:
    refused at load, naming the operator, on both kernel sets."""
    _, model_bytes, _ = exports("image", "w4a4")
    model = flatbuffer.read_model(model_bytes)
    op = next(op for op in model.subgraphs[0].operators
              if model.operatorCodes[op.opcodeIndex].customCode == b"TFQ_CONV_2D")
    options = custom_ops.decode_options(bytes(np.asarray(op.customOptions, np.uint8)))
    assert options["padding"] == "SAME"
    bad = custom_ops.encode_options({**options, "padding": "EXPLICIT", "pad_h": 0, "pad_w": 0})
    for kernels in ("numpy", "native"):
        with pytest.raises(ModelFileError, match=r"TFQ_CONV_2D.*explicit padding"):
            Interpreter(model_content=_with_custom_options(model_bytes, "TFQ_CONV_2D", bad),
                        kernels=kernels)


def test_custom_options_are_an_int_vector_and_layout_2_maps_still_run(exports):
    """Layouts 3 and 4 write each TFQ operator's options as a flexbuffer int vector; the same options as
    a layout-2 map (older exports) give the same outputs on both kernel sets."""
    _, model_bytes, x = exports("image", "mixed")
    assert read_metadata(model_bytes)["layout_version"] == 4
    model = flatbuffer.read_model(model_bytes)
    custom = [op for op in model.subgraphs[0].operators if op.customOptions is not None]
    assert len(custom) >= 5
    for op in custom:
        raw = bytes(np.asarray(op.customOptions, np.uint8))
        assert flexbuffers.GetRoot(bytearray(raw)).IsTypedVector and len(raw) <= 40
        options = custom_ops.decode_options(raw)
        assert custom_ops.decode_options(custom_ops.encode_options(options)) == options
        op.customOptions = np.frombuffer(bytes(flexbuffers.Dumps(options)), np.uint8)
    as_maps = flatbuffer.write_model(model)
    xs = quantize_input(model_bytes, x[:50])
    for kernels in ("numpy", "native"):
        assert np.array_equal(Interpreter(model_content=as_maps, kernels=kernels).run(xs)[0],
                              Interpreter(model_content=model_bytes, kernels=kernels).run(xs)[0])


def test_truncated_and_corrupted_exports_fail_cleanly(exports):
    _, model_bytes, _ = exports("image", "w4a4")
    rejected = 0
    for cut in (0, 7, 8, 64, len(model_bytes) // 3, len(model_bytes) // 2, len(model_bytes) - 100):
        with pytest.raises(TfqError):
            Interpreter(model_content=model_bytes[:cut])
        rejected += 1
    with pytest.raises(ModelFileError):
        read_metadata(model_bytes[:100])
    model = flatbuffer.read_model(model_bytes)
    graph = model.subgraphs[0]
    kernel = next(t for t in graph.tensors if t.name == b"pw/kernel")
    kernel.shape = np.asarray([8, 1, 1, 7], np.int32)
    with pytest.raises(ModelFileError):
        Interpreter(model_content=flatbuffer.write_model(model))
    assert rejected == 7


def test_packed_int8_constants_are_refused_by_builtins(exports):
    """An INT8 constant holding packed 2/4-bit bytes is only for TFQ_* operators."""
    _, model_bytes, _ = exports("signal", "w8a8")
    model = flatbuffer.read_model(model_bytes)
    graph = model.subgraphs[0]
    kernel = next(t for t in graph.tensors if t.name == b"c1/kernel")
    values = np.clip(np.asarray(model.buffers[kernel.buffer].data, np.uint8).view(np.int8) // 16, -8, 7)
    model.buffers[kernel.buffer].data = packing.pack(values, 4)
    with pytest.raises(ModelFileError, match="packed sub-byte values.*TFQ_"):
        Interpreter(model_content=flatbuffer.write_model(model))


def test_fixed_grid_ranges_give_the_grids_tflm_writes():
    """The simulation's real output ranges of softmax/sigmoid/tanh (configs) and the converter's
    (scale, zero point) of TFLM's SOFTMAX/LOGISTIC/TANH describe the same grids at 8 bits."""
    from tfq_tiny.export.converter import FIXED_GRIDS
    from tfq_tiny.quantization.configs import FIXED_GRID_RANGES
    from tfq_tiny.quantization.range_init import asymmetric_qparams

    assert set(FIXED_GRIDS) == set(FIXED_GRID_RANGES)
    for function, (_, scale, zero_point) in FIXED_GRIDS.items():
        got_scale, got_zero_point = asymmetric_qparams(*FIXED_GRID_RANGES[function], 8)
        assert np.float32(got_scale) == np.float32(scale), function
        assert int(got_zero_point) == zero_point, function


def _assert_exact_everywhere(qmodel, model_bytes, x, with_tflm):
    """Every deployed layer equals the simulation, the NumPy and C++ kernels give the same
    outputs and, ``with_tflm`` (an export of TFLM builtins only), so does the pip TFLM
    interpreter. Returns the layer agreement report."""
    report = layer_agreement(qmodel, model_bytes, x)
    assert all(r["exact"] == 1.0 for r in report.values()), report
    xs = quantize_input(model_bytes, x)
    ours = Interpreter(model_content=model_bytes).run(xs)[0]
    assert np.array_equal(ours, Interpreter(model_content=model_bytes, kernels="native").run(xs)[0])
    if with_tflm:
        assert np.array_equal(ours, np.asarray(run_tflm(model_bytes, xs)).reshape(ours.shape))
    return report


def _tcn(seed=0):
    """A small temporal convolutional network: causal Conv1D layers with dilations 1/2/4,
    kernels 3 and 2, a residual Add and a strided causal layer."""
    keras.utils.set_random_seed(seed)
    x = inp = L.Input((50, 6))
    x = L.Conv1D(12, 3, padding="causal", activation="relu", name="c1")(x)
    y = L.Conv1D(12, 3, padding="causal", dilation_rate=2, activation="relu", name="c2")(x)
    y = L.Conv1D(12, 2, padding="causal", dilation_rate=4, name="c3")(y)
    x = L.ReLU(name="r")(L.Add(name="add")([x, y]))
    x = L.Conv1D(16, 3, strides=2, padding="causal", activation="relu", name="c4")(x)
    x = L.Conv1D(16, 3, padding="same", activation="relu", name="c5")(x)
    x = L.Dense(5, name="logits")(L.GlobalAveragePooling1D(name="gap")(x))
    model = keras.Model(inp, x)
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([w + 0.05 * rng.randn(*w.shape) for w in layer.get_weights()])
    return model


@pytest.mark.parametrize("policy,causal_int8", [("w8a8", "pad"), ("w8a8", "custom"),
                                                 ("w4a4", "pad")])
def test_causal_conv1d_deploys_with_explicit_padding(policy, causal_int8):
    """TFLite has no causal padding (TF lowers it to PAD + SPACE_TO_BATCH around the conv). With
    8-bit tensors a causal Conv1D deploys as TFLM builtins PAD + VALID CONV_2D (the default,
    stock TFLM runs it: checked against the real interpreter) or, with causal_int8="custom", as
    TFQ_CONV_2D with EXPLICIT padding, (k - 1) * dilation zeros before the time axis and none
    after; below 8 bits always the latter. Every layer equals the simulation, and the NumPy
    and C++ kernels agree on every output."""
    model = _tcn()
    rng = np.random.RandomState(1)
    calib, x = rng.randn(128, 50, 6).astype(np.float32), rng.randn(24, 50, 6).astype(np.float32)
    qmodel = tfq_tiny.quantize_model(model, policy, calibration_data=calib)
    model_bytes = to_tflite(qmodel, causal_int8=causal_int8)
    fb_model = flatbuffer.read_model(model_bytes)
    graph = fb_model.subgraphs[0]
    ops = {}
    for op in graph.operators:
        code = fb_model.operatorCodes[op.opcodeIndex]
        options = (custom_ops.decode_options(bytes(np.asarray(op.customOptions, np.uint8)))
                   if code.customCode else op.builtinOptions)
        ops[graph.tensors[op.outputs[0]].name.decode().split("/")[0]] = (code, options)
    pads = sum(code.builtinCode == fb.BuiltinOperator.PAD for code, _ in ops.values())
    builtin = policy == "w8a8" and causal_int8 == "pad"
    for name, taps in (("c1", 2), ("c2", 4), ("c3", 4), ("c4", 2)):
        code, options = ops[name]
        if builtin:
            assert code.builtinCode == fb.BuiltinOperator.CONV_2D, name
            assert options.padding == fb.Padding.VALID
        else:
            assert code.customCode == b"TFQ_CONV_2D", name
            assert options["padding"] == "EXPLICIT" and options["pad_w"] == taps, (name, options)
            assert options.get("pad_h", 0) == 0
    assert pads == (4 if builtin else 0)
    assert (ops["c5"][0].customCode is None) == (policy == "w8a8")
    _assert_exact_everywhere(qmodel, model_bytes, x, with_tflm=builtin)


def test_explicit_padding_is_checked_like_the_glue():
    """The shim's rule for EXPLICIT padding is the core's CheckSpatial: pad before below the
    effective filter size and at most as many after (or SAME's pad / pad + 1)."""
    from tfq_tiny.runtime import kernels

    fits = kernels.explicit_padding_fits
    assert fits(50, 3, 1, 2, 4, 50)          # causal: 4 before, none after
    assert fits(50, 3, 2, 1, 2, 25)          # strided causal
    assert fits(50, 3, 1, 1, 1, 50)          # SAME
    assert not fits(50, 3, 1, 1, 0, 50)      # 0 before would need 2 after
    assert not fits(50, 3, 1, 1, 5, 53)      # more than the filter reaches
    assert not fits(50, 3, 1, 1, -1, 47)


@pytest.mark.parametrize("policy", ["w8a8", "w4a4", "w2a2"])
def test_leaky_relu_deploys_as_leaky_relu_at_every_width(policy):
    """LeakyReLU and ReLU(negative_slope) deploy as TFLM's int8 LEAKY_RELU, and below 8 bits as
    TFQ_LEAKY_RELU (the same arithmetic on packed tensors): the simulation rounds as the kernel
    does (identity / alpha multipliers from float32 scale ratios), so every layer is exact, the
    NumPy and C++ kernels agree, and the W8A8 export equals the real TFLM interpreter."""
    keras.utils.set_random_seed(0)
    x = inp = L.Input((12, 12, 3))
    x = L.LeakyReLU(0.1, name="lr1")(L.Conv2D(8, 3, padding="same", name="c1")(x))
    x = L.ReLU(negative_slope=0.2, name="lr2")(L.DepthwiseConv2D(3, padding="same", name="dw")(x))
    x = L.Conv2D(8, 1, activation="relu", name="pw")(x)
    model = keras.Model(inp, L.Dense(4, name="logits")(L.GlobalAveragePooling2D(name="gap")(x)))
    rng = np.random.RandomState(0)
    calib, x = rng.randn(64, 12, 12, 3).astype(np.float32), rng.randn(32, 12, 12, 3).astype(np.float32)
    qmodel = tfq_tiny.quantize_model(model, policy, calibration_data=calib)
    model_bytes = to_tflite(qmodel)
    fb_model = flatbuffer.read_model(model_bytes)
    codes = [fb_model.operatorCodes[op.opcodeIndex] for op in fb_model.subgraphs[0].operators]
    if policy == "w8a8":
        assert sum(c.builtinCode == fb.BuiltinOperator.LEAKY_RELU for c in codes) == 2
    else:
        assert sum(c.customCode == b"TFQ_LEAKY_RELU" for c in codes) == 2
        bits = int(policy[1])
        assert [policy_of(qmodel).activation_bits_for(n) for n in ("lr1", "lr2")] == [bits, bits]
    _assert_exact_everywhere(qmodel, model_bytes, x, with_tflm=policy == "w8a8")


_TFLITE_TYPE = {fb.TensorType.FLOAT32: 1, fb.TensorType.INT32: 2, fb.TensorType.UINT8: 3,
                fb.TensorType.INT16: 7, fb.TensorType.INT8: 9, fb.TensorType.INT4: 18,
                fb.TensorType.INT2: 20}
"""Schema TensorType -> TfLiteType (tflm/api_stubs common.h)."""


def _glue_cases(model_bytes, x):
    """(custom code, glue_run stdin, the shim's output bytes) of every TFQ operator of
    ``model_bytes`` after the shim ran ``x`` (activations from the shim, constants from the
    flatbuffer's buffers, quantization from its tensors)."""
    model = flatbuffer.read_model(model_bytes)
    graph = model.subgraphs[0]
    shim = Interpreter(model_content=model_bytes)
    shim.run(x)
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex].customCode
        if not code:
            continue
        ins, outs = [int(i) for i in op.inputs], [int(i) for i in op.outputs]
        local = {t: k for k, t in enumerate(dict.fromkeys(t for t in ins + outs if t >= 0))}
        words = [code.decode(), bytes(np.asarray(op.customOptions, np.uint8)).hex() or "-",
                 str(len(local))]
        for t in local:
            tensor = graph.tensors[t]
            q = tensor.quantization
            scales = [] if q is None or q.scale is None else [repr(float(s)) for s in q.scale]
            zps = [] if q is None or q.zeroPoint is None else [str(int(z)) for z in q.zeroPoint]
            buffer = model.buffers[tensor.buffer].data if tensor.buffer else None
            if buffer is not None and len(buffer):
                data = bytes(np.asarray(buffer, np.uint8))
            else:
                value = shim.get_tensor(t)
                data = bytes(value.nbytes) if t in outs else value.tobytes()
            words += [str(_TFLITE_TYPE[tensor.type]), str(len(tensor.shape)),
                      *map(str, tensor.shape), str(len(scales)), *scales, str(len(zps)), *zps,
                      data.hex() or "-"]
        words += [str(len(ins)), *(str(local.get(t, -1)) for t in ins),
                  str(len(outs)), *(str(local[t]) for t in outs)]
        yield code.decode(), " ".join(words), shim.get_tensor(outs[0]).tobytes()


def test_tflm_glue_runs_every_tfq_operator_as_the_shim(exports):
    """The glue's Init/Prepare/Invoke (tflm/tfq_ops.cc), built under ASan + UBSan against a host
    stand-in of the TFLM API (tests/glue_run.cc), on every TFQ operator of the image model
    (W4A4, W2A2, mixed), a causal TCN (EXPLICIT padding) and a W4A4/W2A2 LeakyReLU model, fed
    the shim's own inputs: the same output bytes as the shim, every operator kind covered.
    Not a real TFLM (no allocator, planner or TFLM struct layouts)."""
    import subprocess

    make = subprocess.run(["make", "-C", os.path.join(os.path.dirname(__file__), "..", "tflm_ext"),
                           "-j2", "glue-run"], capture_output=True, text=True, timeout=1800)
    assert make.returncode == 0, make.stdout[-3000:] + make.stderr[-3000:]
    driver = os.path.join(os.path.dirname(__file__), "..", "tflm_ext", "build", "glue_run")
    rng = np.random.RandomState(3)
    models = [exports("image", p)[1:] for p in ("w4a4", "w2a2", "mixed")]
    tcn = tfq_tiny.quantize_model(_tcn(), "w4a4", calibration_data=rng.randn(64, 50, 6).astype(np.float32))
    models.append((to_tflite(tcn), rng.randn(1, 50, 6).astype(np.float32)))
    i = L.Input((8, 8, 3))
    leaky = keras.Model(i, L.LeakyReLU(0.2)(L.Conv2D(6, 3, padding="same")(i)))
    for policy in ("w4a4", "w2a2"):
        q = tfq_tiny.quantize_model(leaky, policy, calibration_data=rng.randn(32, 8, 8, 3).astype(np.float32))
        models.append((to_tflite(q), rng.randn(1, 8, 8, 3).astype(np.float32)))
    seen = set()
    for model_bytes, x in models:
        for code, stdin, expected in _glue_cases(model_bytes, quantize_input(model_bytes, x[:1])):
            run = subprocess.run([driver], input=stdin, capture_output=True, text=True, timeout=60)
            assert run.returncode == 0 and "runtime error" not in run.stderr, run.stderr[-3000:]
            assert run.stdout.split() == ["ok", expected.hex()], (code, run.stdout, run.stderr)
            seen.add(code)
    assert seen == set(custom_ops.CUSTOM_CODES)


def _ds_cnn_1d():
    """A 1-D depthwise-separable KWS-style network: Conv1D/BN/ReLU, DepthwiseConv1D/BN/ReLU +
    pointwise, a SeparableConv1D with depth multiplier 2, a dilated DepthwiseConv1D (ReLU6)."""
    keras.utils.set_random_seed(0)
    x = inp = L.Input((49, 10))
    x = L.ReLU(name="r0")(L.BatchNormalization(name="bn0")(L.Conv1D(16, 5, strides=2, padding="same", name="c0")(x)))
    y = L.ReLU(name="r1")(L.BatchNormalization(name="bn1")(L.DepthwiseConv1D(3, padding="same", name="dw1")(x)))
    y = L.ReLU(name="r2")(L.BatchNormalization(name="bn2")(L.Conv1D(16, 1, name="pw1")(y)))
    y = L.SeparableConv1D(16, 3, padding="same", depth_multiplier=2, activation="relu", name="sep")(y)
    y = L.DepthwiseConv1D(3, dilation_rate=2, padding="same", activation="relu6", name="dw2")(y)
    model = keras.Model(inp, L.Dense(12, name="logits")(L.GlobalAveragePooling1D(name="gap")(y)))
    return _randomize_bn(model, 2)


@pytest.mark.parametrize("policy", ["w8a8", "w4a4"])
def test_depthwise_conv1d_and_separable_conv1d_deploy(policy):
    """DepthwiseConv1D and SeparableConv1D (split into DepthwiseConv1D + 1x1 Conv1D) quantize
    and deploy as DEPTHWISE_CONV_2D over [N, 1, T, C]: BN fold and CLE keep the float outputs,
    every layer equals the simulation, NumPy == C++ kernels, and W8A8 equals the real TFLM."""
    from tfq_tiny.analysis import model_statistics
    from tfq_tiny.preprocess import preprocess

    model = _ds_cnn_1d()
    macs = {o.name: o.macs for o in model_statistics(model).ops}
    # output elements x window: 25 steps x 16 (x2 for the multiplier) x 3 taps; pointwise 25x16x32
    assert [macs[n] for n in ("dw1", "sep_depthwise", "sep_pointwise", "dw2")] == \
        [1200, 2400, 12800, 1200]
    rng = np.random.RandomState(0)
    calib, x = rng.randn(128, 49, 10).astype(np.float32), rng.randn(16, 49, 10).astype(np.float32)
    np.testing.assert_allclose(preprocess(model, ("bn_fold", "cle")).predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
    qmodel = tfq_tiny.quantize_model(model, policy, calibration_data=calib)
    model_bytes = to_tflite(qmodel)
    report = _assert_exact_everywhere(qmodel, model_bytes, x, with_tflm=policy == "w8a8")
    assert {"dw1", "sep_depthwise", "sep_pointwise", "dw2"} <= set(report)


def test_causal_separable_conv1d_is_refused_by_name():
    i = L.Input((20, 4))
    model = keras.Model(i, L.SeparableConv1D(4, 3, padding="causal", name="csep")(i))
    with pytest.raises(TfqError, match="csep.*causal"):
        tfq_tiny.quantize_model(model, "w8a8", calibration_data=np.zeros((4, 20, 4), np.float32))
