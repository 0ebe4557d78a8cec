"""A readable TFLite interpreter over the NumPy integer kernels: the documented reference.

``Interpreter`` loads a flatbuffer, validates all of it up front (indices, shapes against
buffer sizes, types, quantization, every operator's parameters, the order in which tensors
are written and read) and prepares each operator the way TFLM's Prepare does, so that a
truncated or corrupted file fails at load time with a ``ModelFileError`` naming what is
wrong. ``invoke`` then runs the operators in order and keeps every tensor for inspection.

Packed INT4/INT2 constant tensors are unpacked with ``export.packing.unpack`` at load; all
integer tensors are held unpacked (int8 for 2-8 bits, int32 for INT32).

Operators are prepared by functions ``prepare(node) -> eval`` where ``eval(inputs) ->
outputs`` works on NumPy arrays. Builtins are registered below; tfq_tiny's own custom
operators are added with ``register_custom_op``.
"""
import os
from dataclasses import dataclass, field

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema_fb

from tfq_tiny.errors import ModelFileError, TfqError
from tfq_tiny.export import packing
from tfq_tiny.export import flatbuffer
from tfq_tiny.quantization.grid import int_range
from tfq_tiny.runtime import arithmetic as ar
from tfq_tiny.runtime import kernels

SCHEMA_VERSION = 3
MAX_TENSOR_ELEMENTS = 1 << 24
MAX_RANK = 6

_TYPES = {
    schema_fb.TensorType.FLOAT32: ("FLOAT32", np.float32, None),
    schema_fb.TensorType.INT32: ("INT32", np.int32, 32),
    schema_fb.TensorType.INT8: ("INT8", np.int8, 8),
    schema_fb.TensorType.INT4: ("INT4", np.int8, 4),
    schema_fb.TensorType.INT2: ("INT2", np.int8, 2),
}
_BUILTIN_NAMES = {v: k for k, v in vars(schema_fb.BuiltinOperator).items() if not k.startswith("_")}
_ACTIVATION_NAMES = {v: k for k, v in vars(schema_fb.ActivationFunctionType).items() if not k.startswith("_")}
_PADDING_NAMES = {schema_fb.Padding.SAME: "SAME", schema_fb.Padding.VALID: "VALID"}


@dataclass
class TensorInfo:
    """One tensor of the model: static description plus, for constants, its unpacked values."""

    index: int
    name: str
    shape: tuple
    type: str
    dtype: type
    bits: int
    scales: np.ndarray = None
    zero_points: np.ndarray = None
    quantized_dimension: int = 0
    data: np.ndarray = field(default=None, repr=False)
    packed: bool = False

    @property
    def is_constant(self):
        return self.data is not None

    @property
    def quantized(self):
        return self.scales is not None and self.scales.size > 0

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def scale(self):
        """The single (per-tensor) scale; ModelFileError if missing or per-channel."""
        if not self.quantized or self.scales.size != 1:
            raise ModelFileError(f"tensor {self.index} ({self.name!r}) needs one per-tensor scale.")
        return float(self.scales[0])

    def zero_point(self):
        return int(self.zero_points[0]) if self.quantized else 0

    def as_dict(self):
        return {
            "index": self.index, "name": self.name, "shape": self.shape, "type": self.type,
            "bits": self.bits, "scales": self.scales, "zero_points": self.zero_points,
            "quantized_dimension": self.quantized_dimension, "constant": self.is_constant,
        }


class _OperatorError(ModelFileError):
    """A ModelFileError whose message already names the operator."""


@dataclass
class Node:
    """What a prepare function sees: one operator with its tensors and options."""

    index: int
    op_name: str
    inputs: list
    outputs: list
    options: object = None
    custom_options: bytes = None

    def fail(self, message):
        raise _OperatorError(f"operator #{self.index} ({self.op_name}): {message}")

    def check(self, condition, message):
        if not condition:
            self.fail(message)

    def arity(self, min_inputs, max_inputs, outputs=1):
        n_in = len(self.inputs)
        self.check(min_inputs <= n_in <= max_inputs,
                   f"takes {min_inputs}..{max_inputs} inputs, has {n_in}.")
        self.check(len(self.outputs) == outputs, f"has {len(self.outputs)} outputs, expected {outputs}.")
        for i, t in enumerate(self.inputs[:min_inputs]):
            self.check(t is not None, f"required input {i} is missing.")

    def opts(self, options_class):
        if self.options is None:
            return options_class()
        self.check(isinstance(self.options, options_class),
                   f"has options of type {type(self.options).__name__}, expected {options_class.__name__}.")
        return self.options


_BUILTINS = {}
_CUSTOM_OPS = {}


def _builtin(*names):
    def register(fn):
        for name in names:
            _BUILTINS[getattr(schema_fb.BuiltinOperator, name)] = fn
        return fn
    return register


def register_custom_op(custom_code, fn=None):
    """Register ``fn(node) -> eval`` for custom operators with ``custom_code``.

    ``fn`` runs at load time with a ``Node`` (validate there, raising through
    ``node.fail``/``node.check``) and returns ``eval(inputs) -> list of outputs`` on NumPy
    arrays. Works as a plain call or as a decorator: ``@register_custom_op("TFQ_X")``.
    """
    if not isinstance(custom_code, str) or not custom_code:
        raise TfqError(f"custom_code must be a non-empty string, got {custom_code!r}.")

    def register(f):
        if not callable(f):
            raise TfqError(f"custom op {custom_code!r} needs a callable, got {f!r}.")
        _CUSTOM_OPS[custom_code] = f
        return f

    return register if fn is None else register(fn)


def unregister_custom_op(custom_code):
    _CUSTOM_OPS.pop(custom_code, None)


def registered_custom_ops():
    return sorted(_CUSTOM_OPS)


def supported_builtins():
    return sorted(_BUILTIN_NAMES[c] for c in _BUILTINS)


class Interpreter:
    """tf.lite.Interpreter-like runner for int8/int4/int2 TFLite models on the NumPy kernels.

    ``Interpreter(model_content=bytes)`` or ``Interpreter(model_path=str)``; optional
    ``custom_ops={code: prepare_fn}`` adds custom operators for this instance only.
    ``kernels="native"`` runs tfq_tiny's TFQ_* custom operators on the C++ kernels of
    ``tflm_ext`` (through ``runtime.native``) instead of the NumPy references.
    """

    def __init__(self, model_content=None, model_path=None, custom_ops=None, kernels="numpy"):
        if (model_content is None) == (model_path is None):
            raise TfqError("give exactly one of model_content (bytes) or model_path (str).")
        if model_path is not None:
            try:
                with open(os.fspath(model_path), "rb") as f:
                    model_content = f.read()
            except OSError as exc:
                raise ModelFileError(f"cannot read model file {model_path!r}: {exc}") from exc
        if not isinstance(model_content, (bytes, bytearray, memoryview)):
            raise TfqError(f"model_content must be bytes, got {type(model_content).__name__}.")
        self._bytes = bytes(model_content)
        self._custom_ops = dict(_CUSTOM_OPS)
        self._custom_ops.update(_tfq_ops(kernels))
        self._custom_ops.update(custom_ops or {})
        self._model = flatbuffer.read_model(self._bytes)
        self._load()
        self._values = {}

    def _load(self):
        model = self._model
        if model.version != SCHEMA_VERSION:
            raise ModelFileError(f"model schema version is {model.version}, expected {SCHEMA_VERSION}.")
        if not model.subgraphs:
            raise ModelFileError("the model has no subgraph.")
        if len(model.subgraphs) > 1:
            raise ModelFileError(
                f"the model has {len(model.subgraphs)} subgraphs; the reference runtime runs single-subgraph models."
            )
        graph = model.subgraphs[0]
        buffers = model.buffers if model.buffers is not None else []
        raw_tensors = graph.tensors if graph.tensors is not None else []
        self._tensors = [self._load_tensor(i, t, buffers) for i, t in enumerate(raw_tensors)]
        self._inputs = self._tensor_list(graph.inputs, "subgraph inputs")
        self._outputs = self._tensor_list(graph.outputs, "subgraph outputs")
        self._plan = self._prepare_operators(model, graph)

    def _tensor_list(self, indices, what):
        indices = [] if indices is None else [int(i) for i in indices]
        for i in indices:
            if not 0 <= i < len(self._tensors):
                raise ModelFileError(f"{what} refer to tensor {i}, but the model has {len(self._tensors)} tensors.")
        if len(set(indices)) != len(indices):
            raise ModelFileError(f"{what} list a tensor twice: {indices}.")
        return indices

    def _load_tensor(self, index, t, buffers):
        def bad(message):
            raise ModelFileError(f"tensor {index} ({name!r}): {message}")

        name = t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else str(t.name or "")
        if t.type not in _TYPES:
            bad(f"type {t.type} is not supported; supported types: {[v[0] for v in _TYPES.values()]}.")
        type_name, dtype, bits = _TYPES[t.type]
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        if len(shape) > MAX_RANK or any(d < 0 for d in shape):
            bad(f"shape {list(shape)} is invalid (rank <= {MAX_RANK}, no negative dimensions).")
        count = int(np.prod(shape, dtype=np.float64)) if shape else 1
        if count > MAX_TENSOR_ELEMENTS:
            bad(f"has {count} elements, more than the reference runtime's limit of {MAX_TENSOR_ELEMENTS}.")
        info = TensorInfo(index, name, shape, type_name, dtype, bits)
        self._load_quantization(info, t.quantization, bad)
        if t.isVariable:
            bad("variable tensors are not supported.")
        if not 0 <= t.buffer < len(buffers):
            bad(f"refers to buffer {t.buffer}, but the model has {len(buffers)} buffers.")
        raw = self._buffer_bytes(buffers[t.buffer], t.buffer, bad)
        if raw is not None and raw.size:
            if bits in (2, 4):
                expected = packing.packed_size(count, bits)
            else:
                expected = count * np.dtype(dtype).itemsize
            packed_image = bits == 8 and raw.size < expected and raw.size in (
                packing.packed_size(count, 4), packing.packed_size(count, 2))
            if raw.size != expected and not packed_image:
                bad(f"buffer {t.buffer} holds {raw.size} bytes but shape {list(shape)} of {type_name} needs {expected}.")
            if packed_image:
                info.data = _packed_image(raw, shape)
                info.packed = True
            elif bits in (2, 4):
                info.data = packing.unpack(raw, bits, count).reshape(shape)
            else:
                info.data = raw.view(np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
        return info

    def _buffer_bytes(self, buffer, buffer_index, bad):
        if buffer.offset and buffer.offset > 1:
            end = int(buffer.offset) + int(buffer.size)
            if end > len(self._bytes):
                bad(f"buffer {buffer_index} points past the end of the file ({end} > {len(self._bytes)}).")
            return np.frombuffer(self._bytes, dtype=np.uint8, count=int(buffer.size), offset=int(buffer.offset))
        if buffer.data is None:
            return None
        return np.asarray(buffer.data, dtype=np.uint8).reshape(-1)

    @staticmethod
    def _load_quantization(info, q, bad):
        if q is None or q.scale is None or len(q.scale) == 0:
            if q is not None and q.zeroPoint is not None and len(q.zeroPoint):
                bad("has zero points but no scales.")
            return
        scales = np.asarray(q.scale, dtype=np.float32).reshape(-1)
        zps = np.zeros(scales.shape, np.int64) if q.zeroPoint is None else np.asarray(q.zeroPoint, np.int64).reshape(-1)
        if zps.size == 1 and scales.size > 1:
            zps = np.repeat(zps, scales.size)  # TFLM's space saving: one zero point for all channels
        if zps.size != scales.size:
            bad(f"has {scales.size} scales but {zps.size} zero points.")
        if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            bad("has a scale that is not a finite positive number.")
        axis = int(q.quantizedDimension)
        if scales.size > 1:
            if not 0 <= axis < len(info.shape) or info.shape[axis] != scales.size:
                bad(f"has {scales.size} per-channel scales, which do not match dimension {axis} of shape {list(info.shape)}.")
        if info.bits is not None and info.bits <= 8:
            lo, hi = int_range(info.bits)
            if np.any(zps < lo) or np.any(zps > hi):
                bad(f"has a zero point outside the {info.type} range [{lo}, {hi}].")
        info.scales, info.zero_points, info.quantized_dimension = scales, zps, axis

    def _prepare_operators(self, model, graph):
        codes = model.operatorCodes if model.operatorCodes is not None else []
        written = set(self._inputs) | {t.index for t in self._tensors if t.is_constant}
        for i in self._inputs:
            if self._tensors[i].is_constant:
                raise ModelFileError(f"subgraph input tensor {i} is a constant.")
        plan = []
        for op_index, op in enumerate(graph.operators if graph.operators is not None else []):
            if not 0 <= op.opcodeIndex < len(codes):
                raise ModelFileError(
                    f"operator #{op_index} uses operator code {op.opcodeIndex}, but the model has {len(codes)}.")
            code = codes[op.opcodeIndex]
            builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
            if builtin == schema_fb.BuiltinOperator.CUSTOM:
                custom = code.customCode.decode("utf-8", "replace") if isinstance(code.customCode, bytes) else str(code.customCode)
                op_name, prepare = f"CUSTOM {custom!r}", self._custom_ops.get(custom)
                if prepare is None:
                    raise ModelFileError(
                        f"operator #{op_index} is the custom op {custom!r}, which is not registered; "
                        f"registered custom ops: {sorted(self._custom_ops)}. Use register_custom_op().")
            else:
                op_name = _BUILTIN_NAMES.get(builtin, f"builtin code {builtin}")
                prepare = _BUILTINS.get(builtin)
                if prepare is None:
                    raise ModelFileError(
                        f"operator #{op_index} is {op_name}, which the reference runtime does not support; "
                        f"supported builtins: {supported_builtins()}.")
            inputs = self._op_tensors(op.inputs, op_index, op_name, "input", allow_optional=True)
            outputs = self._op_tensors(op.outputs, op_index, op_name, "output", allow_optional=False)
            for t in inputs:
                if t is not None and t.index not in written:
                    raise ModelFileError(
                        f"operator #{op_index} ({op_name}) reads tensor {t.index} before anything writes it.")
            for t in outputs:
                if t.index in written:
                    raise ModelFileError(
                        f"operator #{op_index} ({op_name}) writes tensor {t.index}, which is already an input, "
                        "a constant or another operator's output.")
                written.add(t.index)
            custom_options = None if op.customOptions is None else bytes(np.asarray(op.customOptions, np.uint8))
            node = Node(op_index, op_name, inputs, outputs, op.builtinOptions, custom_options)
            try:
                run = prepare(node)
            except _OperatorError:
                raise
            except (ValueError, ArithmeticError) as exc:
                raise ModelFileError(f"operator #{op_index} ({op_name}): {exc}") from exc
            if not callable(run):
                raise ModelFileError(f"operator #{op_index} ({op_name}): prepare did not return a callable.")
            plan.append((node, run))
        for i in self._outputs:
            if i not in written:
                raise ModelFileError(f"subgraph output tensor {i} is never written.")
        return plan

    def _op_tensors(self, indices, op_index, op_name, what, allow_optional):
        result = []
        for i in ([] if indices is None else [int(v) for v in indices]):
            if i == -1 and allow_optional:
                result.append(None)
            elif 0 <= i < len(self._tensors):
                result.append(self._tensors[i])
            else:
                raise ModelFileError(
                    f"operator #{op_index} ({op_name}) has {what} tensor {i}, but the model has "
                    f"{len(self._tensors)} tensors.")
        return result

    @staticmethod
    def _details(t):
        scale = float(t.scales[0]) if t.quantized else 0.0
        return {
            "name": t.name,
            "index": t.index,
            "shape": np.array(t.shape, dtype=np.int32),
            "shape_signature": np.array(t.shape, dtype=np.int32),
            "dtype": t.dtype,
            "bits": t.bits,
            "quantization": (scale, t.zero_point()),
            "quantization_parameters": {
                "scales": t.scales if t.quantized else np.zeros(0, np.float32),
                "zero_points": t.zero_points.astype(np.int32) if t.quantized else np.zeros(0, np.int32),
                "quantized_dimension": t.quantized_dimension,
            },
            "sparsity_parameters": {},
        }

    def allocate_tensors(self):
        """Present for tf.lite.Interpreter compatibility; everything is prepared at load."""

    def get_input_details(self):
        return [self._details(self._tensors[i]) for i in self._inputs]

    def get_output_details(self):
        return [self._details(self._tensors[i]) for i in self._outputs]

    def get_tensor_details(self):
        return [self._details(t) for t in self._tensors]

    @property
    def tensors(self):
        """Every tensor as a dict: index, name, shape, type, bits, scales, zero_points, ..."""
        return [t.as_dict() for t in self._tensors]

    @property
    def operators(self):
        return [(node.index, node.op_name) for node, _ in self._plan]

    def _check_index(self, index):
        if not isinstance(index, (int, np.integer)) or not 0 <= int(index) < len(self._tensors):
            raise TfqError(f"tensor index {index!r} is out of range [0, {len(self._tensors)}).")
        return int(index)

    def set_tensor(self, index, value):
        """Set a subgraph input tensor; values must have its shape and fit its type."""
        index = self._check_index(index)
        if index not in self._inputs:
            raise TfqError(f"tensor {index} is not a subgraph input; inputs are {self._inputs}.")
        t = self._tensors[index]
        value = np.asarray(value)
        if tuple(value.shape) != t.shape:
            raise TfqError(f"input tensor {index} ({t.name!r}) has shape {list(t.shape)}, got {list(value.shape)}.")
        if t.bits is None:
            self._values[index] = value.astype(np.float32)
            return
        if value.dtype.kind not in "iu":
            raise TfqError(f"input tensor {index} ({t.name!r}) is {t.type}; give integer values, got {value.dtype}.")
        lo, hi = int_range(t.bits) if t.bits <= 8 else (ar.INT32_MIN, ar.INT32_MAX)
        if value.size and (value.min() < lo or value.max() > hi):
            raise TfqError(f"input tensor {index} ({t.name!r}) is {t.type}; values must lie in [{lo}, {hi}].")
        self._values[index] = value.astype(t.dtype)

    def get_tensor(self, index):
        """A copy of any tensor's value: constants always, others after ``invoke``."""
        index = self._check_index(index)
        t = self._tensors[index]
        if t.is_constant:
            return t.data.copy()
        if index not in self._values:
            raise TfqError(f"tensor {index} ({t.name!r}) has no value yet: set the inputs and call invoke().")
        return self._values[index].copy()

    def invoke(self):
        """Run every operator in order; all intermediate tensors stay readable."""
        missing = [i for i in self._inputs if i not in self._values]
        if missing:
            raise TfqError(f"input tensors {missing} are not set; call set_tensor() first.")
        values = {i: self._values[i] for i in self._inputs}
        for node, run in self._plan:
            args = [None if t is None else (t.data if t.is_constant else values[t.index]) for t in node.inputs]
            results = run(args)
            if not isinstance(results, (list, tuple)) or len(results) != len(node.outputs):
                raise TfqError(f"operator #{node.index} ({node.op_name}) returned {type(results).__name__}, "
                               f"expected a list of {len(node.outputs)} arrays.")
            for t, result in zip(node.outputs, results):
                values[t.index] = self._store(node, t, result)
        self._values = values

    @staticmethod
    def _store(node, t, result):
        result = np.asarray(result)
        if result.size != t.size:
            raise TfqError(f"operator #{node.index} ({node.op_name}) produced {result.size} values for tensor "
                           f"{t.index} of shape {list(t.shape)}.")
        result = result.reshape(t.shape)
        if t.bits is not None and t.bits <= 8:
            lo, hi = int_range(t.bits)
            if result.size and (result.min() < lo or result.max() > hi):
                raise TfqError(f"operator #{node.index} ({node.op_name}) produced values outside the {t.type} "
                               f"range [{lo}, {hi}] for tensor {t.index}.")
        return result.astype(t.dtype)

    def run(self, *inputs):
        """Run a batch: one array per model input, returns the list of output arrays.

        When the model's batch dimension is 1 and an input has more rows, the rows are run
        one at a time and the outputs stacked along axis 0.
        """
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if len(inputs) != len(self._inputs):
            raise TfqError(f"the model has {len(self._inputs)} inputs, got {len(inputs)} arrays.")
        arrays = [np.asarray(x) for x in inputs]
        shapes = [self._tensors[i].shape for i in self._inputs]
        if all(tuple(a.shape) == s for a, s in zip(arrays, shapes)):
            return self._run_once(arrays)
        batched = all(len(s) >= 1 and s[0] == 1 and a.ndim == len(s) and tuple(a.shape[1:]) == s[1:]
                      for a, s in zip(arrays, shapes))
        rows = {a.shape[0] for a in arrays} if arrays else set()
        if not batched or len(rows) != 1:
            raise TfqError(f"input shapes {[list(a.shape) for a in arrays]} do not match the model's "
                           f"{[list(s) for s in shapes]} (or a batch of them when the batch dimension is 1).")
        per_row = [self._run_once([a[r:r + 1] for a in arrays]) for r in range(rows.pop())]
        return [np.concatenate([out[k] for out in per_row], axis=0) for k in range(len(self._outputs))]

    def _run_once(self, arrays):
        for i, a in zip(self._inputs, arrays):
            self.set_tensor(i, a)
        self.invoke()
        return [self.get_tensor(i) for i in self._outputs]


def _packed_image(raw, shape):
    """An INT8 constant whose buffer holds fewer bytes than elements: packed 4- or 2-bit values
    (the custom-op contract's INT8 storage of sub-byte tensors). Kept as TFLM sees it: the
    bytes first, then zeros, in an int8 array of the tensor's shape."""
    image = np.zeros(int(np.prod(shape, dtype=np.int64)), np.uint8)
    image[:raw.size] = raw
    return image.view(np.int8).reshape(shape)


def _tfq_ops(kernels_backend):
    """tfq_tiny's TFQ_* prepare functions for ``kernels_backend`` ("numpy" or "native")."""
    if kernels_backend not in ("numpy", "native"):
        raise TfqError(f'kernels must be "numpy" or "native", got {kernels_backend!r}.')
    from tfq_tiny.runtime import custom_ops
    return custom_ops.prepare_functions(kernels_backend)


def _activation(node, code):
    name = _ACTIVATION_NAMES.get(code)
    node.check(name in kernels.ACTIVATIONS,
               f"fused activation {name or code} is not supported; supported: {list(kernels.ACTIVATIONS)}.")
    return name


def _padding(node, code):
    node.check(code in _PADDING_NAMES, f"padding code {code} is not SAME (0) or VALID (1).")
    return _PADDING_NAMES[code]


def _int_tensor(node, t, what, bits=(2, 4, 8)):
    node.check(t.bits in bits, f"{what} (tensor {t.index}) is {t.type}; expected a {bits}-bit integer tensor.")
    node.check(not t.packed, f"{what} (tensor {t.index}) holds packed sub-byte values in an INT8 buffer; "
                             "only tfq_tiny's TFQ_* custom operators read those.")
    node.check(t.quantized, f"{what} (tensor {t.index}) has no quantization parameters.")


def _per_tensor(node, t, what):
    _int_tensor(node, t, what)
    node.check(t.scales.size == 1, f"{what} (tensor {t.index}) must be quantized per tensor.")
    return t.scale(), t.zero_point()


def _rank(node, t, rank, what):
    node.check(len(t.shape) == rank, f"{what} (tensor {t.index}) must be {rank}-D, has shape {list(t.shape)}.")


def _constant_filter(node, t, channels, channel_axis):
    node.check(t.is_constant, f"filter (tensor {t.index}) must be a constant.")
    _int_tensor(node, t, "filter")
    node.check(t.scales.size in (1, channels), f"filter has {t.scales.size} scales for {channels} channels.")
    if t.scales.size > 1:
        node.check(t.quantized_dimension == channel_axis,
                   f"filter is quantized along dimension {t.quantized_dimension}, expected {channel_axis}.")
    node.check(not np.any(t.zero_points), "filter zero points must be 0 (symmetric weights).")
    return np.broadcast_to(t.scales.astype(np.float64), (channels,))


def _bias(node, t, channels):
    if t is None:
        return None
    node.check(t.is_constant and t.type == "INT32", f"bias (tensor {t.index}) must be a constant INT32 tensor.")
    node.check(t.size == channels, f"bias has {t.size} values for {channels} output channels.")
    return t.data.reshape(-1).astype(np.int64)


def _conv_multipliers(input_scale, filter_scales, output_scale):
    reals = [float(np.float32(input_scale)) * float(s) / float(np.float32(output_scale)) for s in filter_scales]
    return ar.quantize_multiplier_array(reals)


def _window(node, x, out, filter_hw, opts, dilation=(1, 1)):
    stride = (int(opts.strideH), int(opts.strideW))
    node.check(min(stride) >= 1, f"strides {list(stride)} must be >= 1.")
    node.check(min(dilation) >= 1, f"dilations {list(dilation)} must be >= 1.")
    node.check(min(filter_hw) >= 1, f"filter size {list(filter_hw)} must be >= 1.")
    padding = _padding(node, opts.padding)
    pad, out_hw = kernels.compute_padding(x.shape[1:3], filter_hw, stride, dilation, padding)
    node.check(min(out_hw) >= 1, f"output size {list(out_hw)} is empty for input {list(x.shape)}.")
    return stride, pad, out_hw


@_builtin("CONV_2D")
def _prepare_conv_2d(node):
    node.arity(2, 3)
    x, w, b = (node.inputs + [None])[:3]
    out = node.outputs[0]
    for t, what in ((x, "input"), (w, "filter"), (out, "output")):
        _rank(node, t, 4, what)
    opts = node.opts(schema_fb.Conv2DOptionsT)
    channels, kh, kw, filter_depth = w.shape
    node.check(filter_depth >= 1 and x.shape[3] % filter_depth == 0 and channels % (x.shape[3] // filter_depth) == 0,
               f"filter depth {filter_depth} does not divide input depth {x.shape[3]} into valid groups.")
    common = _windowed_filter(node, x, w, b, out, opts, channels, (kh, kw), 0)
    weights = w.data

    def run(args):
        return [kernels.conv_2d(args[0], weights, **common)]
    return run


def _windowed_filter(node, x, w, b, out, opts, channels, kernel, filter_axis):
    """What CONV_2D and DEPTHWISE_CONV_2D prepare alike: the filter's per-channel scales, bias,
    window (stride, padding, output size, checked against the output tensor), requantization
    multipliers and the fused activation's clamp, as keyword arguments of the kernel."""
    in_scale, in_zp = _per_tensor(node, x, "input")
    out_scale, out_zp = _per_tensor(node, out, "output")
    filter_scales = _constant_filter(node, w, channels, filter_axis)
    bias = _bias(node, b, channels)
    dilation = (int(opts.dilationHFactor), int(opts.dilationWFactor))
    stride, pad, out_hw = _window(node, x, out, kernel, opts, dilation)
    node.check(out.shape == (x.shape[0],) + out_hw + (channels,),
               f"output shape {list(out.shape)} != computed {[x.shape[0], *out_hw, channels]}.")
    mult, shift = _conv_multipliers(in_scale, filter_scales, out_scale)
    act_min, act_max = kernels.activation_range(_activation(node, opts.fusedActivationFunction),
                                                out_scale, out_zp, out.bits)
    return dict(bias=bias, input_zp=in_zp, output_zp=out_zp, out_multiplier=mult, out_shift=shift,
                act_min=act_min, act_max=act_max, stride=stride, dilation=dilation, pad=pad,
                out_hw=out_hw)


@_builtin("DEPTHWISE_CONV_2D")
def _prepare_depthwise_conv_2d(node):
    node.arity(2, 3)
    x, w, b = (node.inputs + [None])[:3]
    out = node.outputs[0]
    for t, what in ((x, "input"), (w, "filter"), (out, "output")):
        _rank(node, t, 4, what)
    opts = node.opts(schema_fb.DepthwiseConv2DOptionsT)
    one, kh, kw, channels = w.shape
    in_depth = x.shape[3]
    node.check(one == 1 and in_depth >= 1 and channels % in_depth == 0 and channels >= in_depth,
               f"filter shape {list(w.shape)} does not fit input depth {in_depth}.")
    multiplier = channels // in_depth
    node.check(int(opts.depthMultiplier) == multiplier,
               f"depth_multiplier option is {opts.depthMultiplier} but the shapes imply {multiplier}.")
    common = _windowed_filter(node, x, w, b, out, opts, channels, (kh, kw), 3)
    weights = w.data

    def run(args):
        return [kernels.depthwise_conv_2d(args[0], weights, depth_multiplier=multiplier, **common)]
    return run


@_builtin("FULLY_CONNECTED")
def _prepare_fully_connected(node):
    node.arity(2, 3)
    x, w, b = (node.inputs + [None])[:3]
    out = node.outputs[0]
    opts = node.opts(schema_fb.FullyConnectedOptionsT)
    node.check(opts.weightsFormat == schema_fb.FullyConnectedOptionsWeightsFormat.DEFAULT,
               "only the DEFAULT weights format is supported.")
    _rank(node, w, 2, "weights")
    in_scale, in_zp = _per_tensor(node, x, "input")
    out_scale, out_zp = _per_tensor(node, out, "output")
    channels, depth = w.shape
    node.check(w.is_constant, f"weights (tensor {w.index}) must be a constant.")
    _int_tensor(node, w, "weights")
    node.check(w.scales.size in (1, channels), f"weights have {w.scales.size} scales for {channels} outputs.")
    node.check(w.scales.size == 1 or w.quantized_dimension == 0, "per-channel weights must be quantized along dimension 0.")
    node.check(w.scales.size == 1 or not np.any(w.zero_points), "per-channel weights need zero points of 0.")
    bias = _bias(node, b, channels)
    node.check(depth >= 1 and x.size % depth == 0, f"input of {x.size} values is not a multiple of the weights' depth {depth}.")
    batches = x.size // depth
    if opts.keepNumDims:
        node.check(len(x.shape) >= 1 and x.shape[-1] == depth, "keep_num_dims needs the input's last dimension to match.")
        expected = x.shape[:-1] + (channels,)
    else:
        expected = (batches, channels)
    node.check(out.shape == expected, f"output shape {list(out.shape)} != computed {list(expected)}.")
    if w.scales.size > 1:
        mult, shift = _conv_multipliers(in_scale, w.scales.astype(np.float64), out_scale)
        weights_zp = 0
    else:
        real = float(np.float32(np.float32(in_scale) * w.scales[0])) / float(np.float32(out_scale))
        m, s = ar.quantize_multiplier(real)
        mult, shift = np.array([m], np.int32), np.array([s], np.int32)
        weights_zp = w.zero_point()
    act_min, act_max = kernels.activation_range(_activation(node, opts.fusedActivationFunction), out_scale, out_zp, out.bits)
    weights = w.data

    def run(args):
        flat = args[0].reshape(batches, depth)
        return [kernels.fully_connected(flat, weights, bias, input_zp=in_zp, output_zp=out_zp,
                                        out_multiplier=mult, out_shift=shift, act_min=act_min,
                                        act_max=act_max, weights_zp=weights_zp)]
    return run


@_builtin("ADD")
def _prepare_add(node):
    node.arity(2, 2)
    x1, x2 = node.inputs
    out = node.outputs[0]
    opts = node.opts(schema_fb.AddOptionsT)
    s1, zp1 = _per_tensor(node, x1, "input 1")
    s2, zp2 = _per_tensor(node, x2, "input 2")
    so, zpo = _per_tensor(node, out, "output")
    try:
        shape = np.broadcast_shapes(x1.shape, x2.shape)
    except ValueError:
        node.fail(f"input shapes {list(x1.shape)} and {list(x2.shape)} do not broadcast.")
    node.check(tuple(shape) == out.shape, f"output shape {list(out.shape)} != broadcast shape {list(shape)}.")
    params = kernels.add_params(s1, zp1, s2, zp2, so, zpo)
    act_min, act_max = kernels.activation_range(_activation(node, opts.fusedActivationFunction), so, zpo, out.bits)

    def run(args):
        return [kernels.add(args[0], args[1], act_min=act_min, act_max=act_max, **params)]
    return run


def _prepare_pool(node, kernel):
    node.arity(1, 1)
    x, out = node.inputs[0], node.outputs[0]
    _rank(node, x, 4, "input")
    opts = node.opts(schema_fb.Pool2DOptionsT)
    in_scale, in_zp = _per_tensor(node, x, "input")
    out_scale, out_zp = _per_tensor(node, out, "output")
    node.check(np.float32(in_scale) == np.float32(out_scale) and in_zp == out_zp,
               "input and output quantization must be equal for integer pooling.")
    filter_hw = (int(opts.filterHeight), int(opts.filterWidth))
    stride, pad, out_hw = _window(node, x, out, filter_hw, opts)
    node.check(out.shape == (x.shape[0],) + out_hw + (x.shape[3],),
               f"output shape {list(out.shape)} != computed {[x.shape[0], *out_hw, x.shape[3]]}.")
    act_min, act_max = kernels.activation_range(_activation(node, opts.fusedActivationFunction), out_scale, out_zp, out.bits)

    def run(args):
        return [kernel(args[0], filter_hw=filter_hw, stride=stride, pad=pad, out_hw=out_hw,
                       act_min=act_min, act_max=act_max)]
    return run


@_builtin("AVERAGE_POOL_2D")
def _prepare_average_pool_2d(node):
    return _prepare_pool(node, kernels.average_pool_2d)


@_builtin("MAX_POOL_2D")
def _prepare_max_pool_2d(node):
    return _prepare_pool(node, kernels.max_pool_2d)


def _constant_ints(node, t, what):
    node.check(t.is_constant and t.type == "INT32", f"{what} (tensor {t.index}) must be a constant INT32 tensor.")
    return [int(v) for v in t.data.reshape(-1)]


@_builtin("MEAN")
def _prepare_mean(node):
    node.arity(2, 2)
    x, axes_t = node.inputs
    out = node.outputs[0]
    opts = node.opts(schema_fb.ReducerOptionsT)
    in_scale, in_zp = _per_tensor(node, x, "input")
    out_scale, out_zp = _per_tensor(node, out, "output")
    axes = kernels.resolve_axes(_constant_ints(node, axes_t, "axes"), len(x.shape))
    keep = bool(opts.keepDims)
    expected = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keep else \
        tuple(d for i, d in enumerate(x.shape) if i not in axes)
    node.check(out.shape == expected, f"output shape {list(out.shape)} != computed {list(expected)}.")

    def run(args):
        return [kernels.mean(args[0], axes, input_zp=in_zp, input_scale=in_scale, output_zp=out_zp,
                             output_scale=out_scale, keepdims=keep, bits=out.bits)]
    return run


def _same_size(node, x, out):
    node.check(x.size == out.size, f"input has {x.size} elements but output shape {list(out.shape)} has {out.size}.")
    node.check(x.type == out.type, f"input type {x.type} != output type {out.type}.")


def _copy_to(shape):
    def run(args):
        return [np.reshape(args[0], shape).copy()]
    return run


@_builtin("RESHAPE")
def _prepare_reshape(node):
    node.arity(1, 2)
    x, out = node.inputs[0], node.outputs[0]
    _same_size(node, x, out)
    return _copy_to(out.shape)


@_builtin("PAD")
def _prepare_pad(node):
    """TFLM's int8 PAD: the input copied into zeros' place, padding with the output zero
    point (TFLM requires one grid in and out)."""
    node.arity(2, 2)
    x, paddings_t = node.inputs
    out = node.outputs[0]
    node.check(x.bits == 8 and out.bits == 8, "PAD runs int8 -> int8 only.")
    (in_scale, in_zp), (out_scale, out_zp) = (_per_tensor(node, t, w) for t, w in ((x, "input"), (out, "output")))
    node.check(np.float32(in_scale) == np.float32(out_scale) and in_zp == out_zp,
               "input and output must share scale and zero point (as TFLM's int8 PAD requires).")
    flat = _constant_ints(node, paddings_t, "paddings")
    node.check(len(flat) == 2 * len(x.shape) and min(flat) >= 0,
               f"paddings must hold {len(x.shape)} non-negative (before, after) pairs, got {flat}.")
    pads = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(x.shape))]
    expected = tuple(d + a + b for d, (a, b) in zip(x.shape, pads))
    node.check(out.shape == expected, f"output shape {list(out.shape)} != padded shape {list(expected)}.")

    def run(args):
        return [np.pad(np.asarray(args[0]), pads, constant_values=out_zp).astype(np.int8)]
    return run


@_builtin("EXPAND_DIMS")
def _prepare_expand_dims(node):
    node.arity(2, 2)
    x, axis_t = node.inputs
    out = node.outputs[0]
    _same_size(node, x, out)
    values = _constant_ints(node, axis_t, "axis")
    node.check(len(values) == 1, f"axis must hold one value, has {len(values)}.")
    axis = values[0] + len(x.shape) + 1 if values[0] < 0 else values[0]
    node.check(0 <= axis <= len(x.shape), f"axis {values[0]} is out of range for rank {len(x.shape)}.")
    expected = x.shape[:axis] + (1,) + x.shape[axis:]
    node.check(out.shape == expected, f"output shape {list(out.shape)} != computed {list(expected)}.")
    return _copy_to(out.shape)


@_builtin("SQUEEZE")
def _prepare_squeeze(node):
    node.arity(1, 1)
    x, out = node.inputs[0], node.outputs[0]
    _same_size(node, x, out)
    opts = node.opts(schema_fb.SqueezeOptionsT)
    dims = [] if opts.squeezeDims is None else [int(d) for d in opts.squeezeDims]
    rank = len(x.shape)
    if dims:
        node.check(all(-rank <= d < rank for d in dims), f"squeeze dims {dims} out of range for rank {rank}.")
        dims = {d % rank for d in dims}
        node.check(all(x.shape[d] == 1 for d in dims), f"squeeze dims {sorted(dims)} are not all of size 1.")
    else:
        dims = {i for i, d in enumerate(x.shape) if d == 1}
    expected = tuple(d for i, d in enumerate(x.shape) if i not in dims)
    node.check(out.shape == expected, f"output shape {list(out.shape)} != computed {list(expected)}.")
    return _copy_to(out.shape)


@_builtin("SOFTMAX")
def _prepare_softmax(node):
    node.arity(1, 1)
    x, out = node.inputs[0], node.outputs[0]
    opts = node.opts(schema_fb.SoftmaxOptionsT)
    in_scale, _ = _per_tensor(node, x, "input")
    out_scale, out_zp = _per_tensor(node, out, "output")
    node.check(x.bits == 8 and out.bits == 8, "softmax runs int8 -> int8 only.")
    node.check(len(x.shape) >= 1 and out.shape == x.shape, f"output shape {list(out.shape)} != input shape {list(x.shape)}.")
    node.check(out_zp == kernels.SOFTMAX_OUTPUT_ZP and np.float32(out_scale) == np.float32(kernels.SOFTMAX_OUTPUT_SCALE),
               f"output must have scale 1/256 and zero point -128 (as TFLM requires), has {out_scale} and {out_zp}.")
    node.check(x.shape[-1] <= kernels.SOFTMAX_MAX_DEPTH,
               f"softmax over {x.shape[-1]} classes overflows TFLM's int32 sum of exps "
               f"(at most {kernels.SOFTMAX_MAX_DEPTH}).")
    beta = float(np.float32(opts.beta))
    node.check(np.isfinite(beta) and beta > 0, f"beta must be a finite positive number, got {beta}.")
    try:
        kernels.softmax_params(in_scale, beta)
    except ValueError as exc:
        node.fail(f"input scale {in_scale} and beta {beta} give an unusable multiplier ({exc}).")

    def run(args):
        return [kernels.softmax(args[0], input_scale=in_scale, beta=beta, output_zp=out_zp, output_scale=out_scale)]
    return run


@_builtin("CONCATENATION")
def _prepare_concatenation(node):
    """TFLM's int8 CONCATENATION copies the inputs' integers as they are (no requantization):
    inputs on another grid than the output are read on the output's, as on the device."""
    node.arity(1, 10)
    out = node.outputs[0]
    opts = node.opts(schema_fb.ConcatenationOptionsT)
    node.check(_ACTIVATION_NAMES.get(opts.fusedActivationFunction) == "NONE",
               "TFLM's CONCATENATION takes no fused activation.")
    _per_tensor(node, out, "output")
    rank = len(out.shape)
    axis = opts.axis + rank if opts.axis < 0 else opts.axis
    node.check(0 <= axis < rank <= 4, f"axis {opts.axis} is out of range for rank {rank} (at most 4).")
    for i, t in enumerate(node.inputs):
        _per_tensor(node, t, f"input {i}")
        node.check(t.bits == 8 and t.type == out.type, f"input {i} is {t.type}; TFLM concatenates int8 only.")
        node.check(len(t.shape) == rank and all(a == b for j, (a, b) in enumerate(zip(t.shape, out.shape))
                                                if j != axis),
                   f"input {i} shape {list(t.shape)} does not fit output {list(out.shape)} on axis {axis}.")
    node.check(sum(t.shape[axis] for t in node.inputs) == out.shape[axis],
               f"inputs give {sum(t.shape[axis] for t in node.inputs)} along axis {axis}, output has "
               f"{out.shape[axis]}.")

    def run(args):
        return [np.concatenate([np.asarray(a) for a in args], axis=axis)]
    return run


def _prepare_squash(node, what, kernel, out_scale_expected, out_zp_expected, scale_text):
    node.arity(1, 1)
    x, out = node.inputs[0], node.outputs[0]
    in_scale, in_zp = _per_tensor(node, x, "input")
    out_scale, out_zp = _per_tensor(node, out, "output")
    node.check(x.bits == 8 and out.bits == 8, f"{what} runs int8 -> int8 only.")
    node.check(out.shape == x.shape, f"output shape {list(out.shape)} != input shape {list(x.shape)}.")
    node.check(out_zp == out_zp_expected and np.float32(out_scale) == np.float32(out_scale_expected),
               f"output must have scale {scale_text} and zero point {out_zp_expected} (TFLM's int8 "
               f"{what} writes that grid), has {out_scale} and {out_zp}.")
    try:
        kernels.logistic_tanh_params(in_scale)
    except ValueError as exc:
        node.fail(str(exc))

    def run(args):
        return [kernel(args[0], input_scale=in_scale, input_zp=in_zp)]
    return run


@_builtin("LEAKY_RELU")
def _prepare_leaky_relu(node):
    node.arity(1, 1)
    x, out = node.inputs[0], node.outputs[0]
    alpha = float(np.float32(node.opts(schema_fb.LeakyReluOptionsT).alpha))
    in_scale, in_zp = _per_tensor(node, x, "input")
    out_scale, out_zp = _per_tensor(node, out, "output")
    node.check(x.bits == 8 and out.bits == 8, "LEAKY_RELU runs int8 -> int8 only.")
    node.check(out.shape == x.shape, f"output shape {list(out.shape)} != input shape {list(x.shape)}.")
    node.check(np.isfinite(alpha), f"alpha must be finite, got {alpha}.")

    m_id, s_id, m_alpha, s_alpha = kernels.leaky_relu_params(in_scale, out_scale, alpha)

    def run(args):
        return [kernels.leaky_relu(args[0], input_zp=in_zp, output_zp=out_zp,
                                   identity_multiplier=m_id, identity_shift=s_id,
                                   alpha_multiplier=m_alpha, alpha_shift=s_alpha)]
    return run


@_builtin("LOGISTIC")
def _prepare_logistic(node):
    return _prepare_squash(node, "LOGISTIC", kernels.logistic, kernels.LOGISTIC_OUTPUT_SCALE,
                           kernels.LOGISTIC_OUTPUT_ZP, "1/256")


@_builtin("TANH")
def _prepare_tanh(node):
    return _prepare_squash(node, "TANH", kernels.tanh, kernels.TANH_OUTPUT_SCALE,
                           kernels.TANH_OUTPUT_ZP, "1/128")


@_builtin("QUANTIZE")
def _prepare_quantize(node):
    node.arity(1, 1)
    x, out = node.inputs[0], node.outputs[0]
    node.check(x.shape == out.shape, f"output shape {list(out.shape)} != input shape {list(x.shape)}.")
    out_scale, out_zp = _per_tensor(node, out, "output")
    if x.type == "FLOAT32":
        def run(args):
            return [kernels.quantize(args[0], out_scale, out_zp, bits=out.bits)]
        return run
    in_scale, in_zp = _per_tensor(node, x, "input")
    mult, shift = kernels.requantize_params(in_scale, out_scale)

    def run(args):
        return [kernels.requantize(args[0], input_zp=in_zp, output_zp=out_zp, multiplier=mult, shift=shift, bits=out.bits)]
    return run


@_builtin("DEQUANTIZE")
def _prepare_dequantize(node):
    node.arity(1, 1)
    x, out = node.inputs[0], node.outputs[0]
    node.check(out.type == "FLOAT32", f"output must be FLOAT32, is {out.type}.")
    node.check(x.shape == out.shape, f"output shape {list(out.shape)} != input shape {list(x.shape)}.")
    scale, zp = _per_tensor(node, x, "input")

    def run(args):
        return [kernels.dequantize(args[0], scale, zp)]
    return run
