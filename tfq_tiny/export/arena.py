"""How much RAM TFLM's arena needs for a flatbuffer's activations: a Python model of its planner.

TFLM splits its arena into a *head* (non-persistent: activation tensors and kernel scratch
buffers, overlaid according to a static memory plan) and a *tail* (persistent: tensor structs,
quantization parameters, op data). ``plan_arena(model_bytes)["head"]`` reproduces the head that
TFLM reports (``tfq_tiny.search.memory.tflm_arena_usage``) for models the pip interpreter cannot
run, i.e. ours with TFQ_* custom operators, following TFLM's sources
(``micro_allocator.cc``, ``micro_allocation_info.cc``, ``memory_planner/greedy_memory_planner.cc``):

1. **What is planned.** Every tensor without constant data (no buffer bytes), not a variable and
   of non-zero size, plus the scratch buffers kernels request in Prepare, in that order (tensors
   by index, then scratch requests in operator order). A tensor's size is
   ``elements x TfLiteTypeSizeOf(type)`` (INT4 counts one byte per element, as TFLM allocates it),
   rounded up to 16 bytes (``MicroArenaBufferAlignment``).
2. **Lifetimes**, in allocation scopes: subgraph inputs and outputs are created at scope 0;
   operator ``k`` (0-based) is scope ``k + 1``: its outputs are (re)created there and its inputs
   and outputs are used there; a scratch buffer lives exactly in its operator's scope; subgraph
   outputs are finally used at the last scope. A tensor nothing touches keeps ``[-1, -1]``.
3. **Greedy placement.** Buffers sorted by aligned size, largest first; equal sizes in the
   reverse of the order of step 1 (TFLM fills its sort array from the back, then bubble-sorts
   it stably). The first goes at offset 0; each next one walks the placed
   buffers in offset order, considering only those whose lifetime intersects its own (closed
   intervals), and takes the first gap between ``candidate`` and the next such buffer that is
   large enough, where ``candidate`` starts at 0 and moves to the end of every such buffer passed;
   otherwise it goes after the last one. The head is ``max(offset + size)``.

Scratch buffers are modelled for the kernels these exports use: TFLM's reference CONV_2D,
DEPTHWISE_CONV_2D and FULLY_CONNECTED request one buffer of ``filter elements`` bytes for an INT4
filter (unpacked to int8 in Eval); the other builtins listed in ``NO_SCRATCH`` (int8 reference
kernels) and tfq_tiny's TFQ_* operators (``tflm_ext/tflm/tfq_ops.cc`` keeps no scratch) request
none. Any other operator, offline-planned metadata or a multi-subgraph model raises
``ArenaModelError`` rather than guessing.
"""
from bisect import bisect_right

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema_fb

from tfq_tiny.errors import TfqError
from tfq_tiny.export import flatbuffer

ALIGNMENT = 16
"""TFLM's ``MicroArenaBufferAlignment()``: every planned buffer is rounded up to this."""

_T = schema_fb.TensorType
TYPE_BYTES = {_T.FLOAT32: 4, _T.FLOAT16: 2, _T.FLOAT64: 8, _T.INT32: 4, _T.UINT32: 4, _T.INT16: 2,
              _T.UINT8: 1, _T.INT8: 1, _T.INT64: 8, _T.UINT64: 8, _T.BOOL: 1, _T.COMPLEX64: 8,
              _T.COMPLEX128: 16, _T.RESOURCE: 4, _T.INT4: 1}
"""TFLM's ``TfLiteTypeSizeOf`` (memory_helpers.cc); INT4 activations take one byte per element."""

NO_SCRATCH = ("ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D", "RESHAPE", "EXPAND_DIMS", "SQUEEZE",
              "CONCATENATION", "SOFTMAX", "LOGISTIC", "TANH", "LEAKY_RELU", "PAD", "QUANTIZE",
              "DEQUANTIZE")
"""Builtins whose TFLM reference kernels request no scratch buffer for int8 tensors."""
INT4_FILTER_SCRATCH = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
"""Builtins that request ``filter elements`` bytes of scratch when the filter is INT4."""
CUSTOM_NO_SCRATCH_PREFIX = "TFQ_"

_OP_NAMES = {v: k for k, v in vars(schema_fb.BuiltinOperator).items() if not k.startswith("_")}
_OFFLINE_PLAN = "OfflineMemoryAllocation"


class ArenaModelError(TfqError):
    """The flatbuffer uses something this model of TFLM's planner does not cover."""


def align(size, alignment=ALIGNMENT):
    return -(-int(size) // alignment) * alignment


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def op_name(model, op):
    """Builtin name ('CONV_2D') or custom code ('TFQ_CONV_2D') of ``op``."""
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == schema_fb.BuiltinOperator.CUSTOM:
        return _text(code.customCode)
    return _OP_NAMES.get(builtin, f"builtin {builtin}")


def _elements(tensor):
    return int(np.prod([int(d) for d in tensor.shape], dtype=np.int64)) if tensor.shape is not None else 1


def _has_data(model, tensor):
    """True for a constant: its buffer holds bytes (inline, or at an offset past the flatbuffer)."""
    if not 0 <= tensor.buffer < len(model.buffers):
        raise ArenaModelError(f"tensor {_text(tensor.name)!r} refers to buffer {tensor.buffer} of "
                              f"{len(model.buffers)}.")
    buffer = model.buffers[tensor.buffer]
    return (buffer.data is not None and len(buffer.data) > 0) or ((buffer.offset or 0) > 1 and (buffer.size or 0) > 0)


def _scratch_bytes(model, graph, op, name):
    """Bytes of the scratch buffer ``op`` requests in TFLM, or 0."""
    if name.startswith(CUSTOM_NO_SCRATCH_PREFIX) or name in NO_SCRATCH:
        return 0
    if name in INT4_FILTER_SCRATCH:
        filt = graph.tensors[int(op.inputs[1])]
        return _elements(filt) if filt.type == _T.INT4 else 0
    raise ArenaModelError(f"operator {name}: its TFLM scratch buffers are not modelled; "
                          f"known: {sorted(NO_SCRATCH + INT4_FILTER_SCRATCH)} and TFQ_* operators.")


def requests(model_bytes):
    """The buffers TFLM's planner is given, in its order: dicts with ``name``, ``tensor`` (index,
    or None for scratch), ``bytes``, ``size`` (aligned), ``first`` and ``last`` (scopes)."""
    model = flatbuffer.read_model(model_bytes)
    if len(model.subgraphs or []) != 1:
        raise ArenaModelError(f"the model has {len(model.subgraphs or [])} subgraphs; one is modelled.")
    if any(_text(m.name) == _OFFLINE_PLAN for m in model.metadata or []):
        raise ArenaModelError("the model carries an offline memory plan; only online planning is modelled.")
    graph = model.subgraphs[0]
    tensors = graph.tensors or []
    first = [-1] * len(tensors)
    last = [-1] * len(tensors)
    for index in list(graph.inputs) + list(graph.outputs):
        first[int(index)] = last[int(index)] = 0
    scratch = []
    scope = 0
    for op in graph.operators or []:
        scope += 1
        outputs = [int(i) for i in op.outputs]
        for index in outputs:
            first[index] = last[index] = scope
        for index in [int(i) for i in op.inputs if i >= 0] + outputs:
            last[index] = scope
        name = op_name(model, op)
        nbytes = _scratch_bytes(model, graph, op, name)
        if nbytes:
            scratch.append({"name": f"{name} scratch (operator {scope - 1})", "tensor": None,
                            "bytes": nbytes, "size": align(nbytes), "first": scope, "last": scope})
    for index in graph.outputs:
        last[int(index)] = scope
    planned = []
    for index, tensor in enumerate(tensors):
        if _has_data(model, tensor) or tensor.isVariable:
            continue
        if tensor.type not in TYPE_BYTES:
            raise ArenaModelError(f"tensor {index} ({_text(tensor.name)!r}) has type {tensor.type}, "
                                  "which TFLM cannot allocate (TfLiteTypeSizeOf).")
        nbytes = _elements(tensor) * TYPE_BYTES[tensor.type]
        if nbytes:
            planned.append({"name": _text(tensor.name), "tensor": index, "bytes": nbytes,
                            "size": align(nbytes), "first": first[index], "last": last[index]})
    return planned + scratch


def greedy_offsets(buffers):
    """TFLM's GreedyMemoryPlanner: offsets for dicts with ``size``, ``first``, ``last``."""
    if not buffers:
        return []
    # TFLM fills its sort array from the back (the last buffer added first), then bubble-sorts
    # it by size, stably: equal sizes are placed in reverse order of addition.
    order = sorted(reversed(range(len(buffers))), key=lambda i: -buffers[i]["size"])
    offsets = [None] * len(buffers)
    placed_offsets, placed = [], []  # kept sorted by offset; a new entry goes after equal offsets

    def overlaps(a, b):
        return not (buffers[a]["first"] > buffers[b]["last"] or buffers[b]["first"] > buffers[a]["last"])

    for rank, i in enumerate(order):
        candidate = 0
        if rank:
            for offset, j in zip(placed_offsets, placed):
                if not overlaps(i, j):
                    continue
                if offset - candidate >= buffers[i]["size"]:
                    break
                candidate = max(candidate, offset + buffers[j]["size"])
        offsets[i] = candidate
        at = bisect_right(placed_offsets, candidate)
        placed_offsets.insert(at, candidate)
        placed.insert(at, i)
    return offsets


def plan_arena(model_bytes):
    """TFLM's non-persistent arena ("head") for ``model_bytes``, planned as TFLM plans it.

    Returns {"head": bytes, "activations": bytes of the tensor buffers alone (their own greedy
    plan, scratch left out), "buffers": the planned buffers (see ``requests``) with their
    ``offset``}.
    """
    buffers = requests(model_bytes)
    for buffer, offset in zip(buffers, greedy_offsets(buffers)):
        buffer["offset"] = offset
    tensors = [dict(b) for b in buffers if b["tensor"] is not None]
    head = max((b["offset"] + b["size"] for b in buffers), default=0)
    activations = max((o + b["size"] for b, o in zip(tensors, greedy_offsets(tensors))), default=0)
    return {"head": head, "activations": activations, "buffers": buffers}


__all__ = ["ALIGNMENT", "ArenaModelError", "greedy_offsets", "plan_arena", "requests"]
