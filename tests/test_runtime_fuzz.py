"""Corrupted flatbuffers must fail cleanly: loading or running one either works or raises a
tfq_tiny error (ModelFileError and friends), never IndexError, struct.error or a crash."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfq_tiny._compat import keras, tf
from tfq_tiny.errors import TfqError
from tfq_tiny.export import flatbuffer
from tfq_tiny.runtime import custom_ops
from tfq_tiny.runtime.interpreter import Interpreter

L = keras.layers


def make_model_bytes():
    """A small int8 model touching most builtins: conv, depthwise, add, pools, mean, dense, softmax."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2), batch_size=1)
    a = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    b = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(inp)
    y = L.MaxPooling2D(2)(L.Add()([a, b]))
    g = L.GlobalAveragePooling2D()(y)
    f = L.Dense(4)(L.Flatten()(L.AveragePooling2D(3)(y)))
    out = L.Softmax()(L.Add()([L.Dense(4)(g), f]))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(8):
            yield [rng.normal(size=(1, 6, 6, 2)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def make_w4a4_bytes():
    """A W4A4 export (tfq_tiny.export.converter) using all six TFQ_* custom operators, with packed
    4-bit activations, INT4 and packed-INT8 2-bit filters."""
    import tfq_tiny
    from tfq_tiny.export.converter import to_tflite

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    b = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(inp)
    y = L.MaxPooling2D(2)(L.Add()([a, b]))
    out = L.Dense(4, name="fc")(L.Flatten()(L.AveragePooling2D(3, strides=1)(y)))
    policy = tfq_tiny.BitPolicy.uniform(4, 4).with_override("dw", weight_bits=2)
    calib = np.random.default_rng(0).normal(size=(32, 6, 6, 2)).astype(np.float32)
    return to_tflite(tfq_tiny.quantize_model(keras.Model(inp, out), policy, calibration_data=calib))


@pytest.fixture(scope="module")
def model_bytes():
    return make_model_bytes()


@pytest.fixture(scope="module")
def w4a4_bytes():
    return make_w4a4_bytes()


def load_and_run(data, rng, kernels="numpy"):
    """Return 'ok' or 'rejected'; any exception that is not a TfqError propagates."""
    try:
        shim = Interpreter(model_content=bytes(data), kernels=kernels)
        for d in shim.get_input_details():
            if d["dtype"] == np.float32:
                value = rng.normal(size=d["shape"]).astype(np.float32)
            else:
                lo, hi = (-128, 128) if d["bits"] == 8 else (-(1 << (d["bits"] - 1)), 1 << (d["bits"] - 1))
                value = rng.integers(lo, hi, size=d["shape"]).astype(d["dtype"])
            shim.set_tensor(d["index"], value)
        shim.invoke()
        for t in shim.tensors:
            shim.get_tensor(t["index"])
        return "ok"
    except TfqError:
        return "rejected"


def mutate(data, rng):
    data = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:
        for _ in range(rng.integers(1, 9)):
            pos = rng.integers(len(data))
            data[pos] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        for _ in range(rng.integers(1, 5)):
            pos = rng.integers(len(data))
            data[pos] = int(rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.integers(256)]))
    elif kind == 2:
        data = data[: rng.integers(len(data))]
    else:
        pos = rng.integers(max(len(data) - 4, 1))
        data[pos:pos + 4] = int(rng.integers(-(1 << 31), 1 << 31)).to_bytes(4, "little", signed=True)
    return bytes(data), ["bit flips", "byte overwrites", "truncation", "int32 overwrite"][kind]


def test_valid_model_loads_and_runs(model_bytes):
    assert load_and_run(model_bytes, np.random.default_rng(0)) == "ok"


def test_seeded_mutations_only_raise_tfq_errors(model_bytes):
    rng = np.random.default_rng(1234)
    outcomes = {"ok": 0, "rejected": 0}
    for case in range(2400):
        mutated, kind = mutate(model_bytes, rng)
        try:
            outcomes[load_and_run(mutated, rng)] += 1
        except Exception as exc:
            pytest.fail(f"case {case} ({kind}) raised {type(exc).__name__}: {exc}")
    assert outcomes["rejected"] > 500 and outcomes["ok"] > 100, outcomes


def test_structured_mutations_through_the_object_api(model_bytes):
    """Valid flatbuffers with wrong contents: indices, shapes, types and options out of range."""
    rng = np.random.default_rng(7)
    for case in range(300):
        model = flatbuffer.read_model(model_bytes)
        graph = model.subgraphs[0]
        choice = rng.integers(7)
        op = graph.operators[rng.integers(len(graph.operators))]
        tensor = graph.tensors[rng.integers(len(graph.tensors))]
        bad = int(rng.choice([-2, -1, 0, 1, 3, 255, 10**6]))
        if choice == 0:
            op.inputs[rng.integers(len(op.inputs))] = bad
        elif choice == 1:
            op.outputs[0] = bad
        elif choice == 2:
            tensor.shape[rng.integers(len(tensor.shape))] = bad if len(tensor.shape) else 0
        elif choice == 3:
            tensor.type = int(rng.integers(0, 22))
        elif choice == 4:
            tensor.buffer = bad
        elif choice == 5:
            op.opcodeIndex = bad
        elif op.builtinOptions is not None:
            fields = [k for k, v in vars(op.builtinOptions).items() if isinstance(v, (int, float))]
            if fields:
                setattr(op.builtinOptions, fields[rng.integers(len(fields))], bad)
        try:
            data = flatbuffer.write_model(model)
        except Exception:
            continue
        try:
            load_and_run(data, rng)
        except Exception as exc:
            pytest.fail(f"structured case {case} (choice {choice}) raised {type(exc).__name__}: {exc}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_hypothesis_byte_edits(model_bytes, data):
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(model_bytes) - 1), st.integers(0, 255)),
                               min_size=1, max_size=6))
    cut = data.draw(st.integers(8, len(model_bytes)))
    buf = bytearray(model_bytes)
    for pos, value in edits:
        buf[pos] = value
    load_and_run(bytes(buf[:cut]), np.random.default_rng(0))


def test_w4a4_export_loads_and_runs_on_both_kernel_sets(w4a4_bytes):
    ops = [name for _, name in Interpreter(model_content=w4a4_bytes).operators]
    assert len({name for name in ops if name.startswith("CUSTOM 'TFQ_")}) == 6
    assert load_and_run(w4a4_bytes, np.random.default_rng(0)) == "ok"
    assert load_and_run(w4a4_bytes, np.random.default_rng(0), kernels="native") == "ok"


@pytest.mark.parametrize("kernels,cases", [("numpy", 1500), ("native", 400)])
def test_w4a4_seeded_mutations_only_raise_tfq_errors(w4a4_bytes, kernels, cases):
    rng = np.random.default_rng(4321)
    outcomes = {"ok": 0, "rejected": 0}
    for case in range(cases):
        mutated, kind = mutate(w4a4_bytes, rng)
        try:
            outcomes[load_and_run(mutated, rng, kernels)] += 1
        except Exception as exc:
            pytest.fail(f"case {case} ({kind}, {kernels}) raised {type(exc).__name__}: {exc}")
    assert outcomes["rejected"] > cases // 5 and outcomes["ok"] > cases // 20, outcomes


def test_w4a4_custom_options_and_packed_tensors_mutated(w4a4_bytes):
    """Flexbuffer options (logical shapes included), packed buffers, tensor types and declared
    sizes of TFQ_* operators' tensors, corrupted."""
    rng = np.random.default_rng(11)
    for case in range(400):
        model = flatbuffer.read_model(w4a4_bytes)
        graph = model.subgraphs[0]
        custom = [op for op in graph.operators if op.customOptions is not None]
        op = custom[rng.integers(len(custom))]
        choice = rng.integers(7)
        if choice == 0:
            options = bytearray(np.asarray(op.customOptions, np.uint8).tobytes())
            for _ in range(rng.integers(1, 4)):
                options[rng.integers(len(options))] = int(rng.integers(256))
            op.customOptions = np.frombuffer(bytes(options), np.uint8)
        elif choice == 1:
            op.customOptions = np.asarray(op.customOptions, np.uint8)[: rng.integers(len(op.customOptions))]
        elif choice == 2:
            tensor = graph.tensors[op.inputs[rng.integers(len(op.inputs))]]
            tensor.type = int(rng.choice([0, 2, 3, 9, 17, 18]))
        elif choice == 3:
            tensor = graph.tensors[op.inputs[min(1, len(op.inputs) - 1)]]
            data = model.buffers[tensor.buffer].data
            if data is not None and len(data):
                model.buffers[tensor.buffer].data = np.asarray(data, np.uint8)[: rng.integers(len(data))]
        elif choice == 4:
            tensor = graph.tensors[op.outputs[0]]
            tensor.quantization.zeroPoint = np.asarray([int(rng.integers(-200, 200))], np.int64)
        elif choice == 5:
            options = custom_ops.decode_options(bytes(np.asarray(op.customOptions, np.uint8)))
            key = str(rng.choice(["input_shape", "input2_shape", "output_shape"]))
            given = options.get(key)
            shape = [1, 6, 6, 2] if given is None or given == custom_ops.INNERMOST_BYTES else list(given)
            how = rng.integers(5)
            if how == 4:  # the innermost-bytes mark on any tensor, packed or not
                shape = custom_ops.INNERMOST_BYTES
            elif how == 0:
                shape[rng.integers(len(shape))] = int(rng.choice([0, -1, 2, 7, 1 << 20]))
            elif how == 1:
                shape = shape[::-1]
            elif how == 2:
                shape = shape + [int(rng.integers(1, 3))]
            else:
                shape = shape[:-1] or [3]
            options[key] = shape
            op.customOptions = np.frombuffer(custom_ops.encode_options(options), np.uint8)
        else:  # the declared (packed byte) shape of an activation
            index = int(rng.choice(list(op.inputs[:1]) + list(op.outputs)))
            shape = [int(d) for d in graph.tensors[index].shape]
            shape[-1] = max(1, shape[-1] + int(rng.choice([-1, 1, -shape[-1] // 2])))
            graph.tensors[index].shape = np.asarray(shape, np.int32)
        try:
            data = flatbuffer.write_model(model)
        except Exception:
            continue
        for kernels in ("numpy", "native"):
            try:
                load_and_run(data, rng, kernels)
            except Exception as exc:
                pytest.fail(f"case {case} (choice {choice}, {kernels}) raised {type(exc).__name__}: {exc}")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_w4a4_hypothesis_byte_edits(w4a4_bytes, data):
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(w4a4_bytes) - 1), st.integers(0, 255)),
                               min_size=1, max_size=6))
    cut = data.draw(st.integers(8, len(w4a4_bytes)))
    buf = bytearray(w4a4_bytes)
    for pos, value in edits:
        buf[pos] = value
    load_and_run(bytes(buf[:cut]), np.random.default_rng(0))
