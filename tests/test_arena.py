"""Packed activations in TFLM's arena (issue 6): the planner model and the packed export layout.

(a) ``export.arena.plan_arena`` equals the head the real TFLM interpreter reports, on int8
exports (builtins only), a W4A8 export whose INT4 filters make CONV_2D request scratch, and a
float-I/O export; its greedy placement breaks size ties as TFLM does. (b) W4A4/W2A2/mixed exports
declare every packed activation at its packed byte size, with the logical shapes in the TFQ
operators' options, and so need about bits/8 of the int8 arena. (c) Those exports still compute
what the fake-quant model computes (bit-exact per layer), on the NumPy and the C++ kernels, and
the shim still runs the previous layout (packed tensors declared at their logical shape).
"""
import numpy as np
import pytest
from flatbuffers import flexbuffers

import tfq_tiny
from tfq_tiny import BitPolicy
from tfq_tiny.export import arena, flatbuffer, packing
from tfq_tiny.export.converter import (dequantize_output, layer_agreement, quantize_input, read_metadata,
                                       to_tflite)
from tfq_tiny.runtime import custom_ops
from tfq_tiny.runtime.interpreter import Interpreter

tflite_micro = pytest.importorskip("tflite_micro")
fb = flatbuffer.schema_fb

MIXED = (BitPolicy.uniform(4, 4).with_override("c1", weight_bits=8).with_override("r1", activation_bits=8)
         .with_override("dw", weight_bits=2).with_override("r2", activation_bits=2))
_CACHE = {}


def export(model, x, name, policy, **options):
    """(quantized model, flatbuffer) of fixture model ``name``, cached across the module's tests."""
    key = (name, str(policy), tuple(sorted(options.items())))
    if key not in _CACHE:
        qmodel = tfq_tiny.quantize_model(model, policy, calibration_data=x[:32], init="minmax")
        _CACHE[key] = (qmodel, to_tflite(qmodel, **options))
    return _CACHE[key]


def tflm_head(model_bytes):
    from tfq_tiny.search.memory import tflm_arena_usage
    return tflm_arena_usage(model_bytes, arena_size=1 << 20)["head"]


def custom_options(model_bytes):
    """[(custom code, options dict, input indices, output indices)] of the TFQ operators."""
    model = flatbuffer.read_model(model_bytes)
    found = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex].customCode
        if code:
            options = custom_ops.decode_options(bytes(np.asarray(op.customOptions, np.uint8)))
            found.append((code.decode(), options, [int(i) for i in op.inputs], [int(i) for i in op.outputs]))
    return model, found


# ---- (a) the planner model against TFLM -----------------------------------------------------

def test_plan_equals_tflm_head(small_cnn, small_conv1d, images, signals):
    cases = {
        "cnn int8": export(small_cnn, images, "cnn", "w8a8")[1],
        "cnn w4a8 (INT4 filters)": export(small_cnn, images, "cnn", "w4a8", dense_int4="conv_1x1")[1],
        "conv1d int8": export(small_conv1d, signals, "conv1d", "w8a8")[1],
        "conv1d float io": export(small_conv1d, signals, "conv1d", "w8a8", input_type="float32")[1],
    }
    for label, model_bytes in cases.items():
        plan = arena.plan_arena(model_bytes)
        assert plan["head"] == tflm_head(model_bytes), label
        assert all(b["size"] % 16 == 0 and b["size"] >= b["bytes"] for b in plan["buffers"]), label
    scratch = [b for b in arena.plan_arena(cases["cnn w4a8 (INT4 filters)"])["buffers"] if b["tensor"] is None]
    assert len(scratch) == 4 and {b["bytes"] for b in scratch} >= {8 * 3 * 3 * 3, 8 * 8}


def test_greedy_placement_breaks_size_ties_as_tflm():
    # TFLM places equal sizes in reverse order of addition: d before c here, which costs 16 bytes
    # over the other order (the effect that made MobileNet's int8 head 9216 bytes larger).
    buffers = [{"size": 64, "first": 3, "last": 4}, {"size": 48, "first": 0, "last": 1},
               {"size": 32, "first": 1, "last": 2}, {"size": 32, "first": 2, "last": 3}]
    assert arena.greedy_offsets(buffers) == [0, 0, 96, 64]
    assert arena.greedy_offsets([]) == [] and arena.align(1) == 16 and arena.align(32) == 32


def test_unmodelled_operators_are_refused(small_conv1d, signals):
    model = flatbuffer.read_model(export(small_conv1d, signals, "conv1d", "w8a8")[1])
    code = model.operatorCodes[model.subgraphs[0].operators[-1].opcodeIndex]
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.TRANSPOSE_CONV
    with pytest.raises(arena.ArenaModelError, match="TRANSPOSE_CONV.*not modelled"):
        arena.plan_arena(flatbuffer.write_model(model))


# ---- (b) the packed layout --------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["w4a4", "w2a2", "mixed"])
def test_packed_activations_are_declared_at_their_packed_size(small_cnn, images, policy):
    _, model_bytes = export(small_cnn, images, "cnn", MIXED if policy == "mixed" else policy)
    model, ops = custom_options(model_bytes)
    tensors = model.subgraphs[0].tensors
    packed = {}
    for code, options, inputs, outputs in ops:
        ports = [("input_shape", "input_bits", inputs[0]), ("output_shape", "output_bits", outputs[0])]
        if code == custom_ops.ADD:
            ports.insert(1, ("input2_shape", "input2_bits", inputs[1]))
        for shape_key, bits_key, index in ports:
            bits = options.get(bits_key, options.get("input_bits", 8) if bits_key == "input2_bits" else 8)
            assert (shape_key in options) == (bits < 8), (code, shape_key)
            if bits < 8:
                declared = [int(d) for d in tensors[index].shape]
                if options[shape_key] == custom_ops.INNERMOST_BYTES:  # innermost dimension in bytes
                    logical = declared[:-1] + [declared[-1] * 8 // bits]
                else:  # [1, bytes], the logical shape in the options
                    logical = options[shape_key]
                    assert len(declared) == 2 and declared[0] == 1, (code, shape_key)
                nbytes = packing.packed_size(int(np.prod(logical)), bits)
                assert int(np.prod(declared)) == nbytes, (code, shape_key)
                assert tensors[index].type == fb.TensorType.INT8
                packed[index] = nbytes
    assert len(packed) >= (6 if policy != "mixed" else 4)
    names = [name for _, name in Interpreter(model_content=model_bytes).operators]
    assert not any(name in ("RESHAPE", "EXPAND_DIMS", "SQUEEZE") for name in names), names
    plan = {b["tensor"]: b for b in arena.plan_arena(model_bytes)["buffers"]}
    assert all(plan[i]["bytes"] == n for i, n in packed.items())
    if policy != "mixed":
        bits = int(policy[-1])
        int8_head = tflm_head(export(small_cnn, images, "cnn", "w8a8")[1])
        assert arena.plan_arena(model_bytes)["head"] <= 1.1 * bits / 8 * int8_head


# ---- (c) same numbers, NumPy and C++, old layout still read ------------------------------------

@pytest.mark.parametrize("name,policy", [("cnn", "w4a4"), ("cnn", "w2a2"), ("cnn", "mixed"), ("conv1d", "w4a4")])
def test_packed_exports_equal_the_fake_quant_model(small_cnn, small_conv1d, images, signals, name, policy):
    model, x = (small_cnn, images) if name == "cnn" else (small_conv1d, signals)
    qmodel, model_bytes = export(model, x, name, MIXED if policy == "mixed" else policy)
    report = layer_agreement(qmodel, model_bytes, x[:8])
    assert min(row["exact"] for row in report.values()) == 1.0, report
    meta = read_metadata(model_bytes)
    xs = quantize_input(meta, x[:16])
    numpy_shim, native_shim = Interpreter(model_content=model_bytes), Interpreter(model_content=model_bytes,
                                                                                  kernels="native")
    ours = dequantize_output(meta, numpy_shim.run(xs)[0])
    fake = qmodel.predict(x[:16], verbose=0)
    assert np.all(np.abs(ours - fake) <= meta["outputs"][0]["scale"] * (1 + 1e-4))
    for row in xs[:4]:
        numpy_shim.run(row[None])
        native_shim.run(row[None])
        for t in numpy_shim.tensors:
            assert np.array_equal(numpy_shim.get_tensor(t["index"]), native_shim.get_tensor(t["index"])), t["name"]


def _logical_layout(model_bytes):
    """The previous layout: every packed activation declared at its logical shape (its memory
    image one byte per element, packed bytes first) and no shape keys in the options."""
    model, ops = custom_options(model_bytes)
    tensors = model.subgraphs[0].tensors
    for (code, options, inputs, outputs), op in zip(ops, [o for o in model.subgraphs[0].operators
                                                          if model.operatorCodes[o.opcodeIndex].customCode]):
        for key, index in (("output_shape", outputs[0]), ("input_shape", inputs[0]),
                           ("input2_shape", inputs[1] if len(inputs) > 1 else None)):
            if key in options:
                shape = options.pop(key)
                if shape == custom_ops.INNERMOST_BYTES:
                    bits = options.get(key.replace("shape", "bits"), options.get("input_bits", 8))
                    shape = list(tensors[index].shape[:-1]) + [int(tensors[index].shape[-1]) * 8 // bits]
                if key == "output_shape" or index in model.subgraphs[0].inputs:
                    tensors[index].shape = np.asarray(shape, np.int32)
        op.customOptions = np.frombuffer(bytes(flexbuffers.Dumps(options)), np.uint8)
    return flatbuffer.write_model(model)


def test_shim_still_runs_the_logical_shape_layout(small_cnn, images):
    _, model_bytes = export(small_cnn, images, "cnn", "w4a4")
    old = _logical_layout(model_bytes)
    assert arena.plan_arena(old)["head"] > 1.5 * arena.plan_arena(model_bytes)["head"]
    meta = read_metadata(model_bytes)
    xs = quantize_input(meta, images[:6])
    shape = meta["inputs"][0]["shape"][1:]
    images_old = np.stack([custom_ops.pack_storage(custom_ops.unpack_storage(r, 4, shape), 4) for r in xs])
    for kernels in ("numpy", "native"):
        assert np.array_equal(Interpreter(model_content=old, kernels=kernels).run(images_old)[0],
                              Interpreter(model_content=model_bytes).run(xs)[0]), kernels
