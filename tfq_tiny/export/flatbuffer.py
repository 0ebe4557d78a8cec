"""Read, edit and write TFLite flatbuffers through the schema's Python object API.

``read_model``/``write_model`` convert between bytes and ``schema_fb.ModelT``;
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


def write_model(model):
    """Serialise a ``schema_fb.ModelT`` to flatbuffer bytes with the TFLite file identifier."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


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
