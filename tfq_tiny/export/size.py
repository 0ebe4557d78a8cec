"""Where the bytes of a TFLite flatbuffer go: ``size_report(model_bytes)``.

Every byte of the file is attributed to exactly one category by walking the flatbuffer's tables
and vectors (a vector or table that several parents share is counted once), so the categories add
up to ``len(model_bytes)``. Pure Python (no TensorFlow import), for any TFLite model.
"""
import struct

import numpy as np

from tfq_tiny.errors import ModelFileError

CATEGORIES = ("weights", "biases", "scales", "constants", "quantization", "shapes", "names",
              "options", "metadata", "structure", "padding")
"""``weights``: filter data of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (builtin or TFQ_*);
``biases``: their bias data; ``scales``: the float32 scale payload of those filters;
``constants``: other constant tensor data; ``quantization``: the rest of every
QuantizationParameters (its table, zero points, activation scales, vector lengths); ``shapes``:
tensors' ``shape`` and ``shape_signature`` vectors; ``names``: strings (tensor, metadata and
signature names, custom codes, the description); ``options``: operators' custom options and
builtin options tables; ``metadata``: metadata buffer payloads; ``structure``: every other table,
vtable and index vector (the root, tensors, operators, buffers, operator codes, tensor indices);
``padding``: bytes nothing refers to (alignment)."""

_WEIGHTED = {3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 9: "FULLY_CONNECTED"}
_WEIGHTED_CUSTOM = (b"TFQ_CONV_2D", b"TFQ_DEPTHWISE_CONV_2D", b"TFQ_FULLY_CONNECTED")
_OPTION_VECTORS = {17: (0,), 43: (0,)}  # ReshapeOptions.new_shape, SqueezeOptions.squeeze_dims


class _Walker:
    """Bounds-checked reads of flatbuffer tables, and a category per byte."""

    def __init__(self, data):
        self.data = data
        self.owner = np.zeros(len(data), np.uint8)  # index into CATEGORIES + 1; 0 = not claimed yet

    def fail(self, what, pos):
        raise ModelFileError(f"size_report: {what} at byte {pos} lies outside the "
                             f"{len(self.data)}-byte flatbuffer; the file is truncated or corrupted.")

    def read(self, fmt, pos):
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            self.fail(f"a {size}-byte field", pos)
        return struct.unpack_from(fmt, self.data, pos)[0]

    def claim(self, start, end, category):
        if start < 0 or end > len(self.data) or start > end:
            self.fail(f"a region of {end - start} bytes", start)
        view = self.owner[start:end]
        view[view == 0] = CATEGORIES.index(category) + 1

    def table(self, pos, category):
        """Claim the table at ``pos`` and its vtable; returns a field reader."""
        vtable = pos - self.read("<i", pos)
        vtable_size, inline_size = self.read("<H", vtable), self.read("<H", vtable + 2)
        self.claim(vtable, vtable + vtable_size, category)
        self.claim(pos, pos + inline_size, category)
        return _Table(self, pos, vtable, vtable_size)


class _Table:
    def __init__(self, walker, pos, vtable, vtable_size):
        self.walker, self.pos, self.vtable, self.vtable_size = walker, pos, vtable, vtable_size

    def field(self, index):
        """Absolute position of field ``index`` or None when absent."""
        slot = 4 + 2 * index
        if slot >= self.vtable_size:
            return None
        offset = self.walker.read("<H", self.vtable + slot)
        return self.pos + offset if offset else None

    def scalar(self, index, fmt, default=0):
        at = self.field(index)
        return default if at is None else self.walker.read(fmt, at)

    def target(self, index):
        at = self.field(index)
        return None if at is None else at + self.walker.read("<I", at)

    def child(self, index, category):
        at = self.target(index)
        return None if at is None else self.walker.table(at, category)

    def vector(self, index, element_size, category, extra=0):
        """Claim vector ``index`` (length prefix included); returns (first element, length)."""
        at = self.target(index)
        if at is None:
            return None, 0
        length = self.walker.read("<I", at)
        self.walker.claim(at, at + 4 + length * element_size + extra, category)
        return at + 4, length

    def string(self, index, category="names"):
        start, length = self.vector(index, 1, category, extra=1)
        return None if start is None else bytes(self.walker.data[start:start + length])

    def tables(self, index, category):
        start, length = self.vector(index, 4, "structure")
        return [self.walker.table(start + 4 * i + self.walker.read("<I", start + 4 * i), category)
                for i in range(length)]

    def ints(self, index, category="structure"):
        start, length = self.vector(index, 4, category)
        return [self.walker.read("<i", start + 4 * i) for i in range(length)]


def _roles(graph, codes, tensor_count):
    """{tensor index: "weights" or "biases"} from the operators of one subgraph (claiming them)."""
    roles = {}
    for op in graph.tables(3, "structure"):
        opcode = op.scalar(0, "<I")
        code = codes[opcode] if opcode < len(codes) else None
        inputs = op.ints(1)
        op.ints(2), op.ints(8), op.vector(7, 1, "structure")
        op.vector(5, 1, "options")
        options = op.child(4, "options")
        if options is not None:
            for index in _OPTION_VECTORS.get(op.scalar(3, "<B"), ()):
                options.vector(index, 4, "options")
        if code in _WEIGHTED.values() or code in _WEIGHTED_CUSTOM:
            for slot, kind in ((1, "weights"), (2, "biases")):
                if len(inputs) > slot and 0 <= inputs[slot] < tensor_count:
                    roles[inputs[slot]] = kind
    return roles


def size_report(model_bytes):
    """Bytes per category (``CATEGORIES``, in that order, plus ``total``) of a TFLite flatbuffer.

    Constant tensor data is split by the role of the tensor (filter, bias, other); the
    categories sum to ``total`` = ``len(model_bytes)``. Raises ModelFileError when a table or
    vector lies outside the file.
    """
    data = bytes(model_bytes)
    if len(data) < 8:
        raise ModelFileError(f"size_report: a TFLite model needs at least 8 bytes, got {len(data)}.")
    w = _Walker(data)
    w.claim(0, 8, "structure")
    model = w.table(w.read("<I", 0), "structure")
    codes = []
    for code in model.tables(1, "structure"):
        custom = code.string(1)
        builtin = max(code.scalar(0, "<b"), code.scalar(3, "<i"))
        codes.append(custom if builtin == 32 else _WEIGHTED.get(builtin))
    buffers = []
    for buffer in model.tables(4, "structure"):
        at = buffer.target(0)
        buffers.append(None if at is None else (at + 4, at + 4 + w.read("<I", at)))

    def claim_buffer(index, category):
        if index < len(buffers) and buffers[index] is not None:
            w.claim(*buffers[index], category)

    for graph in model.tables(2, "structure"):
        tensors = graph.tables(0, "structure")
        graph.ints(1), graph.ints(2), graph.string(4)
        roles = _roles(graph, codes, len(tensors))
        for index, tensor in enumerate(tensors):
            tensor.vector(0, 4, "shapes")
            tensor.vector(7, 4, "shapes")
            tensor.string(3)
            quant = tensor.child(4, "quantization")
            if quant is not None:
                scales = quant.target(2)
                if roles.get(index) == "weights" and scales is not None:
                    w.claim(scales, scales + 4, "quantization")
                    quant.vector(2, 4, "scales")
                for field, size in ((0, 4), (1, 4), (2, 4), (3, 8)):
                    quant.vector(field, size, "quantization")
            claim_buffer(tensor.scalar(2, "<I"), roles.get(index, "constants"))
    for entry in model.tables(6, "structure"):
        entry.string(0)
        claim_buffer(entry.scalar(1, "<I"), "metadata")
    model.ints(5)
    model.string(3)
    for signature in model.tables(7, "structure"):
        signature.string(2)
        for maps in (0, 1):
            for entry in signature.tables(maps, "structure"):
                entry.string(0)
    for index, extent in enumerate(buffers):
        if extent is not None:
            w.claim(extent[0] - 4, extent[0], "structure")
            claim_buffer(index, "constants")
    counts = np.bincount(w.owner, minlength=len(CATEGORIES) + 1)
    report = {name: int(counts[i + 1]) for i, name in enumerate(CATEGORIES)}
    report["padding"] = int(counts[0])
    report["total"] = len(data)
    return report
