"""The C++ packed-tensor kernels of ``tflm_ext`` called from NumPy, through ctypes.

Each function has the signature of its NumPy reference in ``tfq_tiny.runtime.kernels``
(unpacked integer arrays in, an int8 array out) plus the bit widths of the tensors:
``input_bits``, ``weight_bits`` and ``output_bits`` (pools and add: ``input_bits`` and
``output_bits``), each 2, 4 or 8. Inputs are packed with ``tfq_tiny.export.packing.pack``,
the C++ kernel runs on the packed bytes, and its packed output is unpacked with
``tfq_tiny.export.packing.unpack``. The two paths must agree bit for bit
(tests/test_native_kernels.py).

The library is ``tfq_tiny/_tflm_ext*.so``, built from ``tflm_ext/core`` and
``tflm_ext/capi`` by ``pip install -e .``; it is loaded on first use, so importing this
module never fails. Invalid shapes or parameters raise ``NativeKernelError`` with the
kernel's status; the C++ side validates everything before reading a byte.
"""
import ctypes
import glob
import os
import threading

import numpy as np

from tfq_tiny.errors import TfqError
from tfq_tiny.export.packing import pack, packed_size, unpack
from tfq_tiny.quantization.grid import DEPLOYABLE_BITS, check_bits, int_range
from tfq_tiny.runtime.kernels import _pair

ABI_VERSION = 2
_MAX_RANK = 4


class NativeLibraryError(TfqError):
    """The compiled tflm_ext library is missing, stale or does not match this module."""


class NativeKernelError(TfqError):
    """A C++ kernel rejected its arguments (bad shape, bit width, zero point, ...)."""

    def __init__(self, op, status, message):
        super().__init__(f"{op}: {message} (tflm_ext status {status}).")
        self.op = op
        self.status = status


# ---- ctypes mirrors of tflm_ext/capi/tfq_capi.h -------------------------------------------

_i32 = ctypes.c_int32


def _int_fields(*names):
    return [(name, _i32) for name in names]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("nbytes", ctypes.c_uint64), ("bits", _i32),
                ("rank", _i32), ("dims", _i32 * _MAX_RANK)]


class _ConvParams(ctypes.Structure):
    _fields_ = _int_fields("stride_height", "stride_width", "dilation_height", "dilation_width",
                           "pad_height", "pad_width", "input_offset", "output_offset",
                           "act_min", "act_max")


class _DepthwiseParams(ctypes.Structure):
    _fields_ = _int_fields("stride_height", "stride_width", "dilation_height", "dilation_width",
                           "pad_height", "pad_width", "depth_multiplier", "input_offset",
                           "output_offset", "act_min", "act_max")


class _FcParams(ctypes.Structure):
    _fields_ = _int_fields("input_offset", "output_offset", "act_min", "act_max")


class _AddParams(ctypes.Structure):
    _fields_ = _int_fields("input1_offset", "input2_offset", "output_offset", "left_shift",
                           "input1_multiplier", "input1_shift", "input2_multiplier",
                           "input2_shift", "output_multiplier", "output_shift",
                           "act_min", "act_max")


class _PoolParams(ctypes.Structure):
    _fields_ = _int_fields("filter_height", "filter_width", "stride_height", "stride_width",
                           "pad_height", "pad_width", "input_zero_point", "output_zero_point",
                           "output_multiplier", "output_shift", "act_min", "act_max")


# TFQ_STRUCT_* ids of the C header, checked against sizeof() at load time.
_STRUCTS = ((0, _Tensor), (1, _ConvParams), (2, _DepthwiseParams), (3, _FcParams),
            (4, _AddParams), (5, _PoolParams))

_P = ctypes.POINTER
_I32P = _P(_i32)
_SIGNATURES = {
    "tfq_abi_version": (_i32, []),
    "tfq_struct_size": (_i32, [_i32]),
    "tfq_status_string": (ctypes.c_char_p, [_i32]),
    "tfq_conv_2d": (_i32, [_P(_ConvParams), _I32P, _I32P, _i32, _P(_Tensor), _P(_Tensor),
                           _I32P, _i32, _P(_Tensor)]),
    "tfq_depthwise_conv_2d": (_i32, [_P(_DepthwiseParams), _I32P, _I32P, _i32, _P(_Tensor),
                                     _P(_Tensor), _I32P, _i32, _P(_Tensor)]),
    "tfq_fully_connected": (_i32, [_P(_FcParams), _I32P, _I32P, _i32, _P(_Tensor), _P(_Tensor),
                                   _I32P, _i32, _P(_Tensor)]),
    "tfq_add": (_i32, [_P(_AddParams), _P(_Tensor), _P(_Tensor), _P(_Tensor)]),
    "tfq_average_pool_2d": (_i32, [_P(_PoolParams), _P(_Tensor), _P(_Tensor)]),
    "tfq_max_pool_2d": (_i32, [_P(_PoolParams), _P(_Tensor), _P(_Tensor)]),
    "tfq_leaky_relu": (_i32, [_i32] * 6 + [_P(_Tensor), _P(_Tensor)]),
    "tfq_pack": (_i32, [ctypes.c_void_p, _i32, _i32, ctypes.c_void_p, ctypes.c_uint64]),
    "tfq_unpack": (_i32, [ctypes.c_void_p, ctypes.c_uint64, _i32, _i32, ctypes.c_void_p,
                          ctypes.c_uint64]),
}

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_lib = None
_lib_lock = threading.Lock()


def library_path():
    """Path of the compiled tflm_ext library, or None when it has not been built."""
    override = os.environ.get("TFQ_TFLM_EXT_LIB")
    if override:
        return override
    found = sorted(glob.glob(os.path.join(_PACKAGE_DIR, "_tflm_ext*.so"))
                   + glob.glob(os.path.join(_PACKAGE_DIR, "_tflm_ext*.pyd"))
                   + glob.glob(os.path.join(_PACKAGE_DIR, "_tflm_ext*.dylib")))
    return found[0] if found else None


def _load():
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = library_path()
        if path is None or not os.path.exists(path):
            raise NativeLibraryError(
                "the C++ kernel library tfq_tiny/_tflm_ext*.so (built from tflm_ext/) was not "
                f"found{'' if path is None else ' at ' + path}. Build it by running "
                "`pip install -e .` in the tfq_tiny repository root (needs a C++17 compiler, "
                "e.g. g++)."
            )
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise NativeLibraryError(
                f"could not load the C++ kernel library {path}: {exc}. Rebuild it with "
                "`pip install -e .` in the tfq_tiny repository root."
            ) from exc
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                fn = getattr(lib, name)
            except AttributeError as exc:
                raise NativeLibraryError(
                    f"{path} has no symbol {name}: it is stale. Rebuild it with "
                    "`pip install -e .`."
                ) from exc
            fn.restype, fn.argtypes = restype, argtypes
        version = lib.tfq_abi_version()
        bad = [cls.__name__ for which, cls in _STRUCTS
               if lib.tfq_struct_size(which) != ctypes.sizeof(cls)]
        if version != ABI_VERSION or bad:
            raise NativeLibraryError(
                f"{path} has C ABI version {version} (expected {ABI_VERSION})"
                f"{'; struct layouts differ: ' + ', '.join(bad) if bad else ''}. Rebuild it "
                "with `pip install -e .`."
            )
        _lib = lib
        return _lib


def is_available():
    """True when the compiled library can be loaded."""
    try:
        _load()
    except NativeLibraryError:
        return False
    return True


def status_string(status):
    return _load().tfq_status_string(int(status)).decode("utf-8", "replace")


def _check(op, status):
    if status != 0:
        raise NativeKernelError(op, int(status), status_string(status))


# ---- argument helpers ----------------------------------------------------------------------

def _bits(bits, name):
    return check_bits(bits, what=name, allowed=DEPLOYABLE_BITS)


def _int32(value, name):
    """A Python/NumPy integer as a C int32, or a clear error."""
    as_int = int(value)
    if as_int != value or not -(1 << 31) <= as_int < (1 << 31):
        raise TfqError(f"{name} must be an int32 integer, got {value!r}.")
    return as_int


def _int32_array(values, name, channels=None):
    """Contiguous int32 copy; a single value is repeated over ``channels`` (as the reference)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)  # integral floats are accepted, as the reference does
    if arr.dtype.kind not in "iub":
        raise TfqError(f"{name} must hold integers, got dtype {arr.dtype}.")
    flat = arr.reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < -(1 << 31) or flat.max() >= (1 << 31)):
        raise TfqError(f"{name} has values outside int32.")
    if channels is not None and flat.size == 1 and channels != 1:
        flat = np.repeat(flat, channels)
    return np.ascontiguousarray(flat, dtype=np.int32)


def _ptr(arr):
    return arr.ctypes.data_as(_I32P) if arr is not None else None


def _as_int_array(x, name):
    arr = np.asarray(x)
    if arr.dtype.kind not in "iub":
        raise TfqError(f"{name} must be an integer array, got dtype {arr.dtype}.")
    if arr.ndim > _MAX_RANK:
        raise TfqError(f"{name} has {arr.ndim} dimensions; the C++ kernels take at most 4.")
    return arr


def _tensor(buf, shape, bits):
    """A _Tensor describing the uint8 buffer ``buf`` (kept alive by the caller)."""
    t = _Tensor()
    t.data = buf.ctypes.data
    t.nbytes = buf.nbytes
    t.bits = bits
    t.rank = len(shape)
    for i, d in enumerate(shape):
        t.dims[i] = _int32(d, "dimension")
    return t


def _packed_input(x, bits, name):
    arr = _as_int_array(x, name)
    buf = np.ascontiguousarray(pack(arr, bits), dtype=np.uint8)
    if buf.size == 0:  # keep a valid pointer; the C++ side rejects the empty shape itself
        buf = np.zeros(1, dtype=np.uint8)
    return buf, _tensor(buf, arr.shape, bits)


def _output(shape, bits):
    count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    if count <= 0 or any(int(d) <= 0 for d in shape):
        raise TfqError(f"output shape {tuple(shape)} has a dimension <= 0.")
    buf = np.zeros(max(packed_size(count, bits), 1), dtype=np.uint8)
    return buf, _tensor(buf, shape, bits), count


def _result(buf, bits, count, shape):
    return unpack(buf, bits, count).reshape(shape)


def _weighted(op, fn, params, x, w, bias, out_multiplier, out_shift, out_shape, channels,
              input_bits, weight_bits, output_bits, per_tensor_ok=False):
    input_bits = _bits(input_bits, "input_bits")
    weight_bits = _bits(weight_bits, "weight_bits")
    output_bits = _bits(output_bits, "output_bits")
    x_buf, x_t = _packed_input(x, input_bits, f"{op} input")
    w_buf, w_t = _packed_input(w, weight_bits, f"{op} filter")
    quant_channels = None if per_tensor_ok else channels
    mult = _int32_array(out_multiplier, "out_multiplier", quant_channels)
    shift = _int32_array(out_shift, "out_shift", quant_channels)
    if mult.size != shift.size:
        raise TfqError(f"{op}: out_multiplier has {mult.size} entries but out_shift {shift.size}.")
    b = None if bias is None else _int32_array(bias, "bias", channels)
    out_buf, out_t, count = _output(out_shape, output_bits)
    status = fn(ctypes.byref(params), _ptr(mult), _ptr(shift), mult.size, ctypes.byref(x_t),
                ctypes.byref(w_t), _ptr(b), 0 if b is None else b.size, ctypes.byref(out_t))
    _check(op, status)
    del x_buf, w_buf
    return _result(out_buf, output_bits, count, out_shape)


# ---- kernels (signatures of tfq_tiny.runtime.kernels + bit widths) -------------------------

def conv_2d(x, w, bias, *, input_zp, output_zp, out_multiplier, out_shift, act_min, act_max,
            stride=(1, 1), dilation=(1, 1), pad=(0, 0), out_hw, input_bits=8, weight_bits=8,
            output_bits=8):
    """CONV_2D (per-channel) in C++: x NHWC, w OHWI, bias int32[O] or None."""
    lib = _load()
    x, w = _as_int_array(x, "conv input"), _as_int_array(w, "conv filter")
    if x.ndim != 4 or w.ndim != 4:
        raise NativeKernelError("conv_2d", 3, f"input and filter must be 4-D, got {x.shape} "
                                f"and {w.shape}")
    (sh, sw), (dh, dw) = _pair(stride, "stride"), _pair(dilation, "dilation")
    (ph, pw), (oh, ow) = _pair(pad, "pad"), _pair(out_hw, "out_hw")
    p = _ConvParams(sh, sw, dh, dw, ph, pw, -_int32(input_zp, "input_zp"),
                    _int32(output_zp, "output_zp"), _int32(act_min, "act_min"),
                    _int32(act_max, "act_max"))
    out_shape = (x.shape[0], oh, ow, w.shape[0])
    return _weighted("conv_2d", lib.tfq_conv_2d, p, x, w, bias, out_multiplier, out_shift,
                     out_shape, w.shape[0], input_bits, weight_bits, output_bits)


def depthwise_conv_2d(x, w, bias, *, depth_multiplier, input_zp, output_zp, out_multiplier,
                      out_shift, act_min, act_max, stride=(1, 1), dilation=(1, 1), pad=(0, 0),
                      out_hw, input_bits=8, weight_bits=8, output_bits=8):
    """DEPTHWISE_CONV_2D (per-channel) in C++: w [1, KH, KW, C * depth_multiplier]."""
    lib = _load()
    x, w = _as_int_array(x, "depthwise input"), _as_int_array(w, "depthwise filter")
    if x.ndim != 4 or w.ndim != 4:
        raise NativeKernelError("depthwise_conv_2d", 3, f"input and filter must be 4-D, got "
                                f"{x.shape} and {w.shape}")
    (sh, sw), (dh, dw) = _pair(stride, "stride"), _pair(dilation, "dilation")
    (ph, pw), (oh, ow) = _pair(pad, "pad"), _pair(out_hw, "out_hw")
    p = _DepthwiseParams(sh, sw, dh, dw, ph, pw, _int32(depth_multiplier, "depth_multiplier"),
                         -_int32(input_zp, "input_zp"), _int32(output_zp, "output_zp"),
                         _int32(act_min, "act_min"), _int32(act_max, "act_max"))
    out_shape = (x.shape[0], oh, ow, w.shape[3])
    return _weighted("depthwise_conv_2d", lib.tfq_depthwise_conv_2d, p, x, w, bias,
                     out_multiplier, out_shift, out_shape, w.shape[3], input_bits, weight_bits,
                     output_bits)


def fully_connected(x, w, bias, *, input_zp, output_zp, out_multiplier, out_shift, act_min,
                    act_max, weights_zp=0, input_bits=8, weight_bits=8, output_bits=8):
    """FULLY_CONNECTED in C++: x [N, K], w [O, K]; multipliers per channel (O) or per tensor (1).

    Weights are symmetric in the numeric contract: ``weights_zp`` must be 0.
    """
    lib = _load()
    if int(weights_zp) != 0:
        raise TfqError(f"fully_connected: the C++ kernels take symmetric weights only "
                       f"(weights_zp 0), got weights_zp={weights_zp!r}.")
    x, w = _as_int_array(x, "fully_connected input"), _as_int_array(w, "fully_connected filter")
    if x.ndim != 2 or w.ndim != 2:
        raise NativeKernelError("fully_connected", 3, f"x must be [N, K] and w [O, K], got "
                                f"{x.shape} and {w.shape}")
    p = _FcParams(-_int32(input_zp, "input_zp"), _int32(output_zp, "output_zp"),
                  _int32(act_min, "act_min"), _int32(act_max, "act_max"))
    out_shape = (x.shape[0], w.shape[0])
    # A single multiplier stays per-tensor (quant_count 1), as TFLM's per-tensor path.
    return _weighted("fully_connected", lib.tfq_fully_connected, p, x, w, bias, out_multiplier,
                     out_shift, out_shape, w.shape[0], input_bits, weight_bits, output_bits,
                     per_tensor_ok=True)


def add(x1, x2, *, input1_zp, input2_zp, output_zp, left_shift, input1_multiplier, input1_shift,
        input2_multiplier, input2_shift, output_multiplier, output_shift, act_min, act_max,
        input_bits=8, output_bits=8):
    """ADD (TFLM int8 arithmetic, NumPy/TFLM broadcasting up to 4-D) in C++.

    ``input_bits`` is one width for both inputs, or a pair (input1_bits, input2_bits).
    """
    lib = _load()
    in1_bits, in2_bits = (input_bits, input_bits) if np.isscalar(input_bits) else input_bits
    in1_bits, in2_bits = _bits(in1_bits, "input_bits"), _bits(in2_bits, "input_bits")
    output_bits = _bits(output_bits, "output_bits")
    x1, x2 = _as_int_array(x1, "add input1"), _as_int_array(x2, "add input2")
    try:
        out_shape = np.broadcast_shapes(x1.shape, x2.shape)
    except ValueError as exc:
        raise TfqError(f"add: shapes {x1.shape} and {x2.shape} do not broadcast.") from exc
    if len(out_shape) == 0:  # scalars: treat as [1]
        x1, x2, out_shape = x1.reshape(1), x2.reshape(1), (1,)
    a_buf, a_t = _packed_input(x1.reshape(x1.shape or (1,)), in1_bits, "add input1")
    b_buf, b_t = _packed_input(x2.reshape(x2.shape or (1,)), in2_bits, "add input2")
    p = _AddParams(-_int32(input1_zp, "input1_zp"), -_int32(input2_zp, "input2_zp"),
                   _int32(output_zp, "output_zp"), _int32(left_shift, "left_shift"),
                   _int32(input1_multiplier, "input1_multiplier"),
                   _int32(input1_shift, "input1_shift"),
                   _int32(input2_multiplier, "input2_multiplier"),
                   _int32(input2_shift, "input2_shift"),
                   _int32(output_multiplier, "output_multiplier"),
                   _int32(output_shift, "output_shift"), _int32(act_min, "act_min"),
                   _int32(act_max, "act_max"))
    out_buf, out_t, count = _output(out_shape, output_bits)
    _check("add", lib.tfq_add(ctypes.byref(p), ctypes.byref(a_t), ctypes.byref(b_t),
                              ctypes.byref(out_t)))
    del a_buf, b_buf
    return _result(out_buf, output_bits, count, out_shape)


def leaky_relu(x, *, input_zp, output_zp, identity_multiplier, identity_shift,
               alpha_multiplier, alpha_shift, act_min=None, act_max=None, input_bits=8,
               output_bits=8):
    """LEAKY_RELU (TFLM's QuantizeLeakyRelu on packed 2/4/8-bit tensors) in C++; it clamps to
    the full output range, which ``act_min``/``act_max`` may name (the NumPy kernel's form)."""
    lib = _load()
    input_bits, output_bits = _bits(input_bits, "input_bits"), _bits(output_bits, "output_bits")
    full = int_range(output_bits)
    if (act_min, act_max) not in ((None, None), full):
        raise NativeKernelError("leaky_relu", 10, f"clamps to the full {output_bits}-bit range "
                                f"{list(full)}, not [{act_min}, {act_max}]")
    x = _as_int_array(x, "leaky_relu input")
    shape = x.shape or (1,)
    x_buf, x_t = _packed_input(x.reshape(shape), input_bits, "leaky_relu input")
    out_buf, out_t, count = _output(shape, output_bits)
    _check("leaky_relu", lib.tfq_leaky_relu(
        -_int32(input_zp, "input_zp"), _int32(output_zp, "output_zp"),
        _int32(identity_multiplier, "identity_multiplier"),
        _int32(identity_shift, "identity_shift"), _int32(alpha_multiplier, "alpha_multiplier"),
        _int32(alpha_shift, "alpha_shift"), ctypes.byref(x_t), ctypes.byref(out_t)))
    del x_buf
    return _result(out_buf, output_bits, count, shape).reshape(x.shape)


def _pool(op, fn, x, filter_hw, stride, pad, out_hw, act_min, act_max, input_bits, output_bits,
          requant=(0, 0, 0, 0)):
    """``requant``: (input_zp, output_zp, output_multiplier, output_shift) of the average pool."""
    input_bits = _bits(input_bits, "input_bits")
    output_bits = _bits(output_bits, "output_bits")
    x = _as_int_array(x, f"{op} input")
    if x.ndim != 4:
        raise NativeKernelError(op, 3, f"input must be 4-D NHWC, got shape {x.shape}")
    (fh, fw), (sh, sw) = _pair(filter_hw, "filter_hw"), _pair(stride, "stride")
    (ph, pw), (oh, ow) = _pair(pad, "pad"), _pair(out_hw, "out_hw")
    requant = [_int32(v, name) for v, name in zip(
        requant, ("input_zp", "output_zp", "output_multiplier", "output_shift"))]
    p = _PoolParams(fh, fw, sh, sw, ph, pw, *requant, _int32(act_min, "act_min"),
                    _int32(act_max, "act_max"))
    x_buf, x_t = _packed_input(x, input_bits, f"{op} input")
    out_shape = (x.shape[0], oh, ow, x.shape[3])
    out_buf, out_t, count = _output(out_shape, output_bits)
    _check(op, fn(ctypes.byref(p), ctypes.byref(x_t), ctypes.byref(out_t)))
    del x_buf
    return _result(out_buf, output_bits, count, out_shape)


def requantized_average_pool_2d(x, *, filter_hw, stride, pad, out_hw, input_zp, output_zp,
                                output_multiplier, output_shift, act_min, act_max, input_bits=8,
                                output_bits=8):
    """TFQ_AVERAGE_POOL_2D in C++: the average pool whose output has its own grid.

    Per window of n in-image elements: ``MultiplyByQuantizedMultiplier(sum(x - input_zp),
    output_multiplier, output_shift)`` divided by n rounding half away from zero, plus
    ``output_zp``, clamped. The kernel rejects a multiplier outside [2^30, 2^31) (other than
    0), a shift outside [-31, 30], and ``filter_h * filter_w * 2^input_bits *
    2^max(output_shift, 0) >= 2^31``.
    """
    lib = _load()
    return _pool("requantized_average_pool_2d", lib.tfq_average_pool_2d, x, filter_hw, stride,
                 pad, out_hw, act_min, act_max, input_bits, output_bits,
                 requant=(input_zp, output_zp, output_multiplier, output_shift))


def max_pool_2d(x, *, filter_hw, stride, pad, out_hw, act_min, act_max, input_bits=8,
                output_bits=8):
    """MAX_POOL_2D in C++ (input and output share one grid)."""
    lib = _load()
    return _pool("max_pool_2d", lib.tfq_max_pool_2d, x, filter_hw, stride, pad, out_hw,
                 act_min, act_max, input_bits, output_bits)


def pack_native(values, bits):
    """The C++ ``tfq::Pack`` (for cross-checking against ``tfq_tiny.export.packing.pack``)."""
    lib = _load()
    bits = _bits(bits, "bits")
    arr = np.ascontiguousarray(np.asarray(values).reshape(-1), dtype=np.int8)
    out = np.zeros(max(packed_size(arr.size, bits), 1), dtype=np.uint8)
    _check("pack", lib.tfq_pack(arr.ctypes.data, arr.size, bits, out.ctypes.data, out.size))
    return out[:packed_size(arr.size, bits)]


def unpack_native(buf, bits, count):
    """The C++ ``tfq::Unpack`` (for cross-checking against ``tfq_tiny.export.packing.unpack``)."""
    lib = _load()
    bits = _bits(bits, "bits")
    raw = np.ascontiguousarray(np.frombuffer(bytes(buf), dtype=np.uint8))
    if raw.size == 0:
        raw = np.zeros(1, dtype=np.uint8)[:0]
    out = np.zeros(max(int(count), 1), dtype=np.int8)
    _check("unpack", lib.tfq_unpack(raw.ctypes.data, raw.size, int(count), bits,
                                    out.ctypes.data, out.size))
    return out[:int(count)]
