"""The one routine that packs signed 2/4/8-bit integers into bytes, and the one that unpacks them.

Layout (TFLite schema ``TensorType.INT4``/``INT2``, as ``tensor_utils::UnpackDenseInt4IntoInt8``
reads it): the tensor is flattened in C order and its values are stored densely, lowest bits
first. Two int4 values share a byte (low nibble = first element); four int2 values share a
byte (least significant pair = first element). A tail that does not fill its last byte is
padded with zero bits. ``bits=8`` is the identity (one int8 per byte).

Values live on the full signed grid of ``tfq_tiny.quantization.grid.int_range``.
"""
import numpy as np

from tfq_tiny.errors import BitWidthError, ModelFileError
from tfq_tiny.quantization.grid import DEPLOYABLE_BITS, check_bits, int_range


def _packable_bits(bits):
    return check_bits(bits, what="packing bit width", allowed=DEPLOYABLE_BITS)


def packed_size(count, bits):
    """Number of bytes that ``count`` values of ``bits`` bits occupy once packed."""
    bits = _packable_bits(bits)
    count = int(count)
    if count < 0:
        raise ValueError(f"element count must be >= 0, got {count}.")
    per_byte = 8 // bits
    return -(-count // per_byte)


def pack(values, bits):
    """Pack signed integers (any shape, flattened in C order) into a uint8 array.

    Raises BitWidthError when a value lies outside ``int_range(bits)`` and ValueError when the
    values are not integers.
    """
    bits = _packable_bits(bits)
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError("pack() needs integer values; got non-integral floats. Round first.")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"pack() needs an integer array, got dtype {arr.dtype}.")
    flat = arr.reshape(-1).astype(np.int64)
    qmin, qmax = int_range(bits)
    if flat.size and (flat.min() < qmin or flat.max() > qmax):
        bad = flat[(flat < qmin) | (flat > qmax)][0]
        raise BitWidthError(
            f"value {int(bad)} does not fit in {bits} bits: the signed range is [{qmin}, {qmax}]. "
            f"Clip or re-quantize to {bits} bits before packing."
        )
    if bits == 8:
        return flat.astype(np.int8).view(np.uint8)
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    padded = np.zeros(packed_size(flat.size, bits) * per_byte, dtype=np.int64)
    padded[: flat.size] = flat & mask
    lanes = padded.reshape(-1, per_byte)
    shifts = np.arange(per_byte, dtype=np.int64) * bits
    return (lanes << shifts).sum(axis=1).astype(np.uint8)


def unpack(buffer, bits, count):
    """Unpack ``count`` sign-extended values of ``bits`` bits from ``buffer`` into int8.

    ``buffer`` may be bytes, bytearray, memoryview or a uint8/int8 array; bytes beyond the
    ``packed_size(count, bits)`` needed are ignored. A shorter buffer raises ModelFileError.
    """
    bits = _packable_bits(bits)
    count = int(count)
    need = packed_size(count, bits)
    if isinstance(buffer, np.ndarray):
        raw = buffer.reshape(-1).view(np.uint8) if buffer.dtype.itemsize == 1 else None
        if raw is None:
            raise ValueError(f"unpack() needs a byte buffer, got an array of dtype {buffer.dtype}.")
    else:
        raw = np.frombuffer(bytes(buffer), dtype=np.uint8)
    if raw.size < need:
        raise ModelFileError(
            f"packed int{bits} buffer holds {raw.size} bytes but {count} values need {need}: "
            "the buffer is truncated or the tensor shape is wrong."
        )
    raw = raw[:need]
    if bits == 8:
        return raw.view(np.int8).copy()
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    shifts = np.arange(per_byte, dtype=np.int32) * bits
    lanes = (raw.astype(np.int32)[:, None] >> shifts) & mask
    values = lanes.reshape(-1)[:count]
    sign_bit = 1 << (bits - 1)
    return np.where(values >= sign_bit, values - (1 << bits), values).astype(np.int8)
