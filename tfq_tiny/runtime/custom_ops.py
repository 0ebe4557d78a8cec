"""tfq_tiny's TFQ_* custom operators for the interpreter shim, as ``tflm_ext/tflm/tfq_ops.cc``.

The operator contract is ``tflm_ext/README.md``: seven custom codes, options in a flexbuffer vector
of integers (``OPTION_FIELDS``: bit widths, ``act_min``/``act_max``, padding, strides, then the
logical shapes; older exports: a map with the same names), quantization from the tensors' affine
parameters. Bit widths come from the options, not from the tensor type: an
``INT8`` tensor whose width is 4 or 2 holds packed bytes at its front. The converter declares
such a tensor at its packed size: with its innermost dimension in bytes, marked
``INNERMOST_BYTES`` in the options, or as ``[1, bytes]`` with its logical shape in the options
(``input_shape``, ``input2_shape``, ``output_shape``); without those keys the logical shape is
the tensor's own (layout-1 exports: a one-byte-per-element tensor, packed bytes first, zeros after).
The shim keeps a packed tensor as those raw bytes (int8 array of the declared shape);
``INT4``/``INT2`` tensors are held unpacked by the interpreter and used as they are.

Each operator unpacks its inputs with ``export.packing.unpack``, runs a kernel and packs its
output. The kernels are the NumPy references (``runtime.kernels``) by default, or the C++
kernels through ``runtime.native`` (``Interpreter(..., kernels="native")``), which then run on
exactly the packed bytes of the flatbuffer. Prepare mirrors the glue's checks so a model the
glue rejects is rejected here with a ModelFileError naming the operator.

Importing ``tfq_tiny.runtime`` registers the NumPy versions with ``register_custom_op``.
"""
import numpy as np
from flatbuffers import flexbuffers

from tfq_tiny.export import packing
from tfq_tiny.quantization.grid import DEPLOYABLE_BITS, int_range
from tfq_tiny.runtime import arithmetic as ar
from tfq_tiny.runtime import kernels
from tfq_tiny.runtime.interpreter import register_custom_op

CONV_2D = "TFQ_CONV_2D"
DEPTHWISE_CONV_2D = "TFQ_DEPTHWISE_CONV_2D"
FULLY_CONNECTED = "TFQ_FULLY_CONNECTED"
ADD = "TFQ_ADD"
AVERAGE_POOL_2D = "TFQ_AVERAGE_POOL_2D"
MAX_POOL_2D = "TFQ_MAX_POOL_2D"
LEAKY_RELU = "TFQ_LEAKY_RELU"
CUSTOM_CODES = (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, AVERAGE_POOL_2D, MAX_POOL_2D,
                LEAKY_RELU)

OPTION_FIELDS = ("input_bits", "weight_bits", "output_bits", "act_min", "act_max", "padding",
                 "stride_h", "stride_w", "filter_h", "filter_w", "dilation_h", "dilation_w",
                 "depth_multiplier", "input2_bits")
"""Custom options of layouts 3 and 4: a flexbuffer vector of integers holding these fields in this
order (``padding`` as ``PADDING_CODES``), then ``input_shape``, ``input2_shape`` and
``output_shape``, each as its rank (0: not given) followed by its dims, or as ``INNERMOST_BYTES``
alone (layout 4). A vector may end early; the fields it lacks take their defaults. Layout 2 wrote
a flexbuffer map with these names as keys; both are read."""
PADDING_CODES = {"SAME": 1, "VALID": 2, "EXPLICIT": 3}
"""``EXPLICIT`` (convolutions only): ``pad_h``/``pad_w`` zeros before the first row/column, and
after the last as many as the output shape implies (a causal Conv1D: ``(k - 1) * dilation``
before, none after)."""
SHAPE_KEYS = ("input_shape", "input2_shape", "output_shape")
TRAILING_FIELDS = ("pad_h", "pad_w", "alpha_bits")
"""Integers after the three shape slots (which are then all written, rank 0 where absent); a
vector that ends before them leaves them 0. ``alpha_bits``: TFQ_LEAKY_RELU's slope as the bits
of an IEEE-754 float32 (``float32_bits``), TFLM's ``LeakyReluOptions.alpha`` exactly."""
INT_KEYS = tuple(key for key in OPTION_FIELDS if key != "padding") + TRAILING_FIELDS
INNERMOST_BYTES = -1
"""A shape slot holding -1 instead of a rank (layout 4): the tensor is INT8 (or UINT8) declared at its
logical shape except the innermost dimension, which counts the bytes its packed values occupy
(``[1, 24, 24, 8]`` holds 4-bit ``[1, 24, 24, 16]``). Older readers reject the -1 cleanly."""
_DEFAULTS = {"input_bits": 8, "weight_bits": 8, "output_bits": 8, "stride_h": 1, "stride_w": 1,
             "dilation_h": 1, "dilation_w": 1, "depth_multiplier": 1, "filter_h": 0, "filter_w": 0,
             "pad_h": 0, "pad_w": 0, "alpha_bits": 0}
MAX_RANK = 4  # tflm_ext/core: tfq::kMaxRank
MAX_ELEMENTS = 1 << 24  # the interpreter's MAX_TENSOR_ELEMENTS
BACKENDS = ("numpy", "native")


# ---- storage: packed memory images <-> values ----------------------------------------------

def pack_storage(values, bits, shape=None):
    """``values`` stored at ``bits`` bits in an int8 tensor of ``shape``: packed bytes, then zeros.

    ``shape`` is the declared shape of the tensor: its packed size (what the converter declares:
    ``[1, bytes]`` or the logical shape with the innermost dimension in bytes) or, by default,
    ``values.shape`` (the one-byte-per-element memory image of layout-1 exports). ``bits=8`` with the default shape returns plain int8.
    """
    values = np.asarray(values)
    shape = values.shape if shape is None else tuple(shape)
    flat = packing.pack(values, bits)
    size = int(np.prod(shape, dtype=np.int64))
    if size < flat.size:
        raise ValueError(f"{values.size} values at {bits} bits need {flat.size} bytes; shape {list(shape)} "
                         f"holds {size}.")
    image = np.zeros(size, np.uint8)
    image[:flat.size] = flat
    return image.view(np.int8).reshape(shape)


def unpack_storage(image, bits, shape=None):
    """The values of logical ``shape`` (default: ``image.shape``) packed at the front of ``image``."""
    image = np.asarray(image)
    shape = image.shape if shape is None else tuple(shape)
    raw = np.ascontiguousarray(image).reshape(-1).view(np.uint8)
    return packing.unpack(raw, bits, int(np.prod(shape, dtype=np.int64))).reshape(shape)


def _wrap_int32(value):
    """The low 32 bits of an option integer as int32, as flexbuffers' AsInt32 reads any stored
    width (an unsigned 64-bit value included)."""
    return (int(value) + (1 << 31)) % (1 << 32) - (1 << 31)


def option_default(key, get):
    """The contract's default of option ``key``; ``get(other)`` gives the value of another option
    (``input2_bits`` defaults to ``input_bits``, the act range to the range of ``output_bits``)."""
    if key == "input2_bits":
        return get("input_bits")
    if key in ("act_min", "act_max"):
        return int_range(get("output_bits"))[key == "act_max"]
    return _DEFAULTS.get(key)


class OptionsError(ValueError):
    """Custom options whose layout-3 vector cannot be split into fields and shapes."""


def encode_options(options):
    """Layout-3 custom options (``OPTION_FIELDS``) of ``options``, a dict keyed by field and shape
    names (missing fields take their defaults); trailing defaults and absent shapes are left out."""
    def value(key):
        return options[key] if key in options else option_default(key, value)

    def code(key, v):
        return PADDING_CODES.get(v, 0) if key == "padding" else int(v)

    fields = [code(key, value(key)) for key in OPTION_FIELDS]
    shapes = []
    for key in SHAPE_KEYS:
        if options.get(key) == INNERMOST_BYTES:
            shapes.append(INNERMOST_BYTES)
            continue
        dims = [int(d) for d in options.get(key) or ()]
        shapes += [len(dims)] + dims
    trailing = [int(value(key)) for key in TRAILING_FIELDS]
    while trailing and trailing[-1] == option_default(TRAILING_FIELDS[len(trailing) - 1], value):
        trailing.pop()
    while shapes and shapes[-1] == 0 and not trailing:
        shapes.pop()
    shapes += trailing
    while not shapes and len(fields) > 1:
        key = OPTION_FIELDS[len(fields) - 1]
        if fields[-1] != code(key, option_default(key, value)):
            break
        fields.pop()
    builder = flexbuffers.Builder()
    builder.TypedVectorFromElements(fields + shapes)
    return bytes(builder.Finish())


def decode_options(buffer):
    """The options of a TFQ operator as a dict keyed by field and shape names: a layout-3 vector
    (fields it lacks are left out) or a layout-2 map as it is. Values are not checked; raises
    OptionsError for a root that is neither or a vector whose shapes run past its end."""
    root = flexbuffers.GetRoot(bytearray(buffer))
    if root.IsMap:
        return root.Value
    if not (root.IsVector or root.IsTypedVector or root.IsFixedTypedVector):  # flatbuffers' IsAnyVector is broken
        raise OptionsError("custom options must be a flexbuffer vector of integers (or, in older exports, a map).")
    values = list(root.Value)
    options = dict(zip(OPTION_FIELDS, values))
    padding = options.pop("padding", 0)
    if type(padding) is not int or padding != 0:
        names = {code: name for name, code in PADDING_CODES.items()}
        options["padding"] = names.get(padding, padding) if type(padding) is int else padding
    at = len(OPTION_FIELDS)
    for key in SHAPE_KEYS:
        if at >= len(values):
            break
        rank = values[at]
        if rank == INNERMOST_BYTES:
            options[key] = INNERMOST_BYTES
            at += 1
            continue
        if type(rank) is not int or not 0 <= rank <= MAX_RANK or at + 1 + rank > len(values):
            raise OptionsError(f"option {key!r}: element {at} must be a rank from 0 to {MAX_RANK} (or "
                               f"{INNERMOST_BYTES}: innermost dimension in bytes) followed by that many dims, "
                               f"got {rank!r} with {len(values) - at - 1} elements after it.")
        if rank:
            options[key] = values[at + 1:at + 1 + rank]
        at += 1 + rank
    options.update(zip(TRAILING_FIELDS, values[at:at + len(TRAILING_FIELDS)]))
    return options


def read_options(node):
    """The custom options of ``node`` as a dict (``decode_options``), checked as the glue's
    ParseOptions."""
    node.check(node.custom_options is not None and len(node.custom_options) > 0,
               "custom options are missing; TFQ_* operators need a flexbuffer vector with at least "
               "their bit widths.")
    try:
        options = decode_options(node.custom_options)
    except OptionsError as exc:
        node.fail(str(exc))
    except Exception as exc:  # a corrupted flexbuffer can fail in many ways inside the reader
        node.fail(f"custom options are not a readable flexbuffer ({type(exc).__name__}).")
    parsed = {}
    for key in INT_KEYS:
        if key in options and options[key] is not None:
            value = options[key]
            node.check(type(value) is int, f"option {key!r} must be an integer, got {value!r}.")
            parsed[key] = _wrap_int32(value)
    for key in SHAPE_KEYS:
        if options.get(key) == INNERMOST_BYTES:
            parsed[key] = INNERMOST_BYTES
        elif options.get(key) is not None:
            dims = options[key]
            node.check(isinstance(dims, list) and 1 <= len(dims) <= MAX_RANK
                       and all(type(d) is int and d >= 1 for d in dims)
                       and np.prod(dims, dtype=np.float64) <= MAX_ELEMENTS,
                       f"option {key!r} must be a vector of 1 to {MAX_RANK} positive integers "
                       f"(at most {MAX_ELEMENTS} elements), got {dims!r}.")
            parsed[key] = tuple(dims)
    padding = options.get("padding")
    if padding is not None:
        node.check(padding in PADDING_CODES,
                   f"option 'padding' must be one of {list(PADDING_CODES)}, got {padding!r}.")
        parsed["padding"] = padding
    return parsed


class _Options:
    """Options with the contract's defaults, plus the bit-width and range checks of the glue."""

    def __init__(self, node):
        self.node = node
        self.raw = read_options(node)
        for key in ("input_bits", "input2_bits", "weight_bits", "output_bits"):
            bits = self.get(key)
            node.check(bits in DEPLOYABLE_BITS, f"option {key!r} is {bits}; use one of {list(DEPLOYABLE_BITS)}.")

    def get(self, key):
        if key in self.raw:
            return self.raw[key]
        return option_default(key, self.get)

    def padding(self, allowed=("SAME", "VALID", "EXPLICIT")):
        self.node.check("padding" in self.raw, f"option 'padding' (one of {list(allowed)}) is required.")
        self.node.check(self.raw["padding"] in allowed,
                        f"option 'padding' is {self.raw['padding']!r}; this operator takes {list(allowed)}.")
        return self.raw["padding"]

    def act_range(self, zero_points):
        """(act_min, act_max) after checking zero points and the range against the bit widths."""
        out_bits = self.get("output_bits")
        lo, hi = self.get("act_min"), self.get("act_max")
        for zp, bits, what in zero_points:
            qmin, qmax = int_range(bits)
            self.node.check(qmin <= zp <= qmax, f"{what} zero point {zp} is outside the {bits}-bit range.")
        qmin, qmax = int_range(out_bits)
        self.node.check(qmin <= lo <= hi <= qmax,
                        f"act_min/act_max [{lo}, {hi}] must be an ordered range inside [{qmin}, {qmax}] "
                        f"(output_bits {out_bits}).")
        return lo, hi


def _packed(node, t, bits, what):
    """True when ``t`` holds a packed memory image, False when it holds the values themselves."""
    node.check(t is not None, f"{what} tensor is missing.")
    node.check(t.bits is not None and t.bits <= 8 and t.quantized,
               f"{what} (tensor {t.index}) must be a quantized integer tensor, is {t.type}.")
    if t.bits == bits:
        return False
    node.check(t.type == "INT8",
               f"{what} (tensor {t.index}) is {t.type} but the options store it at {bits} bits; "
               "type it INT8 (packed bytes) or INT4/INT2 to match.")
    return True


def innermost_bytes_shape(node, t, bits, what):
    """The logical shape of ``t`` declared with its innermost dimension in bytes (``INNERMOST_BYTES``)."""
    node.check(bits < 8 and t.type in ("INT8", "UINT8") and len(t.shape) >= 1,
               f"{what} (tensor {t.index}, {t.type} {list(t.shape)}) is marked as declared with its innermost "
               f"dimension in bytes; that needs an INT8/UINT8 tensor stored below 8 bits (here {bits}).")
    return tuple(t.shape[:-1]) + (t.shape[-1] * 8 // bits,)


class _Port:
    """An activation tensor as its kernel sees it: the logical ``shape`` and ``size`` (from the
    option ``shape_key`` when present, else the tensor's), and ``read``/``write`` between the
    stored array (packed bytes, or the values themselves) and values of that shape."""

    def __init__(self, node, opt, t, bits_key, shape_key, what):
        bits = opt.get(bits_key)
        packed = _packed(node, t, bits, what)
        given = opt.raw.get(shape_key)
        if given == INNERMOST_BYTES:
            given = innermost_bytes_shape(node, t, bits, what)
        self.shape = tuple(t.shape if given is None else given)
        self.size = int(np.prod(self.shape, dtype=np.int64))
        if packed:
            need = packing.packed_size(self.size, bits)
            node.check(t.size >= need, f"{what} (tensor {t.index}) holds {t.size} bytes; {self.size} "
                                       f"{bits}-bit values of shape {list(self.shape)} need {need}.")
        else:
            node.check(self.size == t.size, f"{what} shape {list(self.shape)} (option {shape_key!r}) has "
                                            f"{self.size} elements, tensor {t.index} {t.size}.")
        self._bits, self._packed, self._stored_shape = bits, packed, t.shape

    def read(self, array):
        if self._packed:
            return unpack_storage(array, self._bits, self.shape)
        return np.asarray(array).reshape(self.shape)

    def write(self, values):
        if self._packed:
            return pack_storage(values, self._bits, self._stored_shape)
        return np.asarray(values)


def _per_tensor(node, t, what):
    node.check(t.scales.size >= 1, f"{what} (tensor {t.index}) has no scale.")
    scale = float(t.scales[0])
    node.check(np.isfinite(scale) and scale > 0, f"{what} (tensor {t.index}) has scale {scale}; "
               "scales must be positive and finite.")
    return scale, int(t.zero_points[0])


def _weights(node, t, bits, channels, channel_axis):
    """(filter values, per-channel float64 scales) of a constant filter read at ``bits`` bits."""
    node.check(t is not None and t.is_constant, "the filter must be a constant tensor.")
    values = unpack_storage(t.data, bits) if _packed(node, t, bits, "filter") else t.data
    node.check(t.scales.size in (1, channels),
               f"filter has {t.scales.size} scales for {channels} output channels (need one per channel, or one).")
    node.check(not np.any(t.zero_points), "filter zero points must be 0 (symmetric weights).")
    if t.scales.size > 1:
        node.check(t.quantized_dimension == channel_axis,
                   f"filter is quantized along dimension {t.quantized_dimension}, expected {channel_axis}.")
    return values, np.broadcast_to(t.scales.astype(np.float64), (channels,))


def _bias(node, t, channels):
    if t is None:
        return None
    node.check(t.is_constant and t.type == "INT32" and t.size == channels,
               f"bias (tensor {t.index}) must be a constant INT32 tensor with {channels} values.")
    return t.data.reshape(-1).astype(np.int64)


def _multipliers(input_scale, filter_scales, output_scale):
    """Per-channel QuantizeMultiplier(double(s_in) * double(s_w[c]) / double(s_out)), as the glue."""
    reals = [float(input_scale) * float(s) / float(output_scale) for s in filter_scales]
    return ar.quantize_multiplier_array(reals)


class _Backend:
    """The kernels a prepared operator calls: NumPy references or the C++ kernels via ctypes."""

    def __init__(self, name):
        if name not in BACKENDS:
            raise ValueError(f"kernels must be one of {BACKENDS}, got {name!r}.")
        self.name = name

    def __call__(self, op, *args, **bits_and_kwargs):
        if self.name == "native":
            from tfq_tiny.runtime import native
            return getattr(native, op)(*args, **bits_and_kwargs)
        for key in ("input_bits", "weight_bits", "output_bits"):
            bits_and_kwargs.pop(key, None)
        return getattr(kernels, op)(*args, **bits_and_kwargs)


def _prepare_conv(node, backend, depthwise):
    node.arity(2, 3)
    x, w, b = (node.inputs + [None])[:3]
    out = node.outputs[0]
    opt = _Options(node)
    node.check(w is not None and len(w.shape) == 4, "filter must be 4-D.")
    inp = _Port(node, opt, x, "input_bits", "input_shape", "input")
    outp = _Port(node, opt, out, "output_bits", "output_shape", "output")
    node.check(len(inp.shape) == 4 and len(outp.shape) == 4, "input and output must be 4-D.")
    in_bits, w_bits, out_bits = opt.get("input_bits"), opt.get("weight_bits"), opt.get("output_bits")
    in_scale, in_zp = _per_tensor(node, x, "input")
    out_scale, out_zp = _per_tensor(node, out, "output")
    in_depth = inp.shape[3]
    if depthwise:
        channels = w.shape[3]
        multiplier = opt.get("depth_multiplier")
        node.check(w.shape[0] == 1 and multiplier >= 1 and channels == in_depth * multiplier,
                   f"filter {list(w.shape)} does not fit input depth {in_depth} x depth_multiplier {multiplier}.")
    else:
        channels = w.shape[0]
        node.check(w.shape[3] >= 1 and in_depth % w.shape[3] == 0 and channels % (in_depth // w.shape[3]) == 0,
                   f"filter depth {w.shape[3]} does not divide input depth {in_depth} into valid groups.")
    weights, filter_scales = _weights(node, w, w_bits, channels, 3 if depthwise else 0)
    bias = _bias(node, b, channels)
    stride = (opt.get("stride_h"), opt.get("stride_w"))
    dilation = (opt.get("dilation_h"), opt.get("dilation_w"))
    node.check(min(stride) >= 1 and min(dilation) >= 1, f"strides {stride} and dilations {dilation} must be >= 1.")
    if opt.padding() == "EXPLICIT":
        pad, out_hw = (opt.get("pad_h"), opt.get("pad_w")), tuple(outp.shape[1:3])
        node.check(all(kernels.explicit_padding_fits(*axis) for axis in zip(
            inp.shape[1:3], w.shape[1:3], stride, dilation, pad, out_hw)),
            f"explicit padding {list(pad)} (before) cannot give output height/width "
            f"{list(out_hw)} from input {list(inp.shape[1:3])}: fewer zeros than (filter - 1) * "
            "dilation + 1 before, and at most as many after.")
    else:
        pad, out_hw = kernels.compute_padding(inp.shape[1:3], w.shape[1:3], stride, dilation,
                                              opt.padding())
    expected = (inp.shape[0],) + tuple(out_hw) + (channels,)
    node.check(min(out_hw) >= 1 and outp.shape == expected,
               f"output shape {list(outp.shape)} != computed {list(expected)}.")
    act_min, act_max = opt.act_range(((in_zp, in_bits, "input"), (out_zp, out_bits, "output")))
    mult, shift = _multipliers(in_scale, filter_scales, out_scale)
    common = dict(input_zp=in_zp, output_zp=out_zp, out_multiplier=mult, out_shift=shift,
                  act_min=act_min, act_max=act_max, stride=stride, dilation=dilation, pad=pad,
                  out_hw=out_hw, input_bits=in_bits, weight_bits=w_bits, output_bits=out_bits)
    if depthwise:
        common["depth_multiplier"] = multiplier
    op = "depthwise_conv_2d" if depthwise else "conv_2d"

    def run(args):
        return [outp.write(backend(op, inp.read(args[0]), weights, bias, **common))]
    return run


def _prepare_fully_connected(node, backend):
    node.arity(2, 3)
    x, w, b = (node.inputs + [None])[:3]
    out = node.outputs[0]
    opt = _Options(node)
    node.check(w is not None and len(w.shape) == 2, "filter must be [out, in].")
    in_bits, w_bits, out_bits = opt.get("input_bits"), opt.get("weight_bits"), opt.get("output_bits")
    inp = _Port(node, opt, x, "input_bits", "input_shape", "input")
    outp = _Port(node, opt, out, "output_bits", "output_shape", "output")
    in_scale, in_zp = _per_tensor(node, x, "input")
    out_scale, out_zp = _per_tensor(node, out, "output")
    channels, depth = w.shape
    node.check(depth >= 1 and inp.size % depth == 0 and outp.size == (inp.size // depth) * channels,
               f"input of {inp.size} and output of {outp.size} values do not fit filter {list(w.shape)}.")
    batches = inp.size // depth
    weights, filter_scales = _weights(node, w, w_bits, channels, 0)
    bias = _bias(node, b, channels)
    act_min, act_max = opt.act_range(((in_zp, in_bits, "input"), (out_zp, out_bits, "output")))
    mult, shift = _multipliers(in_scale, filter_scales, out_scale)
    common = dict(input_zp=in_zp, output_zp=out_zp, out_multiplier=mult, out_shift=shift,
                  act_min=act_min, act_max=act_max, input_bits=in_bits, weight_bits=w_bits,
                  output_bits=out_bits)

    def run(args):
        values = inp.read(args[0]).reshape(batches, depth)
        return [outp.write(backend("fully_connected", values, weights, bias, **common).reshape(outp.shape))]
    return run


def _prepare_add(node, backend):
    node.arity(2, 2)
    x1, x2 = node.inputs
    out = node.outputs[0]
    opt = _Options(node)
    bits1, bits2, out_bits = opt.get("input_bits"), opt.get("input2_bits"), opt.get("output_bits")
    in1 = _Port(node, opt, x1, "input_bits", "input_shape", "input 1")
    in2 = _Port(node, opt, x2, "input2_bits", "input2_shape", "input 2")
    outp = _Port(node, opt, out, "output_bits", "output_shape", "output")
    node.check(max(len(in1.shape), len(in2.shape)) <= 4, "inputs must have rank <= 4.")
    try:
        shape = np.broadcast_shapes(in1.shape, in2.shape)
    except ValueError:
        node.fail(f"input shapes {list(in1.shape)} and {list(in2.shape)} do not broadcast.")
    node.check(tuple(shape) == outp.shape, f"output shape {list(outp.shape)} != broadcast shape {list(shape)}.")
    (s1, zp1), (s2, zp2), (so, zpo) = (_per_tensor(node, t, w) for t, w in
                                       ((x1, "input 1"), (x2, "input 2"), (out, "output")))
    twice_max = 2.0 * max(s1, s2)
    reals = (s1 / twice_max, s2 / twice_max, twice_max / ((1 << 20) * so))
    node.check(all(0.0 < r < 1.0 for r in reals), "scales give a rescaling multiplier outside (0, 1).")
    act_min, act_max = opt.act_range(((zp1, bits1, "input 1"), (zp2, bits2, "input 2"), (zpo, out_bits, "output")))
    params = kernels.add_params(s1, zp1, s2, zp2, so, zpo)
    extra = dict(input_bits=(bits1, bits2), output_bits=out_bits) if backend.name == "native" else {}

    def run(args):
        return [outp.write(backend("add", in1.read(args[0]), in2.read(args[1]), act_min=act_min,
                                  act_max=act_max, **params, **extra))]
    return run


def float32_bits(value):
    """The int32 holding the IEEE-754 float32 bits of ``value`` (option ``alpha_bits``)."""
    return int(np.float32(value).view(np.int32))


def _prepare_leaky_relu(node, backend):
    node.arity(1, 1)
    x, out = node.inputs[0], node.outputs[0]
    opt = _Options(node)
    in_bits, out_bits = opt.get("input_bits"), opt.get("output_bits")
    inp = _Port(node, opt, x, "input_bits", "input_shape", "input")
    outp = _Port(node, opt, out, "output_bits", "output_shape", "output")
    node.check(inp.shape == outp.shape, f"output shape {list(outp.shape)} != input shape {list(inp.shape)}.")
    node.check(1 <= len(inp.shape) <= MAX_RANK, f"input must have rank 1 to {MAX_RANK}.")
    (in_scale, in_zp), (out_scale, out_zp) = (_per_tensor(node, t, w) for t, w in ((x, "input"), (out, "output")))
    opt.act_range(((in_zp, in_bits, "input"), (out_zp, out_bits, "output")))
    alpha = float(np.int32(opt.get("alpha_bits")).view(np.float32))
    node.check(np.isfinite(alpha) and alpha >= 0, f"alpha (option 'alpha_bits') must be a finite slope >= 0, got {alpha}.")
    m_id, s_id, m_alpha, s_alpha = kernels.leaky_relu_params(in_scale, out_scale, alpha)
    act_min, act_max = int_range(out_bits)
    kwargs = dict(input_zp=in_zp, output_zp=out_zp, identity_multiplier=m_id, identity_shift=s_id,
                  alpha_multiplier=m_alpha, alpha_shift=s_alpha, act_min=act_min, act_max=act_max,
                  input_bits=in_bits, output_bits=out_bits)

    def run(args):
        return [outp.write(backend("leaky_relu", inp.read(args[0]), **kwargs))]
    return run


def _prepare_pool(node, backend, op):
    node.arity(1, 1)
    x, out = node.inputs[0], node.outputs[0]
    opt = _Options(node)
    inp = _Port(node, opt, x, "input_bits", "input_shape", "input")
    outp = _Port(node, opt, out, "output_bits", "output_shape", "output")
    node.check(len(inp.shape) == 4 and len(outp.shape) == 4, "input and output must be 4-D.")
    in_bits, out_bits = opt.get("input_bits"), opt.get("output_bits")
    (in_scale, in_zp), (out_scale, out_zp) = _per_tensor(node, x, "input"), _per_tensor(node, out, "output")
    filter_hw = (opt.get("filter_h"), opt.get("filter_w"))
    rescale = {}
    if op == "max_pool_2d":
        node.check(np.float32(in_scale) == np.float32(out_scale) and in_zp == out_zp,
                   "input and output must share scale and zero point.")
    else:
        op = "requantized_average_pool_2d"
        multiplier, shift = ar.quantize_multiplier(float(in_scale) / float(out_scale))
        area = filter_hw[0] * filter_hw[1]
        node.check(min(filter_hw) >= 1 and -31 <= shift <= 30 and area < (1 << (31 - in_bits))
                   and (shift >= 0 or area < (1 << (31 + shift))),
                   f"input/output scale ratio {float(in_scale) / float(out_scale):.4g} with a "
                   f"{filter_hw[0]}x{filter_hw[1]} window is outside the average pool's int64 "
                   "arithmetic (tflm_ext/README.md).")
        rescale = dict(input_zp=in_zp, output_zp=out_zp, output_multiplier=multiplier,
                       output_shift=shift)
    stride = (opt.get("stride_h"), opt.get("stride_w"))
    node.check(min(filter_hw) >= 1 and min(stride) >= 1, f"filter {filter_hw} and strides {stride} must be >= 1.")
    pad, out_hw = kernels.compute_padding(inp.shape[1:3], filter_hw, stride, (1, 1),
                                          opt.padding(("SAME", "VALID")))
    expected = (inp.shape[0],) + tuple(out_hw) + (inp.shape[3],)
    node.check(min(out_hw) >= 1 and outp.shape == expected,
               f"output shape {list(outp.shape)} != computed {list(expected)}.")
    act_min, act_max = opt.act_range(((in_zp, in_bits, "input"), (out_zp, out_bits, "output")))
    common = dict(filter_hw=filter_hw, stride=stride, pad=pad, out_hw=out_hw, act_min=act_min,
                  act_max=act_max, input_bits=in_bits, output_bits=out_bits, **rescale)

    def run(args):
        return [outp.write(backend(op, inp.read(args[0]), **common))]
    return run


def prepare_functions(kernels_backend="numpy"):
    """{custom code: prepare(node) -> eval} running on the NumPy or the native C++ kernels."""
    backend = _Backend(kernels_backend)
    return {
        CONV_2D: lambda node: _prepare_conv(node, backend, depthwise=False),
        DEPTHWISE_CONV_2D: lambda node: _prepare_conv(node, backend, depthwise=True),
        FULLY_CONNECTED: lambda node: _prepare_fully_connected(node, backend),
        ADD: lambda node: _prepare_add(node, backend),
        AVERAGE_POOL_2D: lambda node: _prepare_pool(node, backend, "average_pool_2d"),
        MAX_POOL_2D: lambda node: _prepare_pool(node, backend, "max_pool_2d"),
        LEAKY_RELU: lambda node: _prepare_leaky_relu(node, backend),
    }


for _code, _prepare in prepare_functions("numpy").items():
    register_custom_op(_code, _prepare)
