"""Read, edit and write TFLite flatbuffers through the schema's Python object API.

``read_model``/``write_model`` convert between bytes and ``schema_fb.ModelT`` (``write_model``
writes equal strings, vectors, quantization parameters and builtin options once);
``retype_constant_tensor`` turns an int8 constant tensor (e.g. a CONV_2D filter whose values
already lie on the 4- or 2-bit grid) into a packed ``INT4``/``INT2`` tensor with
``packing.pack``. The converter builds on these.
"""
import numpy as np
import flatbuffers
from tensorflow.lite.python import schema_py_generated as schema_fb

from tfq_tiny.errors import ModelFileError
from tfq_tiny.export import packing
from tfq_tiny.quantization.grid import DEPLOYABLE_BITS, check_bits

FILE_IDENTIFIER = b"TFL3"

TENSOR_TYPE_FOR_BITS = {8: schema_fb.TensorType.INT8, 4: schema_fb.TensorType.INT4, 2: schema_fb.TensorType.INT2}


def read_model(model_bytes):
    """Parse flatbuffer bytes into a ``schema_fb.ModelT`` (ModelFileError if unparsable)."""
    data = bytes(model_bytes)
    if len(data) < 8:
        raise ModelFileError(f"a TFLite model needs at least 8 bytes, got {len(data)}.")
    if data[4:8] != FILE_IDENTIFIER:
        raise ModelFileError(
            f"not a TFLite flatbuffer: file identifier {data[4:8]!r}, expected {FILE_IDENTIFIER!r}.")
    try:
        return schema_fb.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:
        raise ModelFileError(
            f"cannot parse the TFLite flatbuffer ({type(exc).__name__}: {exc}); "
            "the file is truncated or corrupted."
        ) from exc


class _SharingBuilder(flatbuffers.Builder):
    """A Builder that writes every distinct string and numeric vector once and gives its offset
    to every parent that refers to it (a flatbuffer may reference one object from any number of
    places; TFLM, LiteRT and the object API read such files as usual)."""

    def __init__(self, initial_size):
        super().__init__(initial_size)
        self.shared = {}

    def once(self, key, make):
        """The offset of the object ``key`` names, written by ``make()`` the first time."""
        if key not in self.shared:
            self.shared[key] = make()
        return self.shared[key]

    def CreateString(self, s, encoding="utf-8", errors="strict"):
        data = s.encode(encoding, errors) if isinstance(s, str) else bytes(s)
        return self.once(("string", data), lambda: super(_SharingBuilder, self).CreateString(data))

    def CreateNumpyVector(self, x):
        return self.once(("vector", x.dtype.str, x.tobytes()),
                         lambda: super(_SharingBuilder, self).CreateNumpyVector(x))


def _table_key(table):
    """A hashable image of a flat object-API table (scalars and numeric vectors), None if it
    holds a nested table or a list."""
    items = []
    for name, value in sorted(vars(table).items()):
        if isinstance(value, np.ndarray):
            value = (value.dtype.str, value.shape, value.tobytes())
        elif value is not None and not isinstance(value, (bool, int, float, bytes, str)):
            return None
        items.append((name, value))
    return type(table).__name__, tuple(items)


class _SharedTable:
    """Stands in for an object-API table while packing: equal tables are written once."""

    def __init__(self, table):
        self.table, self.key = table, _table_key(table)

    def Pack(self, builder):
        if self.key is None:
            return self.table.Pack(builder)
        return builder.once(("table",) + self.key, lambda: self.table.Pack(builder))


def write_model(model):
    """Serialise a ``schema_fb.ModelT`` to flatbuffer bytes with the TFLite file identifier.

    Equal strings, numeric vectors (shapes, zero points, scales, custom options), tensors'
    QuantizationParameters and operators' builtin options are written once and shared."""
    shared = [(t, "quantization") for sg in model.subgraphs or [] for t in sg.tensors or []]
    shared += [(op, "builtinOptions") for sg in model.subgraphs or [] for op in sg.operators or []]
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr in shared]
    for obj, attr, table in saved:
        if table is not None:
            setattr(obj, attr, _SharedTable(table))
    try:
        builder = _SharingBuilder(1024)
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())
    finally:
        for obj, attr, table in saved:
            setattr(obj, attr, table)


def _tensor(model, tensor_index, subgraph):
    try:
        tensors = model.subgraphs[subgraph].tensors
        return tensors[tensor_index], tensors
    except (IndexError, TypeError) as exc:
        raise ModelFileError(f"no tensor {tensor_index} in subgraph {subgraph}.") from exc


def constant_values(model, tensor_index, subgraph=0):
    """The values of a constant INT8/INT4/INT2 tensor, unpacked to int8 in its shape."""
    tensor, _ = _tensor(model, tensor_index, subgraph)
    buffer = model.buffers[tensor.buffer]
    if buffer.data is None or len(buffer.data) == 0:
        raise ModelFileError(f"tensor {tensor_index} ({tensor.name!r}) has no constant data.")
    bits = {v: k for k, v in TENSOR_TYPE_FOR_BITS.items()}.get(tensor.type)
    if bits is None:
        raise ModelFileError(f"tensor {tensor_index} is not INT8/INT4/INT2 (type {tensor.type}).")
    shape = tuple(int(d) for d in tensor.shape)
    return packing.unpack(np.asarray(buffer.data, dtype=np.uint8), bits, int(np.prod(shape))).reshape(shape)


def retype_constant_tensor(model, tensor_index, bits, subgraph=0):
    """Store constant tensor ``tensor_index`` packed as ``bits``-bit integers, in place.

    The tensor's current int8 values must already fit ``int_range(bits)`` (BitWidthError
    otherwise). A buffer shared with another tensor is copied first so only this tensor
    changes. Returns ``model`` for chaining.
    """
    bits = check_bits(bits, what="tensor bit width", allowed=DEPLOYABLE_BITS)
    values = constant_values(model, tensor_index, subgraph)
    tensor, _ = _tensor(model, tensor_index, subgraph)
    users = [t for sg in model.subgraphs for t in (sg.tensors or []) if t.buffer == tensor.buffer]
    packed = packing.pack(values, bits)
    if len(users) > 1:
        new_buffer = schema_fb.BufferT()
        model.buffers.append(new_buffer)
        tensor.buffer = len(model.buffers) - 1
    model.buffers[tensor.buffer].data = packed
    tensor.type = TENSOR_TYPE_FOR_BITS[bits]
    return model


class _AlignedBufferT(schema_fb.BufferT):
    """A BufferT whose data vector starts on an ``alignment``-byte boundary of the file."""

    alignment = 16

    def Pack(self, builder):
        if self.data is None:
            return super().Pack(builder)
        payload = np.asarray(self.data, np.uint8).reshape(-1).tobytes()
        builder.StartVector(1, len(payload), self.alignment)
        builder.head = builder.head - len(payload)
        builder.Bytes[builder.head:builder.head + len(payload)] = payload
        builder.vectorNumElems = len(payload)
        data = builder.EndVector()
        schema_fb.BufferStart(builder)
        schema_fb.BufferAddData(builder, data)
        schema_fb.BufferAddOffset(builder, self.offset)
        schema_fb.BufferAddSize(builder, self.size)
        return schema_fb.BufferEnd(builder)


def write_model_aligned(model, alignment=16):
    """``write_model`` with every buffer's data 16-byte aligned, as TF's converter writes them,
    so int32 biases and packed filters can be read in place on a microcontroller."""
    originals = model.buffers
    aligned = []
    for buffer in originals or []:
        copy = _AlignedBufferT()
        copy.data, copy.offset, copy.size = buffer.data, buffer.offset, buffer.size
        copy.alignment = alignment
        aligned.append(copy)
    model.buffers = aligned
    try:
        return write_model(model)
    finally:
        model.buffers = originals
