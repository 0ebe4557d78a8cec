"""``to_tflite``: a calibrated fake-quant tf_keras model in, a TFLM flatbuffer with packed 2/4/8-bit
tensors out.

Route. TensorFlow's own converter does the graph work it already does well (layouts, Conv1D
lowering, Flatten, fused ReLUs, op options): we convert a *float twin* of the quantized model
(the original layers carrying the fake-quantized weights) with full-integer int8 quantization,
then rewrite its output through the schema object API:

1. match every TFLite operator to the deployed operator of ``analysis.op_graph`` that it
   computes, walking both graphs from the input and *verifying* each match: operator kind,
   the tensors it reads, strides/padding/pool sizes and, for weighted operators, that TF's
   int8 filter and bias dequantize to our fake-quantized kernel and float bias;
2. give every activation tensor our scale and zero point, replace each filter by our integer
   codes (per output channel scales) and recompute each int32 bias with our scales;
3. keep an operator a TFLM builtin when TFLM runs it natively (all activations 8-bit; CONV_2D
   and DEPTHWISE_CONV_2D with INT8 or packed INT4 filters, the rest with INT8), and turn
   everything else into a ``TFQ_*`` custom operator per ``tflm_ext/README.md``; MEAN
   (global average pooling) becomes a full-window average pool (+ RESHAPE): TFLite's builtin
   when input and output share one 8-bit grid, else the requantizing TFQ_AVERAGE_POOL_2D.

Storage. A sub-8-bit activation is stored packed between operators, the model input included,
and declared at its packed size, so TFLM's arena planner reserves the packed bytes
(``tfq_tiny.export.arena`` measures it): as an INT8 tensor of its logical shape with the innermost
dimension counted in bytes where those values fill whole bytes (the TFQ operators' shape options
say ``custom_ops.INNERMOST_BYTES``), else as ``[1, ceil(elements * bits / 8)]`` with the logical
shapes in the TFQ operators' custom options (``input_shape``, ``input2_shape``, ``output_shape``).
Shape operators between packed tensors vanish (bytes in order are a reshape of their own).
Model outputs are stored as plain int8 holding values on their b-bit grid.
``quantize_input``/``dequantize_output`` do the conversions for a user, from the ``tfq_tiny``
metadata entry (BitPolicy, versions, input/output grids with their logical shapes) the converter
writes.
"""
import json
from collections import Counter
from dataclasses import dataclass

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema_fb

from tfq_tiny._compat import QuantizeLayer, tf
from tfq_tiny.analysis.ops import op_graph
from tfq_tiny.errors import BitWidthError, ModelFileError, TfqError, UnsupportedLayerError
from tfq_tiny.export import flatbuffer, packing
from tfq_tiny.graph import Graph, call_layer, clone_call, clone_layer, rebuild
from tfq_tiny.quantization.calibration import QuantizeWrapper, layer_slots, quantizer_slots
from tfq_tiny.quantization.configs import (activation_name, fixed_grid_function, is_concatenate,
                                          leaky_relu_alpha)
from tfq_tiny.quantization.grid import DEPLOYABLE_BITS, int_range
from tfq_tiny.quantization.policy import BitPolicy
from tfq_tiny.quantization.quantizers import UniformQuantizer
from tfq_tiny.runtime import custom_ops, kernels

METADATA_NAME = "tfq_tiny"
INPUT_TYPES = ("int8", "float32")
INT2_TYPES = ("INT8", "INT2")
DENSE_INT4 = ("custom", "conv_1x1")
CAUSAL_INT8 = ("pad", "custom")
FIXED_GRIDS = {"softmax": ("SOFTMAX", kernels.SOFTMAX_OUTPUT_SCALE, kernels.SOFTMAX_OUTPUT_ZP),
               "sigmoid": ("LOGISTIC", kernels.LOGISTIC_OUTPUT_SCALE, kernels.LOGISTIC_OUTPUT_ZP),
               "tanh": ("TANH", kernels.TANH_OUTPUT_SCALE, kernels.TANH_OUTPUT_ZP)}
"""Function -> (TFLM int8 builtin, output scale, output zero point) of the fixed-grid functions."""

_OPS = schema_fb.BuiltinOperator
_OP_NAMES = {v: k for k, v in vars(_OPS).items() if not k.startswith("_")}
_ACTIVATIONS = {v: k for k, v in vars(schema_fb.ActivationFunctionType).items() if not k.startswith("_")}
_PADDINGS = {schema_fb.Padding.SAME: "SAME", schema_fb.Padding.VALID: "VALID"}
_SHAPE_OPS = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE")
_SHAPE_KEYS = custom_ops.SHAPE_KEYS
LAYOUT_VERSION = 4
"""Version of the exported layout, in the metadata's ``layout_version``: 4 declares packed tensors
inside the model with their innermost dimension in bytes where it can (``declare_innermost_bytes``);
3 writes the TFQ operators' options as a flexbuffer vector of integers
(``custom_ops.OPTION_FIELDS``); 2 wrote them as a
flexbuffer map and, like 3, declares a packed activation as INT8 ``[1, packed bytes]`` with its
logical shape in the TFQ operators' options and (for model inputs/outputs) in the metadata's
``shape``; 1 (no ``layout_version``) declared it at its logical shape holding a memory image
(packed bytes first). The shim and the glue read all four."""
_KERAS_TYPES = {
    "CONV_2D": ("Conv1D", "Conv2D"),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv1D", "DepthwiseConv2D"),
    "FULLY_CONNECTED": ("Dense",),
    "ADD": ("Add",),
    "AVERAGE_POOL_2D": ("AveragePooling1D", "AveragePooling2D"),
    "MAX_POOL_2D": ("MaxPooling1D", "MaxPooling2D"),
    "MEAN": ("GlobalAveragePooling1D", "GlobalAveragePooling2D"),
    "SOFTMAX": ("Softmax", "Activation"),
    "LOGISTIC": ("Activation",),
    "TANH": ("Activation",),
    "CONCATENATION": ("Concatenate",),
    "LEAKY_RELU": ("LeakyReLU", "ReLU"),
}
_CUSTOM_CODE = {
    "CONV_2D": custom_ops.CONV_2D, "DEPTHWISE_CONV_2D": custom_ops.DEPTHWISE_CONV_2D,
    "FULLY_CONNECTED": custom_ops.FULLY_CONNECTED, "ADD": custom_ops.ADD,
    "AVERAGE_POOL_2D": custom_ops.AVERAGE_POOL_2D, "MAX_POOL_2D": custom_ops.MAX_POOL_2D,
    "LEAKY_RELU": custom_ops.LEAKY_RELU,
}
_FUSED = {"linear": "NONE", "relu": "RELU", "relu6": "RELU6"}


class ExportError(TfqError):
    """The model cannot be exported as asked (unsupported construct, unmappable TF output)."""


# ---- our side: deployed tensors and their grids -----------------------------------------------

@dataclass
class _Grid:
    """Quantization of one deployed tensor: the b-bit grid and how it is stored."""

    name: str
    bits: int
    scale: np.float32
    zero_point: int
    storage_bits: int

    def as_dict(self):
        return {"name": self.name, "bits": self.bits, "storage_bits": self.storage_bits,
                "scale": float(self.scale), "zero_point": self.zero_point}


def _deployable(bits, layer, what):
    if bits not in DEPLOYABLE_BITS:
        raise BitWidthError(
            f"layer '{layer}': {what} {bits} bits cannot be exported; deployable widths are "
            f"{list(DEPLOYABLE_BITS)}. Re-quantize with a policy using those, e.g. "
            f"policy.with_override('{layer}', ...).")
    return bits


def _slot_grid(slot, name, layer):
    if slot is None:
        raise ExportError(
            f"layer '{layer}' outputs a float tensor: the converter needs every activation "
            "quantized (integer-only TFLM models). Quantize activations too (e.g. policy 'w4a8' "
            "instead of 'w4a32').")
    bits = _deployable(slot.quantizer.num_bits, layer, "activation")
    scale = np.float32(np.asarray(slot.variables["scale"].numpy()).reshape(-1)[0])
    zp = np.asarray(slot.variables["zero_point"].numpy()).reshape(-1)[0]
    zero_point = int(np.sign(zp) * np.floor(np.abs(zp) + 0.5))
    return _Grid(name, bits, scale, zero_point, bits)


class _Plan:
    """The deployed-operator view of a quantized model with every tensor's grid and weights."""

    def __init__(self, qmodel):
        self.model = qmodel
        self.graph = Graph(qmodel)
        self.ops, self.tensors, self.outputs = op_graph(qmodel)
        self.inputs = list(self.graph.input_names)
        slots = quantizer_slots(qmodel)
        if not slots:
            raise ExportError(
                f"model '{qmodel.name}' has no quantizers; export a model returned by "
                "tfq_tiny.quantize_model (or loaded with tfq_tiny.load_model).")
        for slot in slots:
            if not isinstance(slot.quantizer, UniformQuantizer):
                raise ExportError(
                    f"layer '{slot.layer_name}' uses {type(slot.quantizer).__name__}, which has no "
                    "integer kernel (k-means and other non-uniform quantizers are simulation only). "
                    "Export a model quantized with tfq_tiny.quantize_model.")
        inputs = {s.layer_name: s for s in slots if s.kind == "input"}
        outputs = {s.layer_name: s for s in slots if s.kind == "output"}
        self.weight_slot = {s.layer_name: s for s in slots if s.kind == "weight"}
        self.inner = {layer.layer.name: layer.layer for layer in qmodel.layers
                      if isinstance(layer, QuantizeWrapper)}
        self.grid = {}
        for name in self.inputs:
            self.grid[name] = _slot_grid(inputs.get(name), name, name)
        for op in self.ops:
            kind = op.type
            if kind in ("MaxPooling1D", "MaxPooling2D"):
                source = self.grid[op.inputs[0]]
                self.grid[op.output] = _Grid(op.output, source.bits, source.scale,
                                             source.zero_point, source.bits)
                continue
            if kind in ("ZeroPadding1D", "ZeroPadding2D"):
                raise ExportError(
                    f"layer '{op.name}' ({kind}) deploys only folded into the convolution right "
                    "after it, where it equals that convolution's SAME padding "
                    "(tfq_tiny.preprocess.fold_zero_padding); here it does not. Drop it and give "
                    "the convolution padding='same', or pad the input before the model.")
            owner = op.fused[-1] if op.fused else op.name
            grid = _slot_grid(outputs.get(owner), op.output, owner)
            function = fixed_grid_function(op.layer)
            if function is not None:
                builtin, scale, zero_point = FIXED_GRIDS[function]
                if grid.bits != 8 or self.grid[op.inputs[0]].bits != 8:
                    raise ExportError(
                        f"layer '{op.name}' ({function}) must read and write 8-bit tensors: TFLM's "
                        f"int8 {builtin} is the only {function} kernel. Override its activation_bits "
                        "(and its input's) to 8.")
                grid = _Grid(op.output, 8, np.float32(scale), zero_point, 8)
            if is_concatenate(op.layer):
                inputs = [self.grid[name] for name in op.inputs]
                if grid.bits != 8 or any((g.bits, g.scale, g.zero_point) !=
                                         (8, grid.scale, grid.zero_point) for g in inputs):
                    raise ExportError(
                        f"layer '{op.name}' (Concatenate) must read and write one 8-bit grid: "
                        "TFLM's CONCATENATION copies int8 values. Its inputs "
                        f"{[(g.name, g.bits, float(g.scale), g.zero_point) for g in inputs]} and "
                        f"output {(grid.bits, float(grid.scale), grid.zero_point)} differ; keep the "
                        "widths of the concatenated layers at 8 and leave them unannotated "
                        "(quantize_model ties their grids).")
            self.grid[op.output] = grid
            if op.weight_bits is not None:
                if op.name not in self.weight_slot:
                    raise ExportError(f"layer '{op.name}' has float weights; quantize its weights too.")
                _deployable(op.weight_bits, op.name, "weight")
        for name in self.outputs:
            self.grid[name].storage_bits = 8

    def fused_activation(self, op):
        """TFLite's fused activation for ``op`` ('NONE', 'RELU', 'RELU6')."""
        source = self.inner[op.fused[-1]] if op.fused else op.layer
        name = activation_name(source)
        if leaky_relu_alpha(op.layer) is not None:
            return "NONE"
        if name not in _FUSED and fixed_grid_function(op.layer) is None:
            raise UnsupportedLayerError(f"layer '{op.name}': activation '{name}' cannot be fused into "
                                        "a TFLite operator; use linear, relu or relu6.")
        return _FUSED.get(name, "NONE")

    def weights(self, op):
        """(integer codes in Keras layout, per-channel float32 scales flattened, float32 bias)."""
        slot = self.weight_slot[op.name]
        codes = slot.quantizer.to_integers(slot.weight.numpy(), slot.variables)
        scales = np.asarray(slot.variables["scale"].numpy(), np.float32).reshape(-1)
        layer = op.layer
        channels = scales.size
        bias = layer.bias.numpy().astype(np.float32).reshape(-1) if getattr(layer, "use_bias", False) \
            else np.zeros(channels, np.float32)
        return codes, scales, bias

    def policy(self):
        """The BitPolicy the quantizers implement (defaults = the most common widths)."""
        slots = quantizer_slots(self.model)
        weight = {s.layer_name: s.quantizer.num_bits for s in slots if s.kind == "weight"}
        act = {s.layer_name: s.quantizer.num_bits for s in slots if s.kind in ("input", "output")}
        producers = {op.output: (op.fused[-1] if op.fused else op.name) for op in self.ops}
        output_layers = {producers[name] for name in self.outputs if producers.get(name) in act}
        output_bits = _most_common([act[name] for name in output_layers], None)
        w_default = _most_common(weight.values(), 8)
        a_default = _most_common([b for n, b in act.items() if n not in output_layers] or act.values(), 8)
        overrides = {}
        for name, bits in weight.items():
            if bits != w_default:
                overrides.setdefault(name, {})["weight_bits"] = bits
        for name, bits in act.items():
            expected = output_bits if name in output_layers else a_default
            if bits != expected:
                overrides.setdefault(name, {})["activation_bits"] = bits
        return BitPolicy(w_default, a_default, overrides, output_bits)


def _most_common(values, default):
    counts = Counter(values)
    if not counts:
        return default
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]


def policy_of(qmodel):
    """The BitPolicy (per-layer weight/activation bits) implemented by a quantized model."""
    return _Plan(qmodel).policy()


# ---- the float twin and TF's conversion --------------------------------------------------------

def float_twin(qmodel):
    """A plain float tf_keras model with ``qmodel``'s layers and its fake-quantized kernels.

    Input quantizers are dropped and every QuantizeWrapper is replaced by its inner layer whose
    kernel is ``codes * scale`` exactly as the fake-quant forward pass computes it.
    """
    graph = Graph(qmodel)

    def transform(node, inputs):
        layer = node.layer
        if node.name in graph.input_names or isinstance(layer, QuantizeLayer):
            return inputs[0]
        if not isinstance(layer, QuantizeWrapper):
            return clone_call(node, inputs)
        inner = layer.layer
        # TF lowers a causal Conv1D to PAD + a dilated VALID convolution; as SAME it keeps one
        # CONV_2D with the same weights and output shape, which the writer then gives the
        # causal (explicit, left-only) padding.
        twin = clone_layer(inner, **({"padding": "same"} if is_causal(inner) else {}))
        out = call_layer(twin, inputs)
        weight_slots = [s for s in layer_slots(layer) if s.kind == "weight"]
        quantized_attr = getattr(layer.quantize_config, "weight_attr", None)
        values = []
        for variable in twin.weights:
            attr = variable.name.split("/")[-1].split(":")[0]
            slot = weight_slots[0] if weight_slots and attr == quantized_attr else None
            if slot is None:
                values.append(getattr(inner, attr).numpy())
                continue
            codes = slot.quantizer.to_integers(slot.weight.numpy(), slot.variables)
            scale = np.asarray(slot.variables["scale"].numpy(), np.float64)
            shape = [1] * codes.ndim
            for axis, size in zip(sorted(a % codes.ndim for a in slot.quantizer.channel_axes), scale.shape):
                shape[axis] = size
            values.append((codes * scale.reshape(shape)).astype(np.float32))
        twin.set_weights(values)
        return out

    return rebuild(graph, transform, name=f"{qmodel.name}_twin")


def _tf_convert(twin, plan, input_type, samples=16, seed=0):
    rng = np.random.default_rng(seed)
    ranges = []
    for name, shape in zip(plan.inputs, twin.input_shape if isinstance(twin.input_shape, list)
                           else [twin.input_shape]):
        grid = plan.grid[name]
        qmin, qmax = int_range(grid.bits)
        ranges.append(((qmin - grid.zero_point) * float(grid.scale),
                       (qmax - grid.zero_point) * float(grid.scale), (1,) + tuple(shape[1:])))

    def representative():
        for _ in range(samples):
            yield [rng.uniform(lo, hi, size=shape).astype(np.float32) for lo, hi, shape in ranges]

    # A fixed batch of one: Keras' Reshape computes its batch dimension at run time, which
    # leaves SHAPE/STRIDED_SLICE/PACK operators behind unless the batch is static.
    specs = [tf.TensorSpec(shape, tf.float32) for _, _, shape in ranges]
    forward = tf.function(lambda *xs: twin(list(xs) if len(xs) > 1 else xs[0], training=False))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [forward.get_concrete_function(*specs)], twin)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if input_type == "int8":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as exc:
        raise ExportError(
            f"TensorFlow's converter failed on the float twin of '{plan.model.name}' "
            f"({type(exc).__name__}: {str(exc)[:400]}). The model uses a construct TF cannot "
            "convert to int8 builtins.") from exc


# ---- matching TF's operators to ours -----------------------------------------------------------

class _Tfl:
    """Convenience view of a ModelT's first subgraph."""

    def __init__(self, model):
        self.model = model
        self.graph = model.subgraphs[0]
        self.tensors = self.graph.tensors

    def op_name(self, op):
        code = self.model.operatorCodes[op.opcodeIndex]
        return _OP_NAMES.get(max(int(code.builtinCode), int(code.deprecatedBuiltinCode)), "?")

    def values(self, index):
        """Dequantized float64 values and scales of a constant int8/int32 tensor."""
        tensor = self.tensors[index]
        raw = np.asarray(self.model.buffers[tensor.buffer].data, np.uint8)
        dtype = {schema_fb.TensorType.INT8: np.int8, schema_fb.TensorType.INT32: "<i4"}[tensor.type]
        ints = raw.view(dtype).astype(np.float64).reshape(tuple(tensor.shape))
        q = tensor.quantization
        scales = np.asarray(q.scale, np.float64)
        axis = int(q.quantizedDimension)
        shape = [1] * ints.ndim
        if scales.size > 1:
            shape[axis] = scales.size
        return ints * scales.reshape(shape), scales

    def values_raw(self, index):
        """The int32 values of a constant INT32 tensor (MEAN's axes)."""
        tensor = self.tensors[index]
        return np.asarray(self.model.buffers[tensor.buffer].data, np.uint8).view("<i4")

    def shape(self, index):
        return tuple(int(d) for d in self.tensors[index].shape)

    def name(self, index):
        return _text(self.tensors[index].name)


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def _tfl_layout(op, codes, tfl_shape):
    """Our Keras-layout kernel codes in TFLite's filter layout (OHWI, [1,H,W,C*M] or [O,K])."""
    kind = op.type
    if kind == "Conv2D":
        filt = np.transpose(codes, (3, 0, 1, 2))
    elif kind == "Conv1D":
        filt = np.transpose(codes, (2, 0, 1))
        if len(tfl_shape) != 4 or 1 not in tfl_shape[1:3] or filt.size != int(np.prod(tfl_shape)):
            raise ExportError(f"layer '{op.name}': TF lowered the Conv1D filter to {list(tfl_shape)}, "
                              "not [O, 1, K, I] or [O, K, 1, I].")
        filt = filt.reshape(tfl_shape)
    elif kind == "DepthwiseConv2D":
        filt = codes.reshape((1,) + codes.shape[:2] + (-1,))
    elif kind == "DepthwiseConv1D":
        filt = codes.reshape(tuple(tfl_shape[:3]) + (-1,))
        if 1 not in tfl_shape[1:3] or filt.size != int(np.prod(tfl_shape)):
            raise ExportError(f"layer '{op.name}': TF lowered the DepthwiseConv1D filter to "
                              f"{list(tfl_shape)}, not [1, 1, K, C*M] or [1, K, 1, C*M].")
    else:
        filt = np.transpose(codes)
    if tuple(filt.shape) != tuple(tfl_shape):
        raise ExportError(f"layer '{op.name}': our filter in TFLite layout has shape {list(filt.shape)} "
                          f"but TF's has {list(tfl_shape)}.")
    return filt


def _pair(values, is_1d):
    return tuple(sorted(values)) if is_1d else tuple(values)


def is_causal(layer):
    """True for a Conv1D with ``padding='causal'``: ``(kernel - 1) * dilation`` zeros before the
    sequence, none after, which no TFLite padding expresses; it deploys as TFQ_CONV_2D with
    explicit padding (``causal_padding``)."""
    return getattr(layer, "padding", None) == "causal"


def causal_padding(layer, input_shape):
    """Options of the TFQ convolution for a causal Conv1D whose TFLite input is ``input_shape``
    (TF runs a 1-D convolution over ``[N, 1, T, C]``): the zeros go before the T axis."""
    pad = (int(layer.kernel_size[0]) - 1) * int(layer.dilation_rate[0])
    along_h = input_shape[1] != 1 and input_shape[2] == 1
    return {"padding": "EXPLICIT", "pad_h": pad if along_h else 0, "pad_w": 0 if along_h else pad}


def _attributes_match(tfl, tfl_op, name, op, plan):
    """True when TF's options for ``tfl_op`` describe the layer ``op`` (strides, padding, ...)."""
    layer = op.layer
    options = tfl_op.builtinOptions
    is_1d = op.type.endswith("1D")
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        strides = tuple(layer.strides) + ((1,) if is_1d else ())
        dilation = tuple(layer.dilation_rate) + ((1,) if is_1d else ())
        padding = "SAME" if is_causal(layer) else layer.padding.upper()   # as float_twin has it
        same = (_pair((options.strideH, options.strideW), is_1d) == _pair(strides, is_1d)
                and _pair((options.dilationHFactor, options.dilationWFactor), is_1d) == _pair(dilation, is_1d)
                and _PADDINGS.get(options.padding) == padding)
        if name == "DEPTHWISE_CONV_2D":
            same = same and int(options.depthMultiplier) == int(layer.depth_multiplier)
        return same
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        pool = tuple(layer.pool_size) + ((1,) if is_1d else ())
        strides = tuple(layer.strides) + ((1,) if is_1d else ())
        return (_pair((options.filterHeight, options.filterWidth), is_1d) == _pair(pool, is_1d)
                and _pair((options.strideH, options.strideW), is_1d) == _pair(strides, is_1d)
                and _PADDINGS.get(options.padding) == layer.padding.upper())
    if name in ("SOFTMAX", "LOGISTIC", "TANH"):
        return FIXED_GRIDS.get(fixed_grid_function(layer), (None,))[0] == name
    if name == "LEAKY_RELU":
        alpha = leaky_relu_alpha(layer)
        return alpha is not None and np.float32(options.alpha) == np.float32(alpha)
    if name == "CONCATENATION":
        rank, tfl_rank = len(plan.tensors[op.output].shape) + 1, len(tfl.shape(tfl_op.outputs[0]))
        axis, tfl_axis = layer.axis % rank, int(options.axis) % tfl_rank
        return (axis, rank) == (tfl_axis, tfl_rank) or (axis == rank - 1 and tfl_axis == tfl_rank - 1)
    if name == "MEAN":
        axes = sorted(int(a) % len(tfl.shape(tfl_op.inputs[0]))
                      for a in np.asarray(tfl.values_raw(tfl_op.inputs[1])).reshape(-1))
        return axes == ([1] if is_1d else [1, 2])
    return True


def _weights_match(tfl, tfl_op, op, plan):
    """True when TF's int8 filter and bias dequantize to our fake-quant kernel and float bias."""
    codes, scales, bias = plan.weights(op)
    filter_shape = tfl.shape(tfl_op.inputs[1])
    try:
        filt = _tfl_layout(op, codes, filter_shape)
    except ExportError:
        return False
    axis = 3 if op.type.startswith("DepthwiseConv") else 0
    shape = [1] * filt.ndim
    shape[axis] = scales.size
    ours = filt * scales.astype(np.float64).reshape(shape)
    theirs, their_scales = tfl.values(tfl_op.inputs[1])
    step = np.broadcast_to(their_scales.reshape(shape if their_scales.size > 1 else [1] * filt.ndim), ours.shape)
    if np.any(np.abs(ours - theirs) > 0.51 * step + 1e-6 * (np.abs(ours).max() + 1e-12)):
        return False
    if len(tfl_op.inputs) > 2 and tfl_op.inputs[2] >= 0:
        their_bias, bias_scales = tfl.values(tfl_op.inputs[2])
        tolerance = 0.51 * np.broadcast_to(bias_scales, their_bias.shape) + 1e-6 * (np.abs(bias).max() + 1e-12)
        if their_bias.size != bias.size or np.any(np.abs(their_bias.reshape(-1) - bias) > tolerance):
            return False
    return True


def _match(tfl, plan):
    """{TF operator index: our Op} and {TF tensor index: our tensor name}, verified."""
    graph = tfl.graph
    tensor_of = {}
    if len(graph.inputs) != len(plan.inputs):
        raise ExportError(f"TF's model has {len(graph.inputs)} inputs, ours {len(plan.inputs)}.")
    float_inputs = {}
    for index, name in zip(graph.inputs, plan.inputs):
        if tfl.tensors[index].type == schema_fb.TensorType.FLOAT32:
            float_inputs[int(index)] = name
        else:
            tensor_of[int(index)] = name
    op_of = {}
    matched = set()
    for i, tfl_op in enumerate(graph.operators):
        name = tfl.op_name(tfl_op)
        ins = [int(t) for t in tfl_op.inputs]
        outs = [int(t) for t in tfl_op.outputs]
        if name == "QUANTIZE" and ins[0] in float_inputs:
            tensor_of[outs[0]] = float_inputs[ins[0]]
            continue
        if name == "DEQUANTIZE" and ins[0] in tensor_of:
            continue
        if name in _SHAPE_OPS:
            if ins[0] not in tensor_of:
                raise ExportError(f"TF operator #{i} ({name}) reads a tensor we cannot place.")
            tensor_of[outs[0]] = tensor_of[ins[0]]
            continue
        if name not in _KERAS_TYPES:
            raise ExportError(
                f"TF emitted operator #{i} {name}, which the converter does not map (supported: "
                f"{sorted(_KERAS_TYPES) + list(_SHAPE_OPS)}). The model has a layer the TFQ "
                "operators do not cover; replace it.")
        data = ins if name == "CONCATENATION" else ins[:2] if name == "ADD" else ins[:1]
        if any(t not in tensor_of for t in data):
            raise ExportError(f"TF operator #{i} ({name}) reads a tensor we cannot place.")
        sources = sorted(tensor_of[t] for t in data)
        candidates = [op for op in plan.ops if id(op) not in matched and op.type in _KERAS_TYPES[name]
                      and sorted(op.inputs) == sources and _attributes_match(tfl, tfl_op, name, op, plan)]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            candidates = [op for op in candidates if _weights_match(tfl, tfl_op, op, plan)]
        if len(candidates) != 1:
            found = "no layer" if not candidates else f"{len(candidates)} layers ({[c.name for c in candidates]})"
            raise ExportError(
                f"cannot map TF operator #{i} ({name}, output {tfl.name(outs[0])!r}) to one "
                f"layer of the quantized model: {found} read {sources} with matching options and "
                "weights.")
        op = candidates[0]
        matched.add(id(op))
        op_of[i] = op
        tensor_of[outs[0]] = op.output
        expected = plan.fused_activation(op)
        options = tfl_op.builtinOptions
        fused = _ACTIVATIONS.get(getattr(options, "fusedActivationFunction", 0), "NONE")
        if fused != expected:
            raise ExportError(f"layer '{op.name}': TF fused activation {fused}, the quantized model "
                              f"has {expected}.")
    missing = [op.name for op in plan.ops if id(op) not in matched]
    if missing:
        raise ExportError(f"TF's model has no operator for layers {missing}.")
    outputs = []
    for index in graph.outputs:
        index = int(index)
        if index not in tensor_of:
            producer = next((op for op in graph.operators if index in list(op.outputs)), None)
            if producer is not None and tfl.op_name(producer) == "DEQUANTIZE":
                index = int(producer.inputs[0])
        outputs.append(tensor_of.get(index))
    if outputs != plan.outputs:
        raise ExportError(f"TF's model outputs {outputs}, the quantized model {plan.outputs}.")
    for index, name in tensor_of.items():
        count = int(np.prod(tfl.shape(index))) if tfl.shape(index) else 1
        if count != plan.tensors[name].elements:
            raise ExportError(f"TF tensor {tfl.name(index)!r} has {count} elements, our "
                              f"tensor '{name}' {plan.tensors[name].elements}.")
    return op_of, tensor_of


# ---- rewriting --------------------------------------------------------------------------------

def _quantization(scales, zero_points, axis=0):
    q = schema_fb.QuantizationParametersT()
    q.scale = np.asarray(scales, np.float32).reshape(-1)
    q.zeroPoint = np.asarray(zero_points, np.int64).reshape(-1)
    q.quantizedDimension = int(axis)
    return q


class _Writer:
    """Builds the rewritten operator list of ``tfl`` for ``plan``."""

    def __init__(self, tfl, plan, tensor_of, int2_type, dense_int4, litert_compatible=False,
                 causal_int8="pad"):
        self.tfl, self.plan, self.tensor_of = tfl, plan, tensor_of
        self.model, self.graph = tfl.model, tfl.graph
        self.int2_type = int2_type
        self.dense_int4 = dense_int4
        self.causal_int8 = causal_int8
        self.filter_zero_points = None if litert_compatible else 1
        self.operators = []

    def grid(self, index):
        return self.plan.grid[self.tensor_of[int(index)]]

    def add_buffer(self, data):
        buffer = schema_fb.BufferT()
        buffer.data = np.frombuffer(bytes(data), np.uint8).copy()
        self.model.buffers.append(buffer)
        return len(self.model.buffers) - 1

    def add_tensor(self, name, shape, tensor_type, buffer=0, quantization=None):
        tensor = schema_fb.TensorT()
        tensor.name = name
        tensor.shape = np.asarray(shape, np.int32)
        tensor.type = tensor_type
        tensor.buffer = buffer
        tensor.quantization = quantization
        self.graph.tensors.append(tensor)
        return len(self.graph.tensors) - 1

    def opcode(self, builtin=None, custom=None, version=1):
        code_value = _OPS.CUSTOM if custom is not None else builtin
        for i, code in enumerate(self.model.operatorCodes):
            same_code = max(int(code.builtinCode), int(code.deprecatedBuiltinCode)) == code_value
            same_custom = custom is None or (code.customCode or b"") in (custom, custom.encode())
            if same_code and same_custom:
                return i
        code = schema_fb.OperatorCodeT()
        code.builtinCode = code_value
        code.deprecatedBuiltinCode = min(code_value, 127)
        code.customCode = custom
        code.version = version
        self.model.operatorCodes.append(code)
        return len(self.model.operatorCodes) - 1

    def operator(self, opcode, inputs, outputs, options_type=0, options=None, custom_options=None):
        op = schema_fb.OperatorT()
        op.opcodeIndex = opcode
        op.inputs = np.asarray(inputs, np.int32)
        op.outputs = np.asarray(outputs, np.int32)
        op.builtinOptionsType = options_type
        op.builtinOptions = options
        if custom_options is not None:
            op.customOptions = np.frombuffer(custom_options, np.uint8).copy()
            op.customOptionsFormat = schema_fb.CustomOptionsFormat.FLEXBUFFERS
        return op

    @staticmethod
    def ports(tfl_op, add):
        """(shape option key, tensor index) of each activation a TFQ operator reads or writes."""
        inputs = zip(_SHAPE_KEYS[:2], tfl_op.inputs[:2 if add else 1])
        return [(key, int(index)) for key, index in inputs] + [(_SHAPE_KEYS[2], int(tfl_op.outputs[0]))]

    def make_custom(self, tfl_op, name, **options):
        """Turn ``tfl_op`` into TFQ_<name> with ``options`` (``custom_ops.encode_options``), plus
        the logical shape of every tensor it reads or writes packed (``input_shape``,
        ``input2_shape``, ``output_shape``): ``pack_activations`` then declares those tensors at
        their byte size."""
        for key, index in self.ports(tfl_op, name == "ADD"):
            if self.grid(index).storage_bits < 8:
                options[key] = [int(d) for d in self.tfl.shape(index)]
        tfl_op.opcodeIndex = self.opcode(custom=_CUSTOM_CODE[name])
        tfl_op.builtinOptionsType = 0
        tfl_op.builtinOptions = None
        tfl_op.customOptions = np.frombuffer(custom_ops.encode_options(options), np.uint8).copy()
        tfl_op.customOptionsFormat = schema_fb.CustomOptionsFormat.FLEXBUFFERS

    def act_options(self, fused, out_index):
        grid = self.grid(out_index)
        act_min, act_max = kernels.activation_range(fused, grid.scale, grid.zero_point, grid.bits)
        return {"output_bits": grid.storage_bits, "act_min": int(act_min), "act_max": int(act_max)}

    def weighted(self, tfl_op, name, op):
        """Our filter codes, scales and int32 bias in place of TF's; builtin or TFQ_* op."""
        codes, scales, bias = self.plan.weights(op)
        x, out = int(tfl_op.inputs[0]), int(tfl_op.outputs[0])
        in_grid, out_grid = self.grid(x), self.grid(out)
        bits = op.weight_bits
        filt = _tfl_layout(op, codes, self.tfl.shape(tfl_op.inputs[1]))
        axis = 3 if name == "DEPTHWISE_CONV_2D" else 0
        scales, bias_ints = _bias_codes(filt, axis, scales.copy(), bias, in_grid.scale, op.name)
        all_8bit = in_grid.bits == 8 and out_grid.bits == 8
        as_conv = (name == "FULLY_CONNECTED" and bits == 4 and all_8bit
                   and self.dense_int4 == "conv_1x1")
        filter_type = {8: schema_fb.TensorType.INT8, 4: schema_fb.TensorType.INT4,
                       2: getattr(schema_fb.TensorType, self.int2_type)}[bits]
        filter_shape = (filt.shape[0], 1, 1, filt.shape[1]) if as_conv else filt.shape
        filter_index = self.add_tensor(f"{op.name}/kernel", filter_shape, filter_type,
                                       self.add_buffer(packing.pack(filt, bits).tobytes()),
                                       _quantization(scales, np.zeros(self.filter_zero_points or scales.size), axis))
        inputs = [x, filter_index]
        has_bias = len(tfl_op.inputs) > 2 and int(tfl_op.inputs[2]) >= 0
        if has_bias or np.any(bias_ints) or name != "FULLY_CONNECTED" or as_conv:
            inputs.append(self.add_tensor(f"{op.name}/bias", [scales.size], schema_fb.TensorType.INT32,
                                          self.add_buffer(bias_ints.astype("<i4").tobytes())))
        elif name == "FULLY_CONNECTED":
            inputs.append(-1)
        tfl_op.inputs = np.asarray(inputs, np.int32)
        if as_conv:
            self.dense_as_conv(tfl_op, op)
            return
        self.operators.append(tfl_op)
        causal = is_causal(op.layer)
        builtin = all_8bit and (bits == 8 or (bits == 4 and name != "FULLY_CONNECTED")) \
            and (not causal or self.causal_int8 == "pad")
        if builtin:
            if causal:
                self.pad_before(tfl_op, causal_padding(op.layer, self.tfl.shape(x)))
            return
        fused = self.plan.fused_activation(op)
        options = {"input_bits": in_grid.storage_bits, "weight_bits": bits,
                   **self.act_options(fused, out)}
        if name != "FULLY_CONNECTED":
            o = tfl_op.builtinOptions
            options.update(stride_h=int(o.strideH), stride_w=int(o.strideW),
                           dilation_h=int(o.dilationHFactor), dilation_w=int(o.dilationWFactor),
                           padding=_PADDINGS[o.padding])
            if is_causal(op.layer):
                options.update(causal_padding(op.layer, self.tfl.shape(x)))
            if name == "DEPTHWISE_CONV_2D":
                options["depth_multiplier"] = int(o.depthMultiplier)
        self.make_custom(tfl_op, name, **options)

    def pad_before(self, tfl_op, padding):
        """A builtin PAD (zeros: the input's zero point) in front of convolution ``tfl_op``, which
        then runs VALID: a causal Conv1D on TFLM builtins, at the cost of a padded copy of its
        input in RAM."""
        x = int(tfl_op.inputs[0])
        like = self.graph.tensors[x]
        shape = list(self.tfl.shape(x))
        shape[1] += padding["pad_h"]
        shape[2] += padding["pad_w"]
        padded = self.add_tensor(f"{_text(like.name)}/causal_pad", shape, like.type, 0,
                                 like.quantization)
        self.tensor_of[padded] = self.tensor_of[x]
        pairs = np.array([[0, 0], [padding["pad_h"], 0], [padding["pad_w"], 0], [0, 0]], "<i4")
        paddings = self.add_tensor(f"{_text(like.name)}/paddings", [4, 2],
                                   schema_fb.TensorType.INT32, self.add_buffer(pairs.tobytes()))
        self.operators.insert(len(self.operators) - 1, self.operator(
            self.opcode(_OPS.PAD), [x, paddings], [padded], schema_fb.BuiltinOptions.PadOptions,
            schema_fb.PadOptionsT()))
        inputs = list(tfl_op.inputs)
        inputs[0] = padded
        tfl_op.inputs = np.asarray(inputs, np.int32)
        tfl_op.builtinOptions.padding = schema_fb.Padding.VALID

    def dense_as_conv(self, tfl_op, op):
        """FULLY_CONNECTED with an INT4 filter as RESHAPE + 1x1 CONV_2D + RESHAPE (TFLM builtins:
        TFLM's FULLY_CONNECTED refuses INT4 filters; the per-channel arithmetic is the same)."""
        x, filt, bias = (int(i) for i in tfl_op.inputs)
        out = int(tfl_op.outputs[0])
        depth = self.tfl.shape(filt)[3]
        batches = int(np.prod(self.tfl.shape(x))) // depth
        x4 = self.reshape(x, (batches, 1, 1, depth), name=f"{op.name}_as_conv")
        like = self.graph.tensors[out]
        out4 = self.add_tensor(f"{_text(like.name)}/conv", (batches, 1, 1, self.tfl.shape(filt)[0]),
                               like.type, 0, like.quantization)
        self.tensor_of[out4] = self.tensor_of[out]
        options = schema_fb.Conv2DOptionsT()
        options.padding = schema_fb.Padding.VALID
        options.strideH = options.strideW = options.dilationHFactor = options.dilationWFactor = 1
        options.fusedActivationFunction = tfl_op.builtinOptions.fusedActivationFunction
        inputs = [x4, filt] + ([bias] if bias >= 0 else [])
        self.operators.append(self.operator(self.opcode(_OPS.CONV_2D), inputs, [out4],
                                            schema_fb.BuiltinOptions.Conv2DOptions, options))
        self.reshape(out4, self.tfl.shape(out), out=out, name=f"{op.name}_out")

    def add(self, tfl_op, op):
        grids = [self.grid(t) for t in list(tfl_op.inputs) + list(tfl_op.outputs)]
        if all(g.bits == 8 for g in grids):
            return
        self.make_custom(tfl_op, "ADD", input_bits=grids[0].storage_bits,
                         input2_bits=grids[1].storage_bits,
                         **self.act_options(self.plan.fused_activation(op), int(tfl_op.outputs[0])))

    def leaky_relu(self, tfl_op, op):
        """TFLM's LEAKY_RELU when 8-bit in and out, else TFQ_LEAKY_RELU (same arithmetic on
        packed tensors, alpha as float32 bits in the options)."""
        x, out = self.grid(int(tfl_op.inputs[0])), self.grid(int(tfl_op.outputs[0]))
        if x.bits == 8 and out.bits == 8:
            return
        self.make_custom(tfl_op, "LEAKY_RELU", input_bits=x.storage_bits,
                         output_bits=out.storage_bits,
                         alpha_bits=custom_ops.float32_bits(leaky_relu_alpha(op.layer)))

    def pool(self, tfl_op, name, fused="NONE"):
        """A builtin when 8-bit in and out on one grid; else TFQ_MAX_POOL_2D (same grid) or
        TFQ_AVERAGE_POOL_2D (requantizes to the output's own grid)."""
        x, out = int(tfl_op.inputs[0]), int(tfl_op.outputs[0])
        gx, go = self.grid(x), self.grid(out)
        if gx.bits == 8 and go.bits == 8 and (gx.scale, gx.zero_point) == (go.scale, go.zero_point):
            return
        o = tfl_op.builtinOptions
        self.make_custom(tfl_op, name, input_bits=self.grid(x).storage_bits,
                         filter_h=int(o.filterHeight), filter_w=int(o.filterWidth),
                         stride_h=int(o.strideH), stride_w=int(o.strideW),
                         padding=_PADDINGS[o.padding], **self.act_options(fused, out))

    def pack_activations(self):
        """Declare every activation stored below 8 bits as INT8 ``[1, packed bytes]``, so TFLM
        allocates (and its planner reserves) its packed size instead of a byte per element.

        The TFQ operators carry the logical shapes in their options (``make_custom``); a shape
        operator between two packed tensors now maps a byte shape onto the same byte shape and
        ``simplify_shape_ops`` drops it. Returns {tensor index: logical shape} of the packed tensors.
        """
        logical = {}
        for index, name in self.tensor_of.items():
            grid = self.plan.grid[name]
            if grid.storage_bits < 8:
                shape = self.tfl.shape(index)
                logical[index] = shape
                nbytes = packing.packed_size(int(np.prod(shape, dtype=np.int64)), grid.storage_bits)
                self.graph.tensors[index].shape = np.asarray([1, nbytes], np.int32)
        return logical

    def declare_innermost_bytes(self, logical):
        """Declare packed tensors at their logical shape with the innermost dimension in bytes
        (``[1, 24, 24, 8]`` for 4-bit ``[1, 24, 24, 16]``) and mark them so in the TFQ operators'
        options (``custom_ops.INNERMOST_BYTES``) instead of repeating their shapes there.

        Only where the bytes are the same: the innermost dimension's values fill whole bytes and
        every operator touching the tensor sees one shape (a flatten folded into a
        FULLY_CONNECTED keeps ``[1, bytes]`` and explicit shapes). Model inputs and outputs keep
        ``[1, bytes]``, the rows ``quantize_input`` writes. The options then repeat across
        operators and are stored once: about 0.5 kB less on MobileNetV1-0.25 at W4A4."""
        protected = {int(i) for i in self.graph.inputs} | {int(i) for i in self.graph.outputs}
        uses = {}
        for op in self.operators:
            if self.tfl.op_name(op) != "CUSTOM":
                continue
            options = custom_ops.decode_options(bytes(op.customOptions))
            add = _text(self.tfl.model.operatorCodes[op.opcodeIndex].customCode) == custom_ops.ADD
            for key, index in self.ports(op, add):
                if index in logical:
                    uses.setdefault(index, []).append((op, options, key))
        rewritten = {}
        for index, refs in uses.items():
            shapes = {tuple(options[key]) for _, options, key in refs}
            shape, bits = next(iter(shapes)), self.grid(index).storage_bits
            if index in protected or len(shapes) != 1 or shape[-1] * bits % 8:
                continue
            self.graph.tensors[index].shape = np.asarray(shape[:-1] + (shape[-1] * bits // 8,), np.int32)
            for op, options, key in refs:
                options[key] = custom_ops.INNERMOST_BYTES
                rewritten[id(op)] = (op, options)
        for op, options in rewritten.values():
            op.customOptions = np.frombuffer(custom_ops.encode_options(options), np.uint8).copy()

    def check_packed_io(self, logical):
        """Only TFQ operators may touch a packed tensor (after ``simplify_shape_ops``)."""
        for op in self.operators:
            name = self.tfl.op_name(op)
            touched = [int(i) for i in list(op.inputs) + list(op.outputs) if int(i) in logical]
            if name != "CUSTOM" and touched:
                raise ExportError(
                    f"internal: the builtin {name} touches packed activation tensor(s) "
                    f"{[self.tfl.name(i) for i in touched]}; only TFQ_* operators read packed bytes.")

    def reshape(self, x, shape, out=None, name="reshape"):
        """RESHAPE ``x`` to ``shape`` (into ``out`` or a new tensor like ``x``); returns the output."""
        if out is None:
            like = self.graph.tensors[x]
            out = self.add_tensor(f"{_text(like.name)}/{name}", shape, like.type, 0, like.quantization)
            self.tensor_of[out] = self.tensor_of[x]
        self.operators.append(self.reshape_op(x, out))
        return out

    def reshape_op(self, x, out):
        """A one-input RESHAPE (the new shape in its options, as TFLM and LiteRT accept)."""
        options = schema_fb.ReshapeOptionsT()
        options.newShape = np.asarray(self.tfl.shape(out), np.int32)
        return self.operator(self.opcode(_OPS.RESHAPE), [x], [out],
                             schema_fb.BuiltinOptions.ReshapeOptions, options)

    def simplify_shape_ops(self):
        """Fold chains of RESHAPE/EXPAND_DIMS/SQUEEZE into one RESHAPE and drop those that do
        not change the shape (TF's Conv1D lowering squeezes and re-expands between layers).
        Packed activations survive any reshape: the bytes are copied in order."""
        protected = {int(i) for i in self.graph.inputs} | {int(i) for i in self.graph.outputs}
        ops = self.operators
        for k, op in enumerate(ops):
            if self.tfl.op_name(op) in _SHAPE_OPS:
                ops[k] = self.reshape_op(int(op.inputs[0]), int(op.outputs[0]))
        changed = True
        while changed:
            changed = False
            names = [self.tfl.op_name(op) for op in ops]
            consumers = Counter(int(i) for op in ops for i in op.inputs if i >= 0)
            producer = {int(op.outputs[0]): k for k, op in enumerate(ops)}
            for k, op in enumerate(ops):
                if names[k] not in _SHAPE_OPS:
                    continue
                src, dst = int(op.inputs[0]), int(op.outputs[0])
                if self.tfl.shape(src) == self.tfl.shape(dst) and dst not in protected:
                    for other in ops:
                        other.inputs = np.asarray([src if int(i) == dst else int(i) for i in other.inputs], np.int32)
                    del ops[k]
                    changed = True
                    break
                first = producer.get(src)
                if first is not None and names[first] in _SHAPE_OPS and consumers[src] == 1 \
                        and src not in protected:
                    ops[k] = self.reshape_op(int(ops[first].inputs[0]), dst)
                    del ops[first]
                    changed = True
                    break

    def mean(self, tfl_op, op):
        """MEAN over the spatial axes as a full-window AVERAGE_POOL_2D (+ RESHAPEs)."""
        x, out = int(tfl_op.inputs[0]), int(tfl_op.outputs[0])
        shape = self.tfl.shape(x)
        if len(shape) == 3:
            shape = (shape[0], 1, shape[1], shape[2])
            x = self.reshape(x, shape, name=f"{op.name}_4d")
        pooled_shape = (shape[0], 1, 1, shape[3])
        if self.tfl.shape(out) == pooled_shape:
            pooled = out
        else:
            like = self.graph.tensors[out]
            pooled = self.add_tensor(f"{_text(like.name)}/pool", pooled_shape, like.type, 0, like.quantization)
            self.tensor_of[pooled] = self.tensor_of[out]
        options = schema_fb.Pool2DOptionsT()
        options.padding = schema_fb.Padding.VALID
        options.strideH = options.strideW = 1
        options.filterHeight, options.filterWidth = int(shape[1]), int(shape[2])
        pool = self.operator(self.opcode(_OPS.AVERAGE_POOL_2D), [x], [pooled],
                             schema_fb.BuiltinOptions.Pool2DOptions, options)
        self.operators.append(pool)
        self.pool(pool, "AVERAGE_POOL_2D")
        if pooled != out:
            self.reshape(pooled, self.tfl.shape(out), out=out, name=f"{op.name}_out")


def _bias_codes(filt, axis, scales, bias, input_scale, layer):
    """int32 bias round(b / (s_in * s_w[c])); an all-zero channel whose bias would overflow
    int32 gets a larger (free) weight scale instead."""
    other = tuple(a for a in range(filt.ndim) if a != axis)
    dead = ~np.any(filt != 0, axis=other).reshape(-1)
    limit = float((1 << 31) - 1)
    product = np.float64(input_scale) * scales.astype(np.float64)
    real = bias.astype(np.float64) / product
    grow = dead & (np.abs(real) > limit / 2)
    if np.any(grow):
        needed = np.abs(bias[grow]).astype(np.float64) / (np.float64(input_scale) * limit / 4)
        scales[grow] = needed.astype(np.float32)
        product = np.float64(input_scale) * scales.astype(np.float64)
        real = bias.astype(np.float64) / product
    if np.any(np.abs(real) > limit):
        raise ExportError(f"layer '{layer}': a bias does not fit int32 with scale input_scale x "
                          "weight_scale; the layer's weight or input scale is degenerate. Re-calibrate.")
    ints = np.sign(real) * np.floor(np.abs(real) + 0.5)
    return scales, ints.astype(np.int64)


def _set_activation_tensors(writer):
    """Our grid on every activation tensor."""
    for index, name in writer.tensor_of.items():
        grid = writer.plan.grid[name]
        tensor = writer.graph.tensors[index]
        tensor.type = schema_fb.TensorType.INT8
        tensor.quantization = _quantization([grid.scale], [grid.zero_point])


def tensor_label(plan, name):
    """The flatbuffer name of our tensor ``name``: the layer that writes it (or the input)."""
    for op in plan.ops:
        if op.output == name:
            return op.name
    return name


def _name_tensors(graph, plan, activations):
    """Activations after their layer (``label``, then ``label#1``... for reshaped copies),
    constants ``<layer>/kernel``, ``<layer>/bias`` or ``const_<index>``."""
    seen = Counter()
    for index, tensor in enumerate(graph.tensors):
        if index in activations:
            label = tensor_label(plan, activations[index])
            tensor.name = label if not seen[label] else f"{label}#{seen[label]}"
            seen[label] += 1
        elif not _text(tensor.name).endswith(("/kernel", "/bias")):
            tensor.name = f"const_{index}"


def _is_empty(buffer):
    return (buffer.data is None or len(buffer.data) == 0) and not buffer.offset


def _compact(model):
    """Drop tensors, buffers and operator codes nothing uses any more; renumber the rest. Every
    tensor without data refers to the empty buffer 0 (TF's converter gives each its own)."""
    graph = model.subgraphs[0]
    if _is_empty(model.buffers[0]):
        for tensor in graph.tensors:
            if _is_empty(model.buffers[int(tensor.buffer)]):
                tensor.buffer = 0
    used = set(int(i) for i in graph.inputs) | set(int(i) for i in graph.outputs)
    for op in graph.operators:
        used |= {int(i) for i in op.inputs if i >= 0} | {int(i) for i in op.outputs}
    order = sorted(used)
    new_index = {old: new for new, old in enumerate(order)}
    graph.tensors = [graph.tensors[i] for i in order]

    def remap(indices):
        return np.asarray([new_index[int(i)] if i >= 0 else -1 for i in indices], np.int32)

    graph.inputs, graph.outputs = remap(graph.inputs), remap(graph.outputs)
    for op in graph.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
    for signature in model.signatureDefs or []:
        for maps in (signature.inputs or [], signature.outputs or []):
            maps[:] = [m for m in maps if int(m.tensorIndex) in new_index]
            for m in maps:
                m.tensorIndex = new_index[int(m.tensorIndex)]
    buffers = ({0} | {int(t.buffer) for t in graph.tensors} | {int(m.buffer) for m in model.metadata or []}
               | {int(b) for b in (model.metadataBuffer if model.metadataBuffer is not None else [])})
    buffer_order = sorted(buffers)
    buffer_index = {old: new for new, old in enumerate(buffer_order)}
    model.buffers = [model.buffers[i] for i in buffer_order]
    for tensor in graph.tensors:
        tensor.buffer = buffer_index[int(tensor.buffer)]
    for entry in model.metadata or []:
        entry.buffer = buffer_index[int(entry.buffer)]
    if model.metadataBuffer is not None:
        model.metadataBuffer = np.asarray([buffer_index[int(b)] for b in model.metadataBuffer
                                           if int(b) in buffer_index], np.int32)
    codes = sorted({int(op.opcodeIndex) for op in graph.operators})
    code_index = {old: new for new, old in enumerate(codes)}
    model.operatorCodes = [model.operatorCodes[i] for i in codes]
    for op in graph.operators:
        op.opcodeIndex = code_index[int(op.opcodeIndex)]
    return new_index


def _fixed_shapes(graph):
    """Drop what a fixed-shape model does not need: ``shape_signature`` (TF's -1 batch; TFLM has
    no dynamic shapes and a packed tensor's byte shape contradicts it) and ``has_rank`` where the
    shape is given (it only marks unranked tensors among those with an empty shape)."""
    for tensor in graph.tensors:
        tensor.shapeSignature = None
        if tensor.shape is not None and len(tensor.shape):
            tensor.hasRank = False


def _add_metadata(model, info):
    buffer = schema_fb.BufferT()
    buffer.data = np.frombuffer(json.dumps(info, sort_keys=True, separators=(",", ":")).encode(), np.uint8).copy()
    model.buffers.append(buffer)
    entry = schema_fb.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    model.metadata.append(entry)


def to_tflite(qmodel, *, input_type="int8", metadata=None, int2_type="INT8", dense_int4="custom",
              litert_compatible=False, strip_strings=False, causal_int8="pad"):
    """Export a quantized tf_keras model (2/4/8-bit weights and activations) to TFLite bytes.

    Args:
      qmodel: a calibrated model from ``tfq_tiny.quantize_model`` (or ``load_model``).
      input_type: "int8" (integer input/output tensors, a sub-8-bit input stored packed) or
        "float32" (QUANTIZE/DEQUANTIZE at the ends; needs an 8-bit input quantizer).
      metadata: an optional JSON-serialisable dict stored under "user" in the ``tfq_tiny``
        metadata entry (next to the BitPolicy, the version and the input/output grids).
      int2_type: how 2-bit filters are typed: "INT8" (packed bytes; what every TFLM accepts)
        or "INT2" (for the tflm_ext glue built with -DTFQ_ACCEPT_TFLITE_INT2).
      dense_int4: a Dense layer with 4-bit weights and 8-bit activations becomes
        "custom" (TFQ_FULLY_CONNECTED) or "conv_1x1" (RESHAPE + CONV_2D with an INT4 filter +
        RESHAPE, all TFLM builtins, same arithmetic), so W4A8 models need no custom operator.
      litert_compatible: write every per-channel filter's zero points in full (one int64 per
        channel), as LiteRT (tf.lite.Interpreter) requires. By default a filter carries one zero
        point for all channels, which TFLM's allocator accepts (its "space-saving optimization"):
        up to 8 bytes per output channel less FLASH (4 kB on MobileNetV1-0.25, whose filters of
        equal channel count share one zero-point vector).
      causal_int8: a causal Conv1D whose input and output are 8-bit deploys as "pad" (TFLM
        builtins PAD + VALID CONV_2D, what TFLite itself emits: stock TFLM runs it, with a
        padded copy of the input in RAM) or "custom" (TFQ_CONV_2D with explicit padding, no
        copy). Below 8 bits it is always TFQ_CONV_2D.
      strip_strings: leave out the strings no interpreter needs: tensor and subgraph names, the
        model description and signature defs (as TFLite's ``strip_strings`` tool does; custom
        codes and the metadata stay). A flash saving for deployment, about 12 B per tensor;
        ``layer_agreement`` needs the names, so check an unstripped export.

    Returns:
      The flatbuffer as bytes; run it with ``tfq_tiny.runtime.interpreter.Interpreter`` or TFLM
      with the ``tflm_ext`` operators registered (plain int8 models need no custom operator).

    Raises:
      BitWidthError for widths outside {2, 4, 8}; ExportError for float activations, a layer
      TFLite cannot express, or a TF output the converter cannot map onto the model.
    """
    if input_type not in INPUT_TYPES:
        raise ExportError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}.")
    if int2_type not in INT2_TYPES:
        raise ExportError(f"int2_type must be one of {INT2_TYPES}, got {int2_type!r}.")
    if dense_int4 not in DENSE_INT4:
        raise ExportError(f"dense_int4 must be one of {DENSE_INT4}, got {dense_int4!r}.")
    if causal_int8 not in CAUSAL_INT8:
        raise ExportError(f"causal_int8 must be one of {CAUSAL_INT8}, got {causal_int8!r}.")
    plan = _Plan(qmodel)
    for name in plan.inputs:
        if input_type == "float32":
            if plan.grid[name].bits != 8:
                raise ExportError(
                    f"input '{name}' is quantized to {plan.grid[name].bits} bits; a float input can "
                    "only feed an 8-bit input tensor (TFLM's QUANTIZE writes int8). Use "
                    "input_type='int8' and tfq_tiny.export.converter.quantize_input().")
            plan.grid[name].storage_bits = 8
    tfl = _Tfl(flatbuffer.read_model(_tf_convert(float_twin(qmodel), plan, input_type)))
    if len(tfl.model.subgraphs) != 1:
        raise ExportError(f"TF's model has {len(tfl.model.subgraphs)} subgraphs; expected 1.")
    op_of, tensor_of = _match(tfl, plan)
    writer = _Writer(tfl, plan, tensor_of, int2_type, dense_int4, litert_compatible, causal_int8)
    for i, tfl_op in enumerate(list(tfl.graph.operators)):
        name = tfl.op_name(tfl_op)
        op = op_of.get(i)
        if name == "MEAN":
            writer.mean(tfl_op, op)
            continue
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            writer.weighted(tfl_op, name, op)
            continue
        writer.operators.append(tfl_op)
        if name == "ADD":
            writer.add(tfl_op, op)
        elif name == "LEAKY_RELU":
            writer.leaky_relu(tfl_op, op)
        elif name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            writer.pool(tfl_op, name)
    _set_activation_tensors(writer)
    io_shapes = {int(i): list(tfl.shape(i)) for i in list(tfl.graph.inputs) + list(tfl.graph.outputs)}
    packed = writer.pack_activations()
    writer.simplify_shape_ops()
    writer.check_packed_io(packed)
    writer.declare_innermost_bytes(packed)
    tfl.graph.operators = writer.operators
    tfl.model.metadata = []
    tfl.model.description = "tfq_tiny"
    renumbered = _compact(tfl.model)
    _fixed_shapes(tfl.graph)
    _name_tensors(tfl.graph, plan, {renumbered[i]: name for i, name in tensor_of.items() if i in renumbered})
    from tfq_tiny import __version__
    old_index = {new: old for old, new in renumbered.items()}

    def io(names, indices):
        return [dict(plan.grid[n].as_dict(), tensor=int(i), shape=io_shapes[old_index[int(i)]])
                for n, i in zip(names, indices)]

    info = {"tfq_tiny_version": __version__, "layout_version": LAYOUT_VERSION,
            "policy": plan.policy().get_config(), "input_type": input_type,
            "inputs": io(plan.inputs, tfl.graph.inputs), "outputs": io(plan.outputs, tfl.graph.outputs)}
    if metadata is not None:
        info["user"] = metadata
    try:
        _add_metadata(tfl.model, json.loads(json.dumps(info)))
    except TypeError as exc:
        raise ExportError(f"metadata must be JSON-serialisable: {exc}") from exc
    if strip_strings:
        _strip_strings(tfl.model)
    return flatbuffer.write_model_aligned(tfl.model)


def strip_strings(model_bytes):
    """``model_bytes`` without the strings no interpreter reads: what ``to_tflite(...,
    strip_strings=True)`` writes, for a flatbuffer exported with its names."""
    model = flatbuffer.read_model(model_bytes)
    _strip_strings(model)
    return flatbuffer.write_model_aligned(model)


def _strip_strings(model):
    """Drop the strings no interpreter reads (names, description, signature defs)."""
    model.description = None
    model.signatureDefs = None
    for graph in model.subgraphs:
        graph.name = None
        for tensor in graph.tensors:
            tensor.name = None


# ---- using an exported model --------------------------------------------------------------------

def read_metadata(model_bytes):
    """The ``tfq_tiny`` metadata dict of an exported flatbuffer (ModelFileError if absent)."""
    model = flatbuffer.read_model(model_bytes)
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_NAME:
            try:
                return json.loads(bytes(np.asarray(model.buffers[entry.buffer].data, np.uint8)).decode())
            except (IndexError, TypeError, ValueError) as exc:
                raise ModelFileError(f"the '{METADATA_NAME}' metadata is unreadable: {exc}") from exc
    raise ModelFileError(f"the flatbuffer has no '{METADATA_NAME}' metadata; it was not written by "
                         "tfq_tiny.export.to_tflite.")


def _io(meta, key, index):
    try:
        return meta[key][index]
    except (KeyError, IndexError, TypeError) as exc:
        raise TfqError(f"the model metadata has no {key[:-1]} {index}.") from exc


def quantize_input(model_or_metadata, x, index=0):
    """Float samples -> what to ``set_tensor`` on input ``index``: int8, or packed bytes.

    Quantizes as the simulated input quantizer does (float32, round half away from zero,
    clamp to the b-bit range). An 8-bit input keeps ``x``'s shape. A sub-8-bit input is packed
    per sample (two int4 or four int2 per byte, first element lowest): one row of
    ``packed bytes`` per sample, ``(samples, bytes)``, which the model's ``[1, bytes]`` input
    tensor takes row by row; its logical shape is the metadata's ``inputs[index]["shape"]``.
    (Layout 1 exports, without that shape, get memory images of ``x``'s shape instead.)
    ``x`` has the model's input shape or a batch of them.
    """
    meta = model_or_metadata if isinstance(model_or_metadata, dict) else read_metadata(model_or_metadata)
    grid = _io(meta, "inputs", index)
    scale = np.float32(grid["scale"])
    scaled = np.asarray(x, np.float32) / scale
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5))
    qmin, qmax = int_range(grid["bits"])
    values = np.clip(rounded + grid["zero_point"], qmin, qmax).astype(np.int8)
    bits = grid["storage_bits"]
    if bits == 8:
        return values
    if "shape" not in grid:
        return np.stack([custom_ops.pack_storage(v, bits) for v in values])
    per_sample = int(np.prod(grid["shape"][1:], dtype=np.int64))
    if values.size % per_sample:
        raise TfqError(f"input '{grid['name']}' has logical shape {grid['shape']}; got samples of shape "
                       f"{list(values.shape)}, not a whole number of them.")
    return np.stack([packing.pack(v, bits).view(np.int8) for v in values.reshape(-1, per_sample)])


def dequantize_output(model_or_metadata, y, index=0):
    """Output ``index``'s stored integers -> float (``(q - zero_point) * scale``)."""
    meta = model_or_metadata if isinstance(model_or_metadata, dict) else read_metadata(model_or_metadata)
    grid = _io(meta, "outputs", index)
    values = np.asarray(y)
    if grid["storage_bits"] != 8:
        bits = grid["storage_bits"]
        if "shape" in grid:  # rows of packed bytes, as the [1, bytes] output tensor holds them
            rows = values.reshape(-1, values.shape[-1])
            values = np.stack([custom_ops.unpack_storage(r, bits, grid["shape"][1:]) for r in rows])
        else:
            values = np.stack([custom_ops.unpack_storage(v, bits) for v in values])
    return ((values.astype(np.float64) - grid["zero_point"]) * np.float64(np.float32(grid["scale"]))).astype(np.float32)


def layer_agreement(qmodel, model_bytes, x, kernels="numpy"):
    """Per deployed layer: how often the integer model and the fake-quant layer agree.

    Runs the exported model on ``x`` (float samples) in the shim, then feeds every layer of the
    fake-quant model the *integer model's own* (dequantized) inputs and compares its output with
    the integer output, in steps of the layer's output grid. This is the numeric contract
    checked layer by layer, free of the compounding of earlier one-step differences.

    Returns {layer name: {"elements", "within_one_step", "exact", "max_steps"}}.
    """
    from tfq_tiny.runtime.interpreter import Interpreter

    plan = _Plan(qmodel)
    meta = read_metadata(model_bytes)
    shim = Interpreter(model_content=model_bytes, kernels=kernels)
    by_name = {t["name"]: t["index"] for t in shim.tensors}
    if not any(by_name):
        raise ExportError("the flatbuffer has no tensor names (exported with strip_strings=True); "
                          "check the agreement on an export that keeps them.")
    first_index = {}
    for name in plan.grid:
        label = tensor_label(plan, name)
        if label not in by_name:
            raise ExportError(f"the flatbuffer has no tensor named '{label}'; was it exported from this model?")
        first_index[name] = by_name[label]
    x = np.asarray(x, np.float32)
    stored = {name: [] for name in first_index}
    for row in quantize_input(meta, x):
        shim.run(row[None])
        for name, index in first_index.items():
            stored[name].append(shim.get_tensor(index))
    ints = {}
    for name, images in stored.items():
        grid = plan.grid[name]
        values = [custom_ops.unpack_storage(v, grid.storage_bits, plan.tensors[name].shape)
                  if grid.storage_bits < 8 else v for v in images]
        ints[name] = np.stack([v.reshape(plan.tensors[name].shape) for v in values]).astype(np.int64)

    def real(name):
        grid = plan.grid[name]
        return ((ints[name] - grid.zero_point).astype(np.float32) * grid.scale).astype(np.float32)

    wrappers = {layer.layer.name: layer for layer in qmodel.layers if isinstance(layer, QuantizeWrapper)}
    report = {}
    for op in plan.ops:
        chain = [wrappers.get(op.name, op.layer)] + [wrappers[name] for name in op.fused]
        shapes = chain[0].input_shape if isinstance(chain[0].input_shape, list) else [chain[0].input_shape]
        value = [tf.constant(real(n).reshape((-1,) + tuple(shape[1:]))) for n, shape in zip(op.inputs, shapes)]
        value = value if len(value) > 1 else value[0]
        for layer in chain:
            value = layer(value, training=False)
        grid = plan.grid[op.output]
        steps = np.abs(ints[op.output] - (np.asarray(value, np.float64) / np.float64(grid.scale)
                                          + grid.zero_point))
        report[op.name] = {"elements": int(steps.size),
                           "within_one_step": float(np.mean(steps <= 1 + 1e-3)),
                           "exact": float(np.mean(steps <= 0.5)), "max_steps": float(steps.max())}
    return report


__all__ = ["ExportError", "dequantize_output", "float_twin", "layer_agreement", "policy_of", "quantize_input",
           "read_metadata", "to_tflite"]
