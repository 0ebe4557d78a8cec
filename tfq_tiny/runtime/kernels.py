"""Integer reference kernels: NumPy mirrors of TFLM's reference int8 kernels.

Each function is a pure function of unpacked integer arrays (any integer dtype) and the
parameters TFLM's Prepare would compute, like ``reference_integer_ops::ConvPerChannel``
and friends take a params struct. Outputs are np.int8 when the clamping range fits in int8
(always the case for 2-8 bit activations), np.int32 otherwise.

Layouts follow TFLite: activations NHWC, CONV_2D filters OHWI, DEPTHWISE_CONV_2D filters
[1, H, W, C * depth_multiplier], FULLY_CONNECTED weights [out, in].

The arithmetic (MultiplyByQuantizedMultiplier and friends) lives in ``arithmetic``; its
``ROUNDING`` matches the pip tflite-micro build. These functions are what the C++ kernels
in tflm_ext and the interpreter shim are checked against.
"""
import math

import numpy as np

from tfq_tiny.errors import TfqError
from tfq_tiny.quantization.grid import int_range
from tfq_tiny.runtime import arithmetic as ar

_MAX_PATCH_ELEMENTS = 1 << 24


def _out_dtype(act_min, act_max):
    return np.int8 if -128 <= act_min and act_max <= 127 else np.int32


def _clamp(values, act_min, act_max):
    act_min, act_max = int(act_min), int(act_max)
    if act_min > act_max:
        raise TfqError(f"activation range is empty: act_min {act_min} > act_max {act_max}.")
    return np.clip(values, act_min, act_max).astype(_out_dtype(act_min, act_max))


def _pair(value, name):
    if np.isscalar(value):
        value = (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise TfqError(f"{name} must be an int or a pair of ints, got {value!r}.")
    return pair


def _per_channel(values, channels, name):
    arr = np.asarray(values, dtype=np.int64).reshape(-1)
    if arr.size == 1:
        return np.broadcast_to(arr, (channels,))
    if arr.size != channels:
        raise TfqError(f"{name} has {arr.size} entries, expected 1 or {channels}.")
    return arr


def _c_div(a, b):
    """C++ integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def compute_out_size(padding, in_size, filter_size, stride, dilation=1):
    """``ComputeOutSize``: output length along one axis for "SAME" or "VALID" padding."""
    effective = (filter_size - 1) * dilation + 1
    if stride <= 0:
        return 0
    if padding == "SAME":
        return _c_div(in_size + stride - 1, stride)
    if padding == "VALID":
        return _c_div(in_size + stride - effective, stride)
    raise TfqError(f'padding must be "SAME" or "VALID", got {padding!r}.')


def compute_padding(in_hw, filter_hw, stride, dilation, padding):
    """``ComputePaddingHeightWidth``: ((pad_h, pad_w), (out_h, out_w)) as TFLite computes them.

    The pad is what is added before the first row/column; TFLite puts any odd extra padding
    after the last one, which the kernels handle by skipping points outside the image.
    """
    in_hw, filter_hw = _pair(in_hw, "in_hw"), _pair(filter_hw, "filter_hw")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    pads, outs = [], []
    for size, k, s, d in zip(in_hw, filter_hw, stride, dilation):
        out = compute_out_size(padding, size, k, s, d)
        effective = (k - 1) * d + 1
        total = max((out - 1) * s + effective - size, 0)
        pads.append(total // 2)
        outs.append(out)
    return tuple(pads), tuple(outs)


def explicit_padding_fits(in_size, filter_size, stride, dilation, pad, out_size):
    """True when ``pad`` zeros before one axis and some number after give ``out_size`` outputs:
    ``pad`` or ``pad + 1`` after (as SAME pads), or, with ``pad`` below the effective filter
    size, fewer than ``pad`` (TFQ ``EXPLICIT`` padding: a causal Conv1D pads
    ``(k - 1) * dilation`` before and none after). The rule of ``tfq::internal::CheckSpatial``."""
    effective = (filter_size - 1) * dilation + 1
    if stride < 1 or dilation < 1 or pad < 0 or out_size < 1:
        return False
    afters = {pad, pad + 1} | (set(range(pad)) if pad < effective else set())  # SAME-like too
    return any(in_size + pad + after >= effective
               and (in_size + pad + after - effective) // stride + 1 == out_size
               for after in afters)


def _patches(x, filter_hw, stride, dilation, pad, out_hw, fill):
    """Windows of NHWC ``x`` as [N, out_h, out_w, KH, KW, C]; outside points hold ``fill``."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = filter_hw, stride, dilation
    (ph, pw), (oh, ow) = pad, out_hw
    need_h = (oh - 1) * sh + (kh - 1) * dh + 1
    need_w = (ow - 1) * sw + (kw - 1) * dw + 1
    padded = np.full((n, max(need_h, ph + h), max(need_w, pw + w), c), fill, dtype=x.dtype)
    padded[:, ph:ph + h, pw:pw + w, :] = x
    rows = []
    for fy in range(kh):
        cols = []
        for fx in range(kw):
            y0, x0 = fy * dh, fx * dw
            cols.append(padded[:, y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw, :])
        rows.append(np.stack(cols, axis=3))
    return np.stack(rows, axis=3)


def _check_4d(name, arr):
    if arr.ndim != 4:
        raise TfqError(f"{name} must be 4-D, got shape {arr.shape}.")


def _batch_chunks(n, per_item):
    step = max(1, _MAX_PATCH_ELEMENTS // max(per_item, 1))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def _requantize_acc(acc, bias, out_multiplier, out_shift, output_zp, act_min, act_max):
    acc = ar.wrap_int32(acc)
    if bias is not None:
        acc = ar.wrap_int32(acc + np.asarray(bias, dtype=np.int64))
    scaled = ar.multiply_by_quantized_multiplier(acc, out_multiplier, out_shift)
    return _clamp(scaled + int(output_zp), act_min, act_max)


def conv_2d(x, w, bias, *, input_zp, output_zp, out_multiplier, out_shift, act_min, act_max,
            stride=(1, 1), dilation=(1, 1), pad=(0, 0), out_hw):
    """``reference_integer_ops::ConvPerChannel``: x NHWC, w OHWI, bias int32[O] or None.

    Grouped convolution (input depth a multiple of the filter's input depth) is supported as in
    TFLM. ``out_multiplier``/``out_shift`` have one entry per output channel (or one in all).
    """
    x, w = np.asarray(x), np.asarray(w)
    _check_4d("conv input", x)
    _check_4d("conv filter", w)
    n, _, _, in_depth = x.shape
    out_depth, kh, kw, filter_depth = w.shape
    if filter_depth == 0 or in_depth % filter_depth or out_depth % (in_depth // filter_depth):
        raise TfqError(
            f"conv filter depth {filter_depth} does not divide input depth {in_depth} into groups "
            f"that divide the {out_depth} output channels."
        )
    groups = in_depth // filter_depth
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    pad, out_hw = _pair(pad, "pad"), _pair(out_hw, "out_hw")
    mult = _per_channel(out_multiplier, out_depth, "out_multiplier")
    shift = _per_channel(out_shift, out_depth, "out_shift")
    if bias is not None:
        bias = _per_channel(bias, out_depth, "bias")
    shifted = x.astype(np.int64) - int(input_zp)
    weights = w.astype(np.int64)
    per_group = out_depth // groups
    oh, ow = out_hw
    acc = np.zeros((n, oh, ow, out_depth), dtype=np.int64)
    for lo, hi in _batch_chunks(n, oh * ow * kh * kw * in_depth):
        patches = _patches(shifted[lo:hi], (kh, kw), stride, dilation, pad, out_hw, 0)
        for g in range(groups):
            cin = slice(g * filter_depth, (g + 1) * filter_depth)
            cout = slice(g * per_group, (g + 1) * per_group)
            cols = patches[..., cin].reshape(hi - lo, oh, ow, -1)
            acc[lo:hi, ..., cout] = cols @ weights[cout].reshape(per_group, -1).T
    return _requantize_acc(acc, bias, mult, shift, output_zp, act_min, act_max)


def depthwise_conv_2d(x, w, bias, *, depth_multiplier, input_zp, output_zp, out_multiplier,
                      out_shift, act_min, act_max, stride=(1, 1), dilation=(1, 1), pad=(0, 0),
                      out_hw):
    """``reference_integer_ops::DepthwiseConvPerChannel``: w is [1, H, W, C * depth_multiplier].

    Output channel ``c * depth_multiplier + m`` reads input channel ``c``.
    """
    x, w = np.asarray(x), np.asarray(w)
    _check_4d("depthwise input", x)
    _check_4d("depthwise filter", w)
    n, _, _, in_depth = x.shape
    _, kh, kw, out_depth = w.shape
    depth_multiplier = int(depth_multiplier)
    if w.shape[0] != 1 or depth_multiplier < 1 or out_depth != in_depth * depth_multiplier:
        raise TfqError(
            f"depthwise filter shape {w.shape} does not match input depth {in_depth} x "
            f"depth_multiplier {depth_multiplier}."
        )
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    pad, out_hw = _pair(pad, "pad"), _pair(out_hw, "out_hw")
    mult = _per_channel(out_multiplier, out_depth, "out_multiplier")
    shift = _per_channel(out_shift, out_depth, "out_shift")
    if bias is not None:
        bias = _per_channel(bias, out_depth, "bias")
    shifted = np.repeat(x.astype(np.int64) - int(input_zp), depth_multiplier, axis=3)
    weights = w[0].astype(np.int64)
    oh, ow = out_hw
    acc = np.zeros((n, oh, ow, out_depth), dtype=np.int64)
    for lo, hi in _batch_chunks(n, oh * ow * kh * kw * out_depth):
        patches = _patches(shifted[lo:hi], (kh, kw), stride, dilation, pad, out_hw, 0)
        acc[lo:hi] = (patches * weights).sum(axis=(3, 4))
    return _requantize_acc(acc, bias, mult, shift, output_zp, act_min, act_max)


def fully_connected(x, w, bias, *, input_zp, output_zp, out_multiplier, out_shift, act_min,
                    act_max, weights_zp=0):
    """``reference_integer_ops::FullyConnected[PerChannel]``: x [N, K], w [O, K].

    ``out_multiplier``/``out_shift`` of length O is per-channel, length 1 per-tensor.
    ``weights_zp`` is the filter offset TFLM still applies on the per-tensor path (0 normally).
    """
    x, w = np.asarray(x), np.asarray(w)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise TfqError(f"fully_connected needs x [N, K] and w [O, K], got {x.shape} and {w.shape}.")
    out_depth = w.shape[0]
    mult = _per_channel(out_multiplier, out_depth, "out_multiplier")
    shift = _per_channel(out_shift, out_depth, "out_shift")
    if bias is not None:
        bias = _per_channel(bias, out_depth, "bias")
    acc = (x.astype(np.int64) - int(input_zp)) @ (w.astype(np.int64) - int(weights_zp)).T
    return _requantize_acc(acc, bias, mult, shift, output_zp, act_min, act_max)


def add_params(s1, zp1, s2, zp2, s_out, zp_out, left_shift=20):
    """ADD's fixed-point parameters as TFLM's ``CalculateOpDataAdd`` derives them (int8).

    Scales are read as float32 (as stored in the flatbuffer) before the double arithmetic.
    Returns the keyword arguments of ``add`` except the activation range.
    """
    s1, s2, s_out = (float(np.float32(s)) for s in (s1, s2, s_out))
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = ar.quantize_multiplier_smaller_than_one_exp(s1 / twice_max)
    m2, sh2 = ar.quantize_multiplier_smaller_than_one_exp(s2 / twice_max)
    mo, sho = ar.quantize_multiplier_smaller_than_one_exp(twice_max / ((1 << left_shift) * s_out))
    return dict(
        input1_zp=int(zp1), input2_zp=int(zp2), output_zp=int(zp_out), left_shift=int(left_shift),
        input1_multiplier=m1, input1_shift=sh1, input2_multiplier=m2, input2_shift=sh2,
        output_multiplier=mo, output_shift=sho,
    )


def add(x1, x2, *, input1_zp, input2_zp, output_zp, left_shift, input1_multiplier, input1_shift,
        input2_multiplier, input2_shift, output_multiplier, output_shift, act_min, act_max):
    """``reference_integer_ops::Add``/``BroadcastAdd6DSlow`` (NumPy broadcasting = TFLM's)."""
    x1, x2 = np.asarray(x1, dtype=np.int64), np.asarray(x2, dtype=np.int64)
    try:
        x1, x2 = np.broadcast_arrays(x1, x2)
    except ValueError as exc:
        raise TfqError(f"add: shapes {x1.shape} and {x2.shape} do not broadcast.") from exc
    lifted = 1 << int(left_shift)
    scaled1 = ar.multiply_by_quantized_multiplier_smaller_than_one_exp(
        ar.wrap_int32((x1 - int(input1_zp)) * lifted), input1_multiplier, input1_shift)
    scaled2 = ar.multiply_by_quantized_multiplier_smaller_than_one_exp(
        ar.wrap_int32((x2 - int(input2_zp)) * lifted), input2_multiplier, input2_shift)
    raw = ar.multiply_by_quantized_multiplier_smaller_than_one_exp(
        ar.wrap_int32(scaled1 + scaled2), output_multiplier, output_shift)
    return _clamp(raw + int(output_zp), act_min, act_max)


def _pool_windows(x, filter_hw, stride, pad, out_hw, fill):
    x = np.asarray(x)
    _check_4d("pooling input", x)
    filter_hw, stride = _pair(filter_hw, "filter_hw"), _pair(stride, "stride")
    pad, out_hw = _pair(pad, "pad"), _pair(out_hw, "out_hw")
    return _patches(x.astype(np.int64), filter_hw, stride, (1, 1), pad, out_hw, fill)


def _window_sums(x, filter_hw, stride, pad, out_hw, op="average_pool_2d"):
    """(sum over the in-image part of each window, number of in-image elements)."""
    windows = _pool_windows(x, filter_hw, stride, pad, out_hw, 0)
    ones = np.ones(np.asarray(x).shape[:3] + (1,), dtype=np.int64)
    counts = _pool_windows(ones, filter_hw, stride, pad, out_hw, 0).sum(axis=(3, 4))
    if np.any(counts == 0):
        raise TfqError(f"{op}: a pooling window lies entirely outside the input.")
    return windows.sum(axis=(3, 4)), counts


def _divide_half_away(acc, counts):
    """C's ``acc > 0 ? (acc + n/2) / n : (acc - n/2) / n`` (truncating division)."""
    half = counts // 2
    return np.where(acc > 0, (acc + half) // counts, -((-(acc - half)) // counts))


def average_pool_2d(x, *, filter_hw, stride, pad, out_hw, act_min, act_max):
    """``reference_integer_ops::AveragePool``: mean of the in-image window, rounded half away.
    Input and output share one grid (TFLite's builtin)."""
    acc, counts = _window_sums(x, filter_hw, stride, pad, out_hw)
    return _clamp(_divide_half_away(acc, counts), act_min, act_max)


def requantized_average_pool_2d(x, *, filter_hw, stride, pad, out_hw, input_zp, output_zp,
                                output_multiplier, output_shift, act_min, act_max):
    """``TFQ_AVERAGE_POOL_2D``: an average pool whose output has its own grid.

    ``acc = sum(x - input_zp)`` over the in-image window (n elements), then one rounding of
    ``acc * (s_in / s_out) / n`` with ``M * 2^shift = s_in / s_out``:
    ``floor((acc * M + d / 2) / d)`` with ``d = n * 2^(31 - shift)`` (ties toward +infinity),
    plus ``output_zp``. Rescaling first and dividing by n afterwards
    would round twice and disagree with the simulated pool on ~1/(2n) of the outputs."""
    acc, counts = _window_sums(np.asarray(x, np.int64) - int(input_zp), filter_hw, stride, pad, out_hw,
                               "requantized_average_pool_2d")
    divisor = counts << (31 - int(output_shift))
    scaled = (acc * int(output_multiplier) + divisor // 2) // divisor
    return _clamp(scaled + int(output_zp), act_min, act_max)


def max_pool_2d(x, *, filter_hw, stride, pad, out_hw, act_min, act_max):
    """``reference_integer_ops::MaxPool``: max of the in-image window (start value -128)."""
    windows = _pool_windows(x, filter_hw, stride, pad, out_hw, -128)
    return _clamp(np.maximum(windows.max(axis=(3, 4)), -128), act_min, act_max)


def resolve_axes(axes, ndim):
    """``ResolveAxis``: negative axes wrapped, duplicates dropped, order kept."""
    resolved = []
    for axis in np.asarray(axes, dtype=np.int64).reshape(-1):
        a = int(axis) + ndim if axis < 0 else int(axis)
        if not 0 <= a < ndim:
            raise TfqError(f"axis {int(axis)} is out of range for a {ndim}-D tensor.")
        if a not in resolved:
            resolved.append(a)
    return resolved


def mean_params(input_scale, output_scale, count):
    """MEAN's (multiplier, shift) with 1/count folded in, as ``QuantizedMeanOrSum`` does."""
    real = float(np.float32(input_scale)) / float(np.float32(output_scale))
    multiplier, shift = ar.quantize_multiplier(real)
    if count <= 0:
        return multiplier, shift
    fold = min(int(count).bit_length() - 1, 32, 31 + shift)
    return int((multiplier << fold) // int(count)), shift - fold


def mean(x, axes, *, input_zp, input_scale, output_zp, output_scale, keepdims=False, bits=8):
    """TFLM int8 MEAN (``QuantizedMeanOrSum`` with compute_sum=false), keep_dims either way.

    Sums in int32, removes ``input_zp * count`` and rescales by input_scale / output_scale / count
    with a single quantized multiplier; clamps to the full ``bits``-bit range (no activation).
    """
    x = np.asarray(x)
    reduce_axes = tuple(resolve_axes(axes, x.ndim))
    count = int(np.prod([x.shape[a] for a in reduce_axes], dtype=np.int64))
    total = ar.wrap_int32(x.astype(np.int64).sum(axis=reduce_axes, keepdims=bool(keepdims)))
    qmin, qmax = int_range(bits)
    if count == 0:
        return np.zeros(total.shape, dtype=_out_dtype(qmin, qmax))
    multiplier, shift = mean_params(input_scale, output_scale, count)
    centered = ar.wrap_int32(total - int(input_zp) * count)
    scaled = ar.multiply_by_quantized_multiplier(centered, multiplier, shift)
    return _clamp(scaled + int(output_zp), qmin, qmax)


SOFTMAX_OUTPUT_SCALE = 1.0 / 256.0
SOFTMAX_OUTPUT_ZP = -128
_SCALED_DIFF_INTEGER_BITS = 5
_ACCUMULATION_INTEGER_BITS = 12
SOFTMAX_MAX_DEPTH = ((1 << 31) - 1) >> (31 - _ACCUMULATION_INTEGER_BITS)


def softmax_params(input_scale, beta):
    """``PreprocessSoftmaxScaling`` + ``CalculateInputRadius`` for int8 input.

    Returns (input_multiplier, input_left_shift, diff_min).
    """
    cap = float((1 << 31) - 1) if ar.ROUNDING == "double" else float((1 << 30) - 1)
    real = min(float(np.float32(beta)) * float(np.float32(input_scale))
               * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS)), cap)
    multiplier, left_shift = ar.quantize_multiplier_greater_than_one(real)
    radius = np.floor(
        1.0 * ((1 << _SCALED_DIFF_INTEGER_BITS) - 1)
        * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS)) / float(1 << left_shift)
    )
    return multiplier, left_shift, -int(radius)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    srdhm = ar.saturating_rounding_doubling_high_mul
    constant_term = 1895147668
    one_third = 715827883
    x = ar.wrap_int32(a + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = ar.rounding_divide_by_pot(x4, 2)
    poly = ar.rounding_divide_by_pot(ar.wrap_int32(srdhm(ar.wrap_int32(x4_over_4 + x3), one_third) + x2), 1)
    return ar.wrap_int32(constant_term + srdhm(constant_term, ar.wrap_int32(x + poly)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a, integer_bits=_SCALED_DIFF_INTEGER_BITS):
    """gemmlowp ``exp_on_negative_values``: raw Q(integer_bits) input <= 0 -> raw Q0.31 exp."""
    a = ar.as_i64(a)
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = ar.wrap_int32((a & (one_quarter - 1)) - one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        ar.saturating_rounding_multiply_by_pot(a_mod_quarter_minus_one_quarter, integer_bits))
    remainder = ar.wrap_int32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = 1 << (fractional_bits + exponent)
            result = np.where(remainder & bit, ar.saturating_rounding_doubling_high_mul(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, ar.INT32_MAX, result)


def _newton_reciprocal_q2(a):
    """gemmlowp's Newton-Raphson 1/(1+a) for raw Q0.31 ``a`` in (0, 1), as raw Q2.29."""
    srdhm = ar.saturating_rounding_doubling_high_mul
    a = ar.as_i64(a)
    total = a + ar.INT32_MAX
    half_denominator = np.where(total >= 0, (total + 1) // 2, -((-(total - 1)) // 2))
    x = ar.wrap_int32(1515870810 + srdhm(half_denominator, -1010580540))
    one_q2 = 1 << 29
    for _ in range(3):
        one_minus = ar.wrap_int32(one_q2 - srdhm(half_denominator, x))
        x = ar.wrap_int32(x + ar.saturating_rounding_multiply_by_pot(srdhm(x, one_minus), 2))
    return x


def one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp ``one_over_one_plus_x_for_x_in_0_1`` on raw Q0.31 values."""
    return ar.saturating_rounding_multiply_by_pot(_newton_reciprocal_q2(a), 1)


def one_minus_x_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp ``one_minus_x_over_one_plus_x_for_x_in_0_1`` on raw Q0.31 values."""
    return ar.saturating_rounding_multiply_by_pot(ar.wrap_int32(_newton_reciprocal_q2(a) - (1 << 29)), 2)


def softmax(x, *, input_scale, beta, output_zp=SOFTMAX_OUTPUT_ZP, output_scale=SOFTMAX_OUTPUT_SCALE):
    """``reference_ops::Softmax`` int8 -> int8 over the last axis (gemmlowp fixed-point exp).

    TFLM requires the output quantization (scale 1/256, zero point -128); anything else raises.
    """
    if int(output_zp) != SOFTMAX_OUTPUT_ZP or np.float32(output_scale) != np.float32(SOFTMAX_OUTPUT_SCALE):
        raise TfqError(
            f"int8 softmax output must have scale 1/256 and zero point -128 (as TFLM requires), "
            f"got scale {float(output_scale)!r} and zero point {int(output_zp)}."
        )
    x = np.asarray(x).astype(np.int64)
    if x.ndim == 0 or x.shape[-1] > SOFTMAX_MAX_DEPTH:
        raise TfqError(f"softmax needs 1..{SOFTMAX_MAX_DEPTH} values on the last axis, got shape {x.shape}.")
    multiplier, left_shift, diff_min = softmax_params(input_scale, beta)
    diff = x - x.max(axis=-1, keepdims=True)
    used = diff >= diff_min
    rescaled = ar.multiply_by_quantized_multiplier_greater_than_one(
        np.where(used, diff, 0), multiplier, left_shift)
    exps = exp_on_negative_values(rescaled)
    in_accum = ar.rounding_divide_by_pot(exps, _ACCUMULATION_INTEGER_BITS)
    sum_of_exps = ar.wrap_int32(np.where(used, in_accum, 0).sum(axis=-1, keepdims=True))
    headroom_plus_one = ar.count_leading_zeros_u32(sum_of_exps)
    num_bits_over_unit = _ACCUMULATION_INTEGER_BITS - headroom_plus_one
    shifted_sum_minus_one = ar.wrap_int32(((sum_of_exps & 0xFFFFFFFF) << headroom_plus_one) - (1 << 31))
    shifted_scale = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)
    exponent = num_bits_over_unit + 31 - 8
    unsat = ar.rounding_divide_by_pot(ar.saturating_rounding_doubling_high_mul(shifted_scale, exps), exponent)
    out = np.clip(unsat - 128, -128, 127)
    return np.where(used, out, -128).astype(np.int8)


LOGISTIC_OUTPUT_SCALE, LOGISTIC_OUTPUT_ZP = 1.0 / 256.0, -128
TANH_OUTPUT_SCALE, TANH_OUTPUT_ZP = 1.0 / 128.0, 0
_SQUASH_INPUT_INTEGER_BITS = 4


def logistic_tanh_params(input_scale):
    """TFLM's int8 LOGISTIC/TANH Prepare: (input_multiplier, input_left_shift, input_range_radius).

    The input is rescaled to Q4.27 by ``frexp(scale * 2**27)``; inputs at or beyond the
    radius saturate without evaluating the function.
    """
    real = float(np.float32(input_scale)) * float(1 << (31 - _SQUASH_INPUT_INTEGER_BITS))
    if not (np.isfinite(real) and real > 0):
        raise ValueError(f"input scale must be finite and positive, got {float(input_scale)!r}.")
    fraction, shift = math.frexp(real)
    multiplier = int(math.floor(fraction * (1 << 31) + 0.5))
    if multiplier >= 1 << 31 or not 0 <= shift <= 62:
        raise ValueError(f"input scale {float(input_scale)!r} is outside what TFLM's int8 "
                         "LOGISTIC/TANH can rescale (2**-28 .. 2**35).")
    radius = math.floor(((1 << _SQUASH_INPUT_INTEGER_BITS) - 1)
                        * float(1 << (31 - _SQUASH_INPUT_INTEGER_BITS)) / float(1 << shift))
    return multiplier, shift, int(radius)


def _logistic_q0(a):
    """gemmlowp ``logistic`` of raw Q4.27 values -> raw Q0.31."""
    positive = a > 0
    magnitude = np.where(positive, a, -a)
    if_positive = one_over_one_plus_x_for_x_in_0_1(
        exp_on_negative_values(-magnitude, _SQUASH_INPUT_INTEGER_BITS))
    if_negative = ar.wrap_int32(ar.INT32_MAX - if_positive)
    return np.where(a == 0, 1 << 30, np.where(positive, if_positive, if_negative))


def _tanh_q0(a):
    """gemmlowp ``tanh`` of raw Q4.27 values -> raw Q0.31 (exp(2x) read as Q5.26)."""
    negative = a < 0
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(
        exp_on_negative_values(np.where(negative, a, -a), _SQUASH_INPUT_INTEGER_BITS + 1))
    return np.where(a == 0, 0, np.where(negative, -t, t))


def _squash(x, input_scale, input_zp, function_q0, output_shift, output_zp):
    multiplier, shift, radius = logistic_tanh_params(input_scale)
    centered = np.asarray(x).astype(np.int64) - int(input_zp)
    inside = (centered > -radius) & (centered < radius)
    q4 = ar.multiply_by_quantized_multiplier(np.where(inside, centered, 0), multiplier, shift)
    out = np.clip(ar.rounding_divide_by_pot(function_q0(q4), output_shift) + output_zp, -128, 127)
    return np.where(centered <= -radius, -128, np.where(centered >= radius, 127, out)).astype(np.int8)


def logistic(x, *, input_scale, input_zp):
    """``reference_integer_ops::Logistic`` int8 -> int8 (output scale 1/256, zero point -128)."""
    return _squash(x, input_scale, input_zp, _logistic_q0, 23, LOGISTIC_OUTPUT_ZP)


def leaky_relu_params(input_scale, output_scale, alpha):
    """(identity multiplier, shift, alpha multiplier, shift) as TFLM's LEAKY_RELU Prepare
    computes them: ``s_in / s_out`` and ``s_in * alpha / s_out`` in float32, then
    ``QuantizeMultiplier``."""
    s_in, s_out, a = np.float32(input_scale), np.float32(output_scale), np.float32(alpha)
    identity = ar.quantize_multiplier(float(np.float32(s_in / s_out)))
    negative = ar.quantize_multiplier(float(np.float32(np.float32(s_in * a) / s_out)))
    return identity + negative


def leaky_relu(x, *, input_zp, output_zp, identity_multiplier, identity_shift, alpha_multiplier,
               alpha_shift, act_min=-128, act_max=127):
    """``reference_ops::QuantizeLeakyRelu``: each input offset by its zero point and rescaled
    by the identity multiplier where >= 0, by the alpha multiplier below (``leaky_relu_params``),
    plus the output zero point, clamped to the output range (int8, or a packed width's)."""
    v = ar.as_i64(x) - int(input_zp)
    out = np.where(v >= 0, ar.multiply_by_quantized_multiplier(v, identity_multiplier, identity_shift),
                   ar.multiply_by_quantized_multiplier(v, alpha_multiplier, alpha_shift))
    return np.clip(out + int(output_zp), act_min, act_max).astype(np.int8)


def tanh(x, *, input_scale, input_zp):
    """``reference_integer_ops::Tanh`` int8 -> int8 (output scale 1/128, zero point 0)."""
    return _squash(x, input_scale, input_zp, _tanh_q0, 24, TANH_OUTPUT_ZP)


def quantize(x_float, scale, zp, bits=8):
    """``AffineQuantize``: round(x / scale) + zp in float32, ties away from zero, clamped."""
    x = np.asarray(x_float, dtype=np.float32)
    q = ar.round_half_away(x / np.asarray(scale, dtype=np.float32)).astype(np.int64)
    qmin, qmax = int_range(bits)
    return _clamp(q + np.asarray(zp, dtype=np.int64), qmin, qmax)


def dequantize(x_q, scale, zp):
    """``Dequantize``: float32(double(scale) * (q - zp))."""
    scale = np.asarray(scale, dtype=np.float32).astype(np.float64)
    return (scale * (np.asarray(x_q, dtype=np.int64) - np.asarray(zp, dtype=np.int64))).astype(np.float32)


def requantize_params(input_scale, output_scale):
    """QUANTIZE int8->int8 multiplier: QuantizeMultiplier(input_scale / output_scale)."""
    return ar.quantize_multiplier(float(np.float32(input_scale)) / float(np.float32(output_scale)))


def requantize(x_q, *, input_zp, output_zp, multiplier, shift, bits=8):
    """``Requantize``: MBQM(q - input_zp) + output_zp, clamped to the ``bits``-bit range."""
    centered = ar.wrap_int32(np.asarray(x_q, dtype=np.int64) - int(input_zp))
    qmin, qmax = int_range(bits)
    return _clamp(ar.multiply_by_quantized_multiplier(centered, multiplier, shift) + int(output_zp), qmin, qmax)


ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6")


def activation_range(activation, scale, zero_point, bits=8):
    """``CalculateActivationRangeQuantized``: (act_min, act_max) for a fused activation."""
    qmin, qmax = int_range(bits)

    def q(value):
        return int(zero_point) + int(ar.round_half_away(np.float32(value) / np.float32(scale)))

    if activation == "NONE":
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, q(0.0)), qmax
    if activation == "RELU6":
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(qmin, q(-1.0)), min(qmax, q(1.0))
    raise TfqError(f"fused activation {activation!r} is not supported; use one of {ACTIVATIONS}.")
