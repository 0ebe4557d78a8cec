"""The NumPy reference runtime against LiteRT's reference kernels and the real TFLM interpreter.

Each model is a small tf_keras model converted with full-integer int8 quantization; every
output is compared element for element. Known difference (asserted, not hidden): LiteRT's
FULLY_CONNECTED (per-channel and per-tensor) rounds once (TFLITE_SINGLE_ROUNDING-style) where
TFLM rounds twice, so Dense outputs may differ from LiteRT by one step (a few values in a
thousand); TFLM and the shim agree exactly everywhere.
"""
import functools

import numpy as np
import pytest

from tfq_tiny._compat import keras, tf
from tfq_tiny.errors import ModelFileError, TfqError
from tfq_tiny.export import flatbuffer
from tfq_tiny.runtime import arithmetic as ar
from tfq_tiny.runtime import kernels, tflm
from tfq_tiny.runtime.interpreter import Interpreter, register_custom_op, unregister_custom_op

tflite_micro = pytest.importorskip("tflite_micro")


def convert(model, float_io=False, seed=0, samples=16, draw=None):
    rng = np.random.default_rng(seed)
    shape = (1,) + tuple(model.input_shape[1:])
    draw = draw or (lambda rng, shape: rng.normal(size=shape))

    def representative():
        for _ in range(samples):
            yield [draw(rng, shape).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def build(layers_fn, input_shape, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_shape, batch_size=1)
    return keras.Model(inp, layers_fn(inp))


def random_inputs(details, n, seed=1):
    rng = np.random.default_rng(seed)
    shape = (n,) + tuple(details["shape"][1:])
    if details["dtype"] == np.float32:
        return rng.normal(size=shape).astype(np.float32) * 2
    return rng.integers(-128, 128, size=shape, dtype=np.int8)


run_litert = functools.partial(tflm.run_litert, all_outputs=True)
run_tflm = functools.partial(tflm.run_tflm, all_outputs=True)


def assert_identical(actual, expected, what):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype and a.shape == e.shape, what
        diff = np.flatnonzero(a.reshape(-1) != e.reshape(-1))
        assert diff.size == 0, f"{what}: {diff.size} of {a.size} values differ, first at {diff[0]}"


def check_model(model_bytes, n=200, litert_max_step=0):
    """Shim vs TFLM (exact) and vs LiteRT (exact unless ``litert_max_step`` allows +-1)."""
    shim = Interpreter(model_content=model_bytes)
    xs = random_inputs(shim.get_input_details()[0], n)
    ours = shim.run(xs)
    assert_identical(ours, run_tflm(model_bytes, xs), "shim vs TFLM")
    lite = run_litert(model_bytes, xs)
    if litert_max_step == 0:
        assert_identical(ours, lite, "shim vs LiteRT")
    else:
        for a, e in zip(ours, lite):
            assert np.abs(a.astype(np.int32) - e.astype(np.int32)).max() <= litert_max_step
    return shim, ours


def ops_of(model_bytes):
    return [name for _, name in Interpreter(model_content=model_bytes).operators]


L = keras.layers


def test_conv_same_stride2_relu_and_valid_dilated():
    model = build(lambda x: L.Conv2D(5, (3, 2), strides=(2, 1), dilation_rate=1, padding="valid",
                                     activation="relu6")(
        L.Conv2D(6, 3, strides=2, padding="same", activation="relu")(
            L.Conv2D(4, 3, dilation_rate=2, padding="same")(x))), (12, 11, 3))
    model_bytes = convert(model)
    assert ops_of(model_bytes) == ["CONV_2D"] * 3
    check_model(model_bytes, n=300)


def test_depthwise_with_depth_multiplier_stride_and_dilation():
    model = build(lambda x: L.DepthwiseConv2D(3, dilation_rate=2, padding="valid", activation="relu")(
        L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same")(x)), (13, 12, 3))
    model_bytes = convert(model)
    assert ops_of(model_bytes) == ["DEPTHWISE_CONV_2D"] * 2
    check_model(model_bytes, n=300)


def test_add_of_two_branches():
    def branches(x):
        a = L.Conv2D(4, 3, padding="same")(x)
        b = L.Conv2D(4, 1, activation="relu")(x)
        return L.Activation("relu")(L.Add()([a, b]))
    model_bytes = convert(build(branches, (8, 8, 3)))
    assert "ADD" in ops_of(model_bytes)
    check_model(model_bytes, n=300)


def test_average_and_max_pooling_same_and_valid():
    model = build(lambda x: L.AveragePooling2D(3, strides=1, padding="same")(
        L.MaxPooling2D(3, strides=2, padding="same")(
            L.AveragePooling2D(2)(L.Conv2D(4, 3, padding="same")(x)))), (12, 10, 3))
    model_bytes = convert(model)
    assert ops_of(model_bytes) == ["CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"]
    check_model(model_bytes, n=300)


def test_global_average_pooling_flatten_dense_softmax():
    def head(x):
        y = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
        g = L.GlobalAveragePooling2D()(y)
        f = L.Dense(6)(L.Flatten()(L.MaxPooling2D(2)(y)))
        return L.Softmax()(L.Dense(5)(L.Add()([L.Dense(6)(g), f])))
    model_bytes = convert(build(head, (8, 8, 3)))
    ops = ops_of(model_bytes)
    assert {"MEAN", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"} <= set(ops)
    check_model(model_bytes, n=300, litert_max_step=1)


@pytest.mark.parametrize("function,builtin", [("sigmoid", "LOGISTIC"), ("tanh", "TANH")])
def test_logistic_and_tanh_match_tflm_on_every_int8_input(function, builtin):
    """gemmlowp's fixed-point logistic/tanh: every one of the 256 int8 inputs, for input
    scales from 1e-5 (all values near 0) to 5 (all saturated) and a non-zero zero point.
    Within one output step of the real function, except at scale 5, where TFLM's saturation
    radius (rounded down to whole input steps) already saturates x = -5.1."""
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    for reach in (0.003, 0.3, 3, 30, 1000):
        model_bytes = convert(build(lambda i: L.Activation(function)(i), (256,)),
                              draw=lambda rng, shape: rng.uniform(-0.3 * reach, reach, shape))
        assert ops_of(model_bytes) == [builtin]
        shim = Interpreter(model_content=model_bytes)
        assert shim.get_input_details()[0]["quantization"][1] != 0
        ours = shim.run(x)[0]
        assert np.array_equal(ours, run_tflm(model_bytes, x)[0]), (function, reach)
        (in_scale, in_zp), = [shim.get_input_details()[0]["quantization"]]
        (out_scale, out_zp), = [shim.get_output_details()[0]["quantization"]]
        real = in_scale * (x.astype(np.float64) - in_zp)
        exact = np.tanh(real) if function == "tanh" else 1 / (1 + np.exp(-real))
        if reach < 1000:
            assert np.abs((ours.astype(np.int64) - out_zp) * out_scale - exact).max() <= out_scale * 1.001
    assert ours.min() == -128 and ours.max() == 127


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.3, 0.75])
def test_leaky_relu_matches_tflm_on_every_int8_input(alpha):
    """TFLM's LEAKY_RELU (identity and alpha multipliers from float32 scale ratios): every one of
    the 256 int8 inputs, for input ranges from 0.003 to 1000 and several slopes; within one
    output step of the real function."""
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    for reach in (0.003, 0.3, 3, 1000):
        model_bytes = convert(build(lambda i: L.LeakyReLU(alpha)(i), (256,)),
                              draw=lambda rng, shape: rng.uniform(-0.7 * reach, reach, shape))
        assert ops_of(model_bytes) == ["LEAKY_RELU"]
        shim = Interpreter(model_content=model_bytes)
        ours = shim.run(x)[0]
        assert np.array_equal(ours, run_tflm(model_bytes, x)[0]), (alpha, reach)
        (in_scale, in_zp), = [shim.get_input_details()[0]["quantization"]]
        (out_scale, out_zp), = [shim.get_output_details()[0]["quantization"]]
        real = in_scale * (x.astype(np.float64) - in_zp)
        exact = np.clip(np.where(real >= 0, real, alpha * real),
                        (-128 - out_zp) * out_scale, (127 - out_zp) * out_scale)
        assert np.abs((ours.astype(np.int64) - out_zp) * out_scale - exact).max() <= out_scale * 1.001


def test_concatenation_of_branches_on_several_axes():
    """TF gives the CONCATENATION inputs the output's grid (requantizing where a branch had its
    own); the shim copies as TFLM does."""
    def net(x):
        a = L.Conv2D(4, 3, padding="same", activation="relu")(x)
        b = L.Conv2D(6, 1)(x)
        c = L.Concatenate()([a, b, L.AveragePooling2D(1)(x)])
        d = L.Concatenate(axis=1)([c, L.Conv2D(13, 3, padding="same")(x)])
        return L.Dense(5)(L.Flatten()(d))
    model_bytes = convert(build(net, (6, 6, 3)))
    assert ops_of(model_bytes).count("CONCATENATION") == 2
    check_model(model_bytes, n=100)
    from tfq_tiny.export.arena import plan_arena
    from tfq_tiny.search.memory import tflm_arena_usage
    assert plan_arena(model_bytes)["head"] == tflm_arena_usage(model_bytes)["head"]


def test_conv1d_model():
    def net(x):
        y = L.Conv1D(8, 5, strides=2, padding="same", activation="relu")(x)
        y = L.MaxPooling1D(2)(y)
        y = L.Conv1D(4, 3, dilation_rate=2)(y)
        return L.Dense(6)(L.GlobalAveragePooling1D()(y))
    model_bytes = convert(build(net, (32, 3)))
    ops = ops_of(model_bytes)
    assert "CONV_2D" in ops and ({"RESHAPE", "EXPAND_DIMS", "SQUEEZE"} & set(ops))
    check_model(model_bytes, n=300, litert_max_step=1)


def test_float_io_quantize_and_dequantize():
    model = build(lambda x: L.AveragePooling2D(2)(L.Conv2D(3, 3)(x)), (6, 6, 2))
    model_bytes = convert(model, float_io=True)
    ops = ops_of(model_bytes)
    assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE"
    check_model(model_bytes, n=200)


def test_tflm_over_1000_inputs_and_every_intermediate_tensor():
    model = build(lambda x: L.Softmax()(L.Reshape((-1,))(L.AveragePooling2D(2)(
        L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu")(x)))), (4, 4, 2))
    model_bytes = convert(model)
    shim = Interpreter(model_content=model_bytes)
    xs = random_inputs(shim.get_input_details()[0], 1200, seed=7)
    assert_identical(shim.run(xs), run_tflm(model_bytes, xs), "shim vs TFLM, 1200 inputs")
    for t in shim.tensors:
        assert shim.get_tensor(t["index"]).shape == t["shape"]


def test_tflm_build_uses_double_rounding():
    model_bytes = convert(build(lambda x: L.Conv2D(8, 3, padding="same")(x), (8, 8, 4)))
    shim = Interpreter(model_content=model_bytes)
    xs = random_inputs(shim.get_input_details()[0], 100, seed=3)
    tflm = run_tflm(model_bytes, xs)
    assert ar.ROUNDING == "double"
    assert_identical(shim.run(xs), tflm, "double rounding")
    ar.ROUNDING = "single"
    try:
        single = Interpreter(model_content=model_bytes).run(xs)
    finally:
        ar.ROUNDING = "double"
    assert not np.array_equal(single[0], tflm[0]), "the inputs do not tell the two roundings apart"


def _clip_filters_to(model_bytes, bits, op_names=("CONV_2D", "DEPTHWISE_CONV_2D")):
    model = flatbuffer.read_model(model_bytes)
    graph = model.subgraphs[0]
    names = {v: k for k, v in vars(flatbuffer.schema_fb.BuiltinOperator).items() if not k.startswith("_")}
    filters = []
    for op in graph.operators:
        if names[model.operatorCodes[op.opcodeIndex].builtinCode] in op_names:
            filters.append(op.inputs[1])
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    for index in filters:
        buf = model.buffers[graph.tensors[index].buffer]
        values = np.asarray(buf.data, np.uint8).view(np.int8)
        buf.data = np.clip(np.round(values.astype(np.float64) / (128 >> (8 - bits) if bits < 8 else 1)), lo, hi
                           ).astype(np.int8).view(np.uint8)
    return model, filters


def test_int4_filters_match_tflm_and_the_same_model_stored_as_int8():
    model_bytes = convert(build(lambda x: L.Conv2D(4, 3, padding="same", activation="relu")(
        L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same")(x)), (9, 9, 3)))
    clipped, filters = _clip_filters_to(model_bytes, 4)
    as_int8 = flatbuffer.write_model(clipped)
    for index in filters:
        flatbuffer.retype_constant_tensor(clipped, index, 4)
    as_int4 = flatbuffer.write_model(clipped)
    assert len(as_int4) < len(as_int8)
    shim4 = Interpreter(model_content=as_int4)
    assert [shim4.tensors[i]["type"] for i in filters] == ["INT4", "INT4"]
    xs = random_inputs(shim4.get_input_details()[0], 300, seed=5)
    ours = shim4.run(xs)
    assert_identical(ours, Interpreter(model_content=as_int8).run(xs), "INT4 vs INT8 storage")
    assert_identical(ours, run_tflm(as_int4, xs), "shim vs TFLM with INT4 filters")
    assert_identical(ours, run_litert(as_int4, xs), "shim vs LiteRT with INT4 filters")


def test_int2_filters_run_on_the_shim_like_their_int8_twin():
    model_bytes = convert(build(lambda x: L.Conv2D(3, 3, padding="same")(x), (6, 6, 4)))
    clipped, filters = _clip_filters_to(model_bytes, 2)
    as_int8 = flatbuffer.write_model(clipped)
    flatbuffer.retype_constant_tensor(clipped, filters[0], 2)
    as_int2 = flatbuffer.write_model(clipped)
    shim2 = Interpreter(model_content=as_int2)
    assert shim2.tensors[filters[0]]["type"] == "INT2" and shim2.tensors[filters[0]]["bits"] == 2
    assert set(np.unique(shim2.get_tensor(filters[0]))) <= {-2, -1, 0, 1}
    xs = random_inputs(shim2.get_input_details()[0], 50)
    assert_identical(shim2.run(xs), Interpreter(model_content=as_int8).run(xs), "INT2 vs INT8 storage")


@pytest.fixture(scope="module")
def small_model():
    return convert(build(lambda x: L.Dense(3)(L.Flatten()(L.Conv2D(2, 3)(x))), (5, 5, 1)))


def test_api_details_tensors_and_errors(small_model, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(small_model)
    shim = Interpreter(model_path=str(path))
    (inp,), (out,) = shim.get_input_details(), shim.get_output_details()
    assert inp["dtype"] == np.int8 and list(inp["shape"]) == [1, 5, 5, 1]
    assert out["quantization_parameters"]["scales"].size == 1
    with pytest.raises(TfqError, match="no value yet"):
        shim.get_tensor(out["index"])
    with pytest.raises(TfqError, match="shape"):
        shim.set_tensor(inp["index"], np.zeros((1, 4, 5, 1), np.int8))
    with pytest.raises(TfqError, match="not set"):
        shim.invoke()
    shim.set_tensor(inp["index"], np.ones((1, 5, 5, 1), np.int8))
    shim.invoke()
    assert shim.get_tensor(out["index"]).shape == (1, 3)
    assert all(set(t) >= {"name", "shape", "type", "bits", "scales", "zero_points"} for t in shim.tensors)
    with pytest.raises(ModelFileError):
        Interpreter(model_path=str(tmp_path / "missing.tflite"))
    with pytest.raises(TfqError):
        Interpreter()


def _rename_opcode(model_bytes, old, new_builtin=None, custom=None):
    model = flatbuffer.read_model(model_bytes)
    for code in model.operatorCodes:
        if code.builtinCode == old:
            if custom is not None:
                code.builtinCode = code.deprecatedBuiltinCode = flatbuffer.schema_fb.BuiltinOperator.CUSTOM
                code.customCode = custom
            else:
                code.builtinCode = code.deprecatedBuiltinCode = new_builtin
    return flatbuffer.write_model(model)


def test_unknown_custom_op_and_unsupported_builtin_are_named(small_model):
    ops = flatbuffer.schema_fb.BuiltinOperator
    with pytest.raises(ModelFileError, match=r"operator #\d.*TFQ_UNKNOWN.*register_custom_op"):
        Interpreter(model_content=_rename_opcode(small_model, ops.FULLY_CONNECTED, custom="TFQ_UNKNOWN"))
    with pytest.raises(ModelFileError, match=r"operator #\d+ is HARD_SWISH.*supported builtins.*CONV_2D"):
        Interpreter(model_content=_rename_opcode(small_model, ops.FULLY_CONNECTED, new_builtin=ops.HARD_SWISH))


def test_custom_op_registry(small_model):
    patched = _rename_opcode(small_model, flatbuffer.schema_fb.BuiltinOperator.FULLY_CONNECTED, custom="TFQ_ZERO")

    @register_custom_op("TFQ_ZERO")
    def prepare(node):
        node.check(len(node.outputs) == 1, "one output")
        shape = node.outputs[0].shape
        return lambda inputs: [np.full(shape, 7, np.int8)]

    try:
        shim = Interpreter(model_content=patched)
        (out,) = shim.run(np.zeros((1, 5, 5, 1), np.int8))
        assert np.all(out == 7)
    finally:
        unregister_custom_op("TFQ_ZERO")
    with pytest.raises(ModelFileError, match="TFQ_ZERO"):
        Interpreter(model_content=patched)
    local = Interpreter(model_content=patched, custom_ops={"TFQ_ZERO": prepare})
    assert local.operators[-1][1] == "CUSTOM 'TFQ_ZERO'"


def test_kernel_helpers_against_known_values():
    assert kernels.compute_padding((5, 6), (3, 3), (2, 2), (1, 1), "SAME") == ((1, 0), (3, 3))
    assert kernels.compute_padding((5, 6), (3, 3), (1, 1), (2, 2), "VALID") == ((0, 0), (1, 2))
    assert ar.quantize_multiplier(0.5) == (1 << 30, 0)
    assert ar.quantize_multiplier(1.0) == (1 << 30, 1)
    assert ar.quantize_multiplier(0.0) == (0, 0)
    assert ar.quantize_multiplier(2.0 ** -40) == (0, 0)
    assert int(ar.saturating_rounding_doubling_high_mul(ar.INT32_MIN, ar.INT32_MIN)) == ar.INT32_MAX
    assert list(ar.rounding_divide_by_pot([5, -5, 6, -6, 7, -7], 1)) == [3, -3, 3, -3, 4, -4]
    x = np.array([7, -7, 5, -5])
    assert list(ar.multiply_by_quantized_multiplier(x, 1 << 30, 0, "double")) == [4, -3, 3, -2]
    assert list(ar.multiply_by_quantized_multiplier(x, 1 << 30, 0, "single")) == [4, -3, 3, -2]
    assert list(ar.multiply_by_quantized_multiplier([3, 5, 6, -5], 1 << 30, -1, "double")) == [1, 2, 2, -1]
    assert list(ar.multiply_by_quantized_multiplier([3, 5, 6, -5], 1 << 30, -1, "single")) == [1, 1, 2, -1]
    assert list(ar.count_leading_zeros_u32([0, 1, 2**31, 2**19, 2**32 - 1])) == [32, 31, 0, 12, 0]
    assert list(kernels.quantize([0.5, -0.5, 1.49, -2.5], 1.0, 0)) == [1, -1, 1, -3]
    uniform = kernels.softmax(np.zeros((1, 4), np.int8), input_scale=0.1, beta=1.0)
    assert list(uniform[0]) == [-64] * 4


def test_expand_dims_and_squeeze_in_place_of_conv1d_reshapes():
    """TF lowers expand_dims/squeeze around a 1-D conv to RESHAPE; rewrite them to the real ops."""
    fb = flatbuffer.schema_fb
    model_bytes = convert(build(lambda x: L.Conv1D(4, 3, activation="relu")(x), (16, 3)))
    assert ops_of(model_bytes) == ["RESHAPE", "CONV_2D", "RESHAPE"]
    model = flatbuffer.read_model(model_bytes)
    graph = model.subgraphs[0]
    model.operatorCodes += [fb.OperatorCodeT(), fb.OperatorCodeT()]
    for code, builtin in zip(model.operatorCodes[-2:], (fb.BuiltinOperator.EXPAND_DIMS, fb.BuiltinOperator.SQUEEZE)):
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        code.version = 1
    axis_buffer = fb.BufferT()
    axis_buffer.data = np.array([1], "<i4").view(np.uint8)
    model.buffers.append(axis_buffer)
    axis = fb.TensorT()
    axis.shape, axis.type, axis.buffer, axis.name = np.array([1], np.int32), fb.TensorType.INT32, len(model.buffers) - 1, "axis"
    graph.tensors.append(axis)
    expand, _, squeeze = graph.operators
    expand.opcodeIndex, expand.inputs = len(model.operatorCodes) - 2, np.array([expand.inputs[0], len(graph.tensors) - 1], np.int32)
    expand.builtinOptionsType, expand.builtinOptions = fb.BuiltinOptions.ExpandDimsOptions, fb.ExpandDimsOptionsT()
    squeeze.opcodeIndex, squeeze.inputs = len(model.operatorCodes) - 1, np.array([squeeze.inputs[0]], np.int32)
    squeeze.builtinOptionsType, squeeze.builtinOptions = fb.BuiltinOptions.SqueezeOptions, fb.SqueezeOptionsT()
    squeeze.builtinOptions.squeezeDims = [1]
    rewritten = flatbuffer.write_model(model)
    assert ops_of(rewritten) == ["EXPAND_DIMS", "CONV_2D", "SQUEEZE"]
    check_model(rewritten, n=200)


def test_per_tensor_filter_and_weight_scales():
    """Per-tensor filters take a different multiplier path in TFLM (FC multiplies scales in float)."""
    model_bytes = convert(build(lambda x: L.Dense(5, activation="relu")(L.Flatten()(
        L.DepthwiseConv2D(3, padding="same")(L.Conv2D(4, 3, strides=2)(x)))), (9, 9, 2)))
    model = flatbuffer.read_model(model_bytes)
    graph = model.subgraphs[0]
    collapsed = 0
    for op in graph.operators:
        q = graph.tensors[op.inputs[1]].quantization if len(op.inputs) > 1 else None
        if q is not None and q.scale is not None and len(q.scale) > 1:
            q.scale, q.zeroPoint, q.quantizedDimension = q.scale[:1].copy(), q.zeroPoint[:1].copy(), 0
            collapsed += 1
    assert collapsed == 3
    check_model(flatbuffer.write_model(model), n=200, litert_max_step=1)


def test_every_intermediate_tensor_matches_litert():
    model_bytes = convert(build(lambda x: L.MaxPooling2D(2)(L.Add()([
        L.Conv2D(4, 3, padding="same", activation="relu")(x), L.DepthwiseConv2D(3, padding="same")(x)])),
        (6, 6, 4)))
    shim = Interpreter(model_content=model_bytes)
    lite = tf.lite.Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True,
                               experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    lite.allocate_tensors()
    for x in random_inputs(shim.get_input_details()[0], 20):
        shim.run(x[None])
        lite.set_tensor(lite.get_input_details()[0]["index"], x[None])
        lite.invoke()
        for t in shim.tensors:
            assert np.array_equal(shim.get_tensor(t["index"]), lite.get_tensor(t["index"]).reshape(t["shape"])), t


def test_mean_with_equal_input_and_output_quantization():
    """Some TFLM versions divide by the count instead of rescaling when the scales match."""
    model_bytes = convert(build(lambda x: L.GlobalAveragePooling2D()(L.Conv2D(8, 3, padding="same")(x)), (6, 6, 3)))
    model = flatbuffer.read_model(model_bytes)
    graph = model.subgraphs[0]
    (op,) = [op for op in graph.operators
             if model.operatorCodes[op.opcodeIndex].builtinCode == flatbuffer.schema_fb.BuiltinOperator.MEAN]
    src, dst = graph.tensors[op.inputs[0]].quantization, graph.tensors[op.outputs[0]].quantization
    dst.scale, dst.zeroPoint = src.scale.copy(), src.zeroPoint.copy()
    check_model(flatbuffer.write_model(model), n=200)
