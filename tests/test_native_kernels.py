"""The C++ kernels of tflm_ext (through tfq_tiny.runtime.native) against the NumPy reference.

Bit-exact on random cases for every (weight, input, output) bit combination, and malformed
arguments give a clean Python exception (never a crash). Needs the library built by
`pip install -e .`.
"""
import ctypes
import itertools
import zlib

import numpy as np
import pytest

from tfq_tiny.errors import TfqError
from tfq_tiny.export.packing import pack, unpack
from tfq_tiny.quantization.grid import int_range
from tfq_tiny.runtime import arithmetic as ar
from tfq_tiny.runtime import kernels as ref

from tfq_tiny.runtime import native

if not native.is_available():  # pragma: no cover - the message says what to do
    pytest.fail("tflm_ext native library missing: run `pip install -e .` in the repo root",
                pytrace=False)

BITS = (2, 4, 8)
COMBOS = list(itertools.product(BITS, BITS, BITS))  # (weight, input, output)
CASES_PER_COMBO = 20  # 27 x 20 = 540 cases per weighted operator
ACT_COMBOS = list(itertools.product(BITS, BITS))  # (input, output) for pools
POOL_CASES_PER_COMBO = 60  # 9 x 60 = 540 per pool
ADD_COMBOS = list(itertools.product(BITS, BITS, BITS))  # (input1, input2, output)


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))  # same cases every run


def _values(rng, bits, shape):
    lo, hi = int_range(bits)
    return rng.integers(lo, hi + 1, size=shape, dtype=np.int64).astype(np.int8)


def _zero_point(rng, bits):
    lo, hi = int_range(bits)
    return int(rng.integers(lo, hi + 1))


def _act_range(rng, bits, output_zp):
    lo, hi = int_range(bits)
    kind = rng.random()
    if kind < 0.5:
        return lo, hi
    if kind < 0.75:  # ReLU-like: clamp at the zero point
        return output_zp, hi
    a, b = sorted(rng.integers(lo, hi + 1, size=2))
    return int(a), int(b)


def _multipliers(rng, count, in_bits, w_bits, out_bits, depth):
    """Per-channel (multiplier, shift) from random real scales, via the reference helper.

    The real scale puts a typical accumulator near the output range (times 0.05..2); a few
    cases use scales > 1 to exercise the left-shift path.
    """
    typical = np.sqrt(max(depth, 1)) * 2.0 ** (in_bits - 1) * 2.0 ** (w_bits - 1)
    real = 2.0 ** (out_bits - 1) / typical * np.exp(rng.uniform(np.log(0.05), np.log(2.0), count))
    if rng.random() < 0.05:  # strongly saturating scales
        real = real * 2.0 ** rng.integers(2, 7)
    return ar.quantize_multiplier_array(real)


def _bias(rng, count, in_bits, w_bits, depth):
    if rng.random() < 0.15:
        return None
    span = int(np.sqrt(max(depth, 1)) * 2 ** (in_bits + w_bits - 2)) + 1
    return rng.integers(-span, span + 1, size=count).astype(np.int32)


def _spatial(rng, in_hw, k_hw, stride, dilation):
    """(pad, out_hw) for SAME or VALID, or None when VALID leaves no output."""
    padding = "SAME" if rng.random() < 0.5 else "VALID"
    pad, out_hw = ref.compute_padding(in_hw, k_hw, stride, dilation, padding)
    if min(out_hw) <= 0:
        return None
    return pad, out_hw


def _conv_case(rng, w_bits, in_bits, out_bits, depthwise=False):
    while True:
        n = int(rng.integers(1, 3))
        h, w = (int(v) for v in rng.integers(1, 10, size=2))
        c = int(rng.integers(1, 7))
        kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
        stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
        dilation = tuple(int(v) for v in rng.integers(1, 4, size=2)) if rng.random() < 0.4 \
            else (1, 1)
        sp = _spatial(rng, (h, w), (kh, kw), stride, dilation)
        if sp is not None:
            break
    pad, out_hw = sp
    x = _values(rng, in_bits, (n, h, w, c))
    if depthwise:
        m = int(rng.integers(1, 4))
        o = c * m
        filt = _values(rng, w_bits, (1, kh, kw, o))
        depth = kh * kw
        extra = dict(depth_multiplier=m)
    else:
        groups = int(rng.choice([g for g in (1, 2, 3) if c % g == 0])) if rng.random() < 0.2 \
            else 1
        o = groups * int(rng.integers(1, 5))
        filt = _values(rng, w_bits, (o, kh, kw, c // groups))
        depth = kh * kw * c // groups
        extra = {}
    output_zp = _zero_point(rng, out_bits)
    act_min, act_max = _act_range(rng, out_bits, output_zp)
    mult, shift = _multipliers(rng, o, in_bits, w_bits, out_bits, depth)
    kwargs = dict(extra, input_zp=_zero_point(rng, in_bits), output_zp=output_zp,
                  out_multiplier=mult, out_shift=shift, act_min=act_min, act_max=act_max,
                  stride=stride, dilation=dilation, pad=pad, out_hw=out_hw)
    return x, filt, _bias(rng, o, in_bits, w_bits, depth), kwargs


def _bits_kwargs(w_bits, in_bits, out_bits):
    return dict(input_bits=in_bits, weight_bits=w_bits, output_bits=out_bits)


def _assert_same(expected, got, case):
    assert got.shape == expected.shape, case
    assert got.dtype == np.int8
    mismatch = np.flatnonzero(expected.reshape(-1).astype(np.int64) != got.reshape(-1))
    assert mismatch.size == 0, f"{mismatch.size} mismatches, first at {mismatch[:5]}; {case}"


# ---- bit-exactness on all 27 combinations -----------------------------------------------

@pytest.mark.parametrize("w_bits,in_bits,out_bits", COMBOS)
def test_conv_2d_matches_reference(w_bits, in_bits, out_bits):
    rng = _rng("conv", w_bits, in_bits, out_bits)
    for i in range(CASES_PER_COMBO):
        x, filt, bias, kw = _conv_case(rng, w_bits, in_bits, out_bits)
        expected = ref.conv_2d(x, filt, bias, **kw)
        got = native.conv_2d(x, filt, bias, **kw, **_bits_kwargs(w_bits, in_bits, out_bits))
        _assert_same(expected, got, (i, x.shape, filt.shape, kw))


@pytest.mark.parametrize("w_bits,in_bits,out_bits", COMBOS)
def test_depthwise_conv_2d_matches_reference(w_bits, in_bits, out_bits):
    rng = _rng("dw", w_bits, in_bits, out_bits)
    for i in range(CASES_PER_COMBO):
        x, filt, bias, kw = _conv_case(rng, w_bits, in_bits, out_bits, depthwise=True)
        expected = ref.depthwise_conv_2d(x, filt, bias, **kw)
        got = native.depthwise_conv_2d(x, filt, bias, **kw,
                                       **_bits_kwargs(w_bits, in_bits, out_bits))
        _assert_same(expected, got, (i, x.shape, filt.shape, kw))


@pytest.mark.parametrize("w_bits,in_bits,out_bits", COMBOS)
def test_fully_connected_matches_reference(w_bits, in_bits, out_bits):
    rng = _rng("fc", w_bits, in_bits, out_bits)
    for i in range(CASES_PER_COMBO):
        n, k, o = int(rng.integers(1, 4)), int(rng.integers(1, 70)), int(rng.integers(1, 12))
        x, filt = _values(rng, in_bits, (n, k)), _values(rng, w_bits, (o, k))
        per_tensor = rng.random() < 0.3
        mult, shift = _multipliers(rng, 1 if per_tensor else o, in_bits, w_bits, out_bits, k)
        output_zp = _zero_point(rng, out_bits)
        act_min, act_max = _act_range(rng, out_bits, output_zp)
        kw = dict(input_zp=_zero_point(rng, in_bits), output_zp=output_zp, out_multiplier=mult,
                  out_shift=shift, act_min=act_min, act_max=act_max)
        bias = _bias(rng, o, in_bits, w_bits, k)
        expected = ref.fully_connected(x, filt, bias, **kw)
        got = native.fully_connected(x, filt, bias, **kw,
                                     **_bits_kwargs(w_bits, in_bits, out_bits))
        _assert_same(expected, got, (i, x.shape, filt.shape, kw))


def _add_shapes(rng):
    rank = int(rng.integers(1, 5))
    out = [int(v) for v in rng.integers(1, 6, size=rank)]
    if rng.random() < 0.5:
        return tuple(out), tuple(out)
    a = [d if rng.random() < 0.6 else 1 for d in out]
    b = [d if rng.random() < 0.6 else 1 for d in out]
    a = a[int(rng.integers(0, rank)):] or [1]  # sometimes a lower rank
    return tuple(a), tuple(b)


@pytest.mark.parametrize("in1_bits,in2_bits,out_bits", ADD_COMBOS)
def test_add_matches_reference(in1_bits, in2_bits, out_bits):
    rng = _rng("add", in1_bits, in2_bits, out_bits)
    for i in range(CASES_PER_COMBO):
        s1, s2 = _add_shapes(rng)
        x1, x2 = _values(rng, in1_bits, s1), _values(rng, in2_bits, s2)
        scales = np.exp(rng.uniform(np.log(0.01), np.log(1.0), 3))
        # Output scale relative to the inputs so the sum lands near the output range.
        scales[2] *= 2.0 ** (max(in1_bits, in2_bits) - out_bits) * rng.uniform(0.5, 2.0)
        params = ref.add_params(scales[0], _zero_point(rng, in1_bits), scales[1],
                                _zero_point(rng, in2_bits), scales[2],
                                _zero_point(rng, out_bits))
        act_min, act_max = _act_range(rng, out_bits, params["output_zp"])
        expected = ref.add(x1, x2, **params, act_min=act_min, act_max=act_max)
        got = native.add(x1, x2, **params, act_min=act_min, act_max=act_max,
                         input_bits=(in1_bits, in2_bits), output_bits=out_bits)
        _assert_same(expected, got, (i, s1, s2, params))


def _pool_case(rng, in_bits, out_bits):
    """Geometry, values and act range; a fifth of the cases are global (one window, VALID)."""
    while True:
        n = int(rng.integers(1, 3))
        h, w = (int(v) for v in rng.integers(1, 11, size=2))
        c = int(rng.integers(1, 6))
        stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
        if rng.random() < 0.2:
            fh, fw = h, w
            pad, out_hw = ref.compute_padding((h, w), (fh, fw), stride, (1, 1), "VALID")
            break
        fh, fw = (int(v) for v in rng.integers(1, 5, size=2))
        sp = _spatial(rng, (h, w), (fh, fw), stride, (1, 1))
        if sp is not None:
            pad, out_hw = sp
            break
    x = _values(rng, in_bits, (n, h, w, c))
    output_zp = _zero_point(rng, out_bits)
    act_min, act_max = _act_range(rng, out_bits, output_zp)
    return x, output_zp, dict(filter_hw=(fh, fw), stride=stride, pad=pad, out_hw=out_hw,
                              act_min=act_min, act_max=act_max)


def _average_pool_requant(rng, in_bits, out_bits, output_zp):
    """Zero points and (multiplier, shift) from float32 scales whose ratio s_in / s_out is
    2^(out_bits - in_bits) times 1/4..4 (both below and above 1), as the glue derives them."""
    in_scale = np.float32(np.exp(rng.uniform(np.log(1e-3), np.log(1.0))))
    ratio = 2.0 ** (out_bits - in_bits) * np.exp(rng.uniform(np.log(0.25), np.log(4.0)))
    out_scale = np.float32(in_scale / ratio)
    multiplier, shift = ar.quantize_multiplier(float(in_scale) / float(out_scale))
    return dict(input_zp=_zero_point(rng, in_bits), output_zp=output_zp,
                output_multiplier=multiplier, output_shift=shift)


@pytest.mark.parametrize("in_bits,out_bits", ACT_COMBOS)
def test_requantized_average_pool_matches_reference(in_bits, out_bits):
    rng = _rng("requantized_average_pool_2d", in_bits, out_bits)
    ratios = []
    for i in range(POOL_CASES_PER_COMBO):
        x, output_zp, kw = _pool_case(rng, in_bits, out_bits)
        kw.update(_average_pool_requant(rng, in_bits, out_bits, output_zp))
        ratios.append(kw["output_shift"] > 0)
        expected = ref.requantized_average_pool_2d(x, **kw)
        got = native.requantized_average_pool_2d(x, **kw, input_bits=in_bits,
                                                 output_bits=out_bits)
        _assert_same(expected, got, (i, x.shape, kw))
    if in_bits == out_bits:  # ratios around 1: both rescaling directions were exercised
        assert any(ratios) and not all(ratios)


@pytest.mark.parametrize("in_bits,out_bits", ACT_COMBOS)
def test_max_pool_matches_reference(in_bits, out_bits):
    rng = _rng("max_pool_2d", in_bits, out_bits)
    for i in range(POOL_CASES_PER_COMBO):
        x, _, kw = _pool_case(rng, in_bits, out_bits)
        expected = ref.max_pool_2d(x, **kw)
        got = native.max_pool_2d(x, **kw, input_bits=in_bits, output_bits=out_bits)
        _assert_same(expected, got, (i, x.shape, kw))


@pytest.mark.parametrize("in_bits", BITS)
def test_requantized_average_pool_at_the_int64_headroom_limits(in_bits):
    # Full-range window sums of both signs with the largest multiplier and (a) the largest left
    # shift, (b) the smallest right shift with window area < 2^(31 + shift) (8x8 window: 2^6).
    lo, hi = int_range(in_bits)
    for value, input_zp in ((hi, lo), (lo, hi)):
        x = np.full((1, 8, 8, 3), value, np.int8)
        x[0, 0, 0, 1] = 0
        kw = dict(filter_hw=(8, 8), stride=(1, 1), pad=(0, 0), out_hw=(1, 1), input_zp=input_zp,
                  output_zp=0, output_multiplier=(1 << 31) - 1, act_min=-128, act_max=127)
        for shift in (30, 6 - 31 + 1):
            _assert_same(ref.requantized_average_pool_2d(x, output_shift=shift, **kw),
                         native.requantized_average_pool_2d(x, output_shift=shift, **kw,
                                                            input_bits=in_bits), kw)
        with pytest.raises(native.NativeKernelError) as err:
            native.requantized_average_pool_2d(x, output_shift=6 - 31, **kw, input_bits=in_bits)
        assert err.value.status == 15  # kErrBadParam


@pytest.mark.parametrize("bits", BITS)
def test_native_pack_unpack_match_python(bits):
    rng = _rng("pack", bits)
    for count in (1, 2, 3, 4, 5, 7, 8, 33):
        v = _values(rng, bits, (count,))
        packed = pack(v, bits)
        assert np.array_equal(native.pack_native(v, bits), packed)
        assert np.array_equal(native.unpack_native(packed, bits, count), unpack(packed, bits, count))


def test_int4_layout_low_nibble_first():
    # [1, -2, 3] -> bytes 0xE1 (low nibble 1, high nibble -2), 0x03.
    assert list(native.pack_native(np.array([1, -2, 3]), 4)) == [0xE1, 0x03]
    # int2 [1, -1, -2, 0, 1] -> 0b00_10_11_01 = 0x2D, then 0x01.
    assert list(native.pack_native(np.array([1, -1, -2, 0, 1]), 2)) == [0x2D, 0x01]


# ---- malformed arguments: a clean exception, never a crash --------------------------------

def _conv_kwargs(**over):
    kw = dict(input_zp=0, output_zp=0, out_multiplier=np.full(2, 1 << 30), out_shift=np.zeros(2),
              act_min=-128, act_max=127, stride=(1, 1), dilation=(1, 1), pad=(0, 0),
              out_hw=(3, 3))
    kw.update(over)
    return kw


X = np.zeros((1, 5, 5, 3), dtype=np.int8)
W = np.ones((2, 3, 3, 3), dtype=np.int8)
B = np.zeros(2, dtype=np.int32)

BAD_CONV = [
    ("wrong out_hw", dict(), dict(out_hw=(5, 3))),
    ("out_hw too small", dict(), dict(out_hw=(1, 1))),
    ("zero stride", dict(), dict(stride=(0, 1))),
    ("negative stride", dict(), dict(stride=(-1, 1))),
    ("zero dilation", dict(), dict(dilation=(1, 0))),
    ("negative pad", dict(), dict(pad=(-1, 0))),
    ("huge pad", dict(), dict(pad=(1 << 20, 0), out_hw=(3, 3))),
    ("input zp out of 4-bit range", dict(input_bits=4), dict(input_zp=9)),
    ("output zp out of 2-bit range", dict(output_bits=2), dict(output_zp=2, act_min=-2,
                                                                act_max=1)),
    ("act range beyond output bits", dict(output_bits=4), dict(act_min=-9, act_max=7)),
    ("act_min > act_max", dict(), dict(act_min=5, act_max=4)),
    ("multiplier count", dict(), dict(out_multiplier=np.ones(3), out_shift=np.zeros(3))),
    ("negative multiplier", dict(), dict(out_multiplier=np.array([-1, 1]))),
    ("shift too large", dict(), dict(out_shift=np.array([31, 0]))),
    ("shift too small", dict(), dict(out_shift=np.array([-32, 0]))),
]


@pytest.mark.parametrize("name,bits,over", BAD_CONV, ids=[c[0] for c in BAD_CONV])
def test_conv_malformed_raises(name, bits, over):
    with pytest.raises(TfqError):
        native.conv_2d(X, W, B, **_conv_kwargs(**over), **bits)


@pytest.mark.parametrize("x,w,b", [
    (np.zeros((1, 5, 5, 4), np.int8), W, B),            # filter depth 3 does not divide 4
    (X, np.ones((2, 3, 3, 2), np.int8), B),             # 3 % 2 != 0
    (X, W, np.zeros(3, np.int32)),                      # bias length
    (np.zeros((1, 5, 5, 0), np.int8), W, B),            # empty channel dim
    (np.zeros((1, 5, 5), np.int8), W, B),               # 3-D input
    (X, np.ones((2, 7, 7, 3), np.int8), B),             # filter larger than input (VALID)
])
def test_conv_bad_shapes_raise(x, w, b):
    with pytest.raises(TfqError):
        native.conv_2d(x, w, b, **_conv_kwargs())


def test_values_outside_bits_raise():
    with pytest.raises(TfqError):
        native.conv_2d(np.full((1, 5, 5, 3), 8, np.int8), W, B, **_conv_kwargs(), input_bits=4)
    with pytest.raises(TfqError):
        native.conv_2d(X, W, B, **_conv_kwargs(), input_bits=3)


def test_depthwise_malformed_raises():
    w = np.ones((1, 3, 3, 6), np.int8)
    kw = _conv_kwargs(out_multiplier=np.full(6, 1 << 30), out_shift=np.zeros(6))
    native.depthwise_conv_2d(X, w, None, depth_multiplier=2, **kw)  # the valid baseline
    for bad in (dict(depth_multiplier=3), dict(depth_multiplier=0), dict(depth_multiplier=-2)):
        with pytest.raises(TfqError):
            native.depthwise_conv_2d(X, w, None, **bad, **kw)
    with pytest.raises(TfqError):
        native.depthwise_conv_2d(X, np.ones((2, 3, 3, 6), np.int8), None, depth_multiplier=2,
                                 **kw)
    with pytest.raises(TfqError):
        native.depthwise_conv_2d(X, w, None, depth_multiplier=2, **dict(kw, out_hw=(5, 5)))


def test_fully_connected_malformed_raises():
    kw = dict(input_zp=0, output_zp=0, out_multiplier=[1 << 30], out_shift=[0], act_min=-128,
              act_max=127)
    x, w = np.zeros((2, 8), np.int8), np.ones((3, 8), np.int8)
    native.fully_connected(x, w, None, **kw)
    with pytest.raises(TfqError):
        native.fully_connected(np.zeros((2, 7), np.int8), w, None, **kw)
    with pytest.raises(TfqError):
        native.fully_connected(x, w, np.zeros(2, np.int32), **kw)
    with pytest.raises(TfqError):
        native.fully_connected(x, w, None, **dict(kw, out_multiplier=[1, 2], out_shift=[0, 0]))
    with pytest.raises(TfqError):
        native.fully_connected(x, w, None, **dict(kw, weights_zp=1))


def test_add_and_pool_malformed_raise():
    p = dict(input1_zp=0, input2_zp=0, output_zp=0, left_shift=20, input1_multiplier=1 << 30,
             input1_shift=-1, input2_multiplier=1 << 30, input2_shift=-1,
             output_multiplier=1 << 30, output_shift=-18, act_min=-128, act_max=127)
    a = np.zeros((2, 3), np.int8)
    native.add(a, a, **p)
    with pytest.raises(TfqError):
        native.add(a, np.zeros((3, 2), np.int8), **p)
    with pytest.raises(TfqError):
        native.add(a, a, **dict(p, input1_shift=1))  # ADD shifts must be <= 0
    with pytest.raises(TfqError):
        native.add(a, a, **dict(p, left_shift=31))
    with pytest.raises(TfqError):
        native.add(np.zeros((1, 1, 1, 1, 2), np.int8), np.zeros(2, np.int8), **p)
    x = np.zeros((1, 4, 4, 2), np.int8)
    pool = dict(filter_hw=(2, 2), stride=(2, 2), pad=(0, 0), out_hw=(2, 2), act_min=-128,
                act_max=127)
    requant = dict(input_zp=0, output_zp=0, output_multiplier=1 << 30, output_shift=1)
    for op, extra in ((native.requantized_average_pool_2d, requant), (native.max_pool_2d, {})):
        op(x, **pool, **extra)
        for bad in (dict(out_hw=(3, 2)), dict(filter_hw=(0, 2)), dict(pad=(2, 0), out_hw=(4, 2)),
                    dict(stride=(0, 2))):
            with pytest.raises(TfqError):
                op(x, **dict(pool, **bad), **extra)
        with pytest.raises(TfqError):  # act range beyond the 4-bit output
            op(x, **dict(pool, act_min=-9, act_max=7), **extra, output_bits=4)


BAD_AVERAGE_POOL = [  # (name, bits, overrides, tflm_ext status)
    ("multiplier not normalized", {}, dict(output_multiplier=(1 << 30) - 1), 11),
    ("negative multiplier", {}, dict(output_multiplier=-(1 << 30)), 11),
    ("shift too large", {}, dict(output_shift=31), 12),
    ("shift too small", {}, dict(output_shift=-32), 12),
    ("divisor overflows int64", {}, dict(output_shift=-29), 15),  # 4 * 2^(31 + 29) = 2^62
    ("input zp out of 4-bit range", dict(input_bits=4), dict(input_zp=8), 9),
    ("output zp out of 2-bit range", dict(output_bits=2), dict(output_zp=-3, act_min=-2,
                                                               act_max=1), 9),
]


@pytest.mark.parametrize("name,bits,over,status", BAD_AVERAGE_POOL,
                         ids=[c[0] for c in BAD_AVERAGE_POOL])
def test_requantized_average_pool_bad_requant_raises(name, bits, over, status):
    x = np.zeros((1, 4, 4, 2), np.int8)
    kw = dict(filter_hw=(2, 2), stride=(2, 2), pad=(0, 0), out_hw=(2, 2), act_min=-128,
              act_max=127, input_zp=0, output_zp=0, output_multiplier=1 << 30, output_shift=20)
    native.requantized_average_pool_2d(x, **kw)  # the limit itself is accepted
    with pytest.raises(native.NativeKernelError) as err:
        native.requantized_average_pool_2d(x, **dict(kw, **over), **bits)
    assert err.value.status == status, err.value
    with pytest.raises(TfqError):  # not an int32 at all
        native.requantized_average_pool_2d(x, **dict(kw, output_multiplier=1 << 31))


def test_requantized_average_pool_zero_multiplier_gives_output_zero_point():
    x = np.arange(-16, 16, dtype=np.int8).reshape(1, 4, 4, 2)
    kw = dict(filter_hw=(2, 2), stride=(2, 2), pad=(0, 0), out_hw=(2, 2), act_min=-8,
              act_max=7, input_zp=3, output_zp=-5, output_multiplier=0, output_shift=0)
    got = native.requantized_average_pool_2d(x, **kw, output_bits=4)
    assert np.array_equal(got, np.full((1, 2, 2, 2), -5))
    _assert_same(ref.requantized_average_pool_2d(x, **kw), got, kw)


# ---- the C ABI itself never trusts its caller's sizes ------------------------------------

def _raw_tensor(buf, shape, bits, nbytes=None):
    t = native._Tensor()
    t.data = buf.ctypes.data if buf is not None else None
    t.nbytes = buf.nbytes if nbytes is None else nbytes
    t.bits, t.rank = bits, len(shape)
    for i, d in enumerate(shape):
        t.dims[i] = d
    return t


def test_c_abi_rejects_lying_buffer_sizes_and_nulls():
    lib = native._load()
    x = np.zeros(1 * 5 * 5 * 3, np.uint8)
    w = np.zeros(2 * 3 * 3 * 3, np.uint8)
    out = np.zeros(1 * 3 * 3 * 2, np.uint8)
    mult = np.full(2, 1 << 30, np.int32)
    shift = np.zeros(2, np.int32)
    p = native._ConvParams(1, 1, 1, 1, 0, 0, 0, 0, -128, 127)

    def call(xt, wt, ot, quant_count=2, params=p):
        return lib.tfq_conv_2d(ctypes.byref(params) if params is not None else None,
                               native._ptr(mult), native._ptr(shift), quant_count,
                               ctypes.byref(xt), ctypes.byref(wt), None, 0, ctypes.byref(ot))

    ok = call(_raw_tensor(x, (1, 5, 5, 3), 8), _raw_tensor(w, (2, 3, 3, 3), 8),
              _raw_tensor(out, (1, 3, 3, 2), 8))
    assert ok == 0
    # A buffer that claims fewer bytes than its shape needs.
    assert call(_raw_tensor(x, (1, 5, 5, 3), 8, nbytes=74), _raw_tensor(w, (2, 3, 3, 3), 8),
                _raw_tensor(out, (1, 3, 3, 2), 8)) == 13
    assert call(_raw_tensor(x, (1, 5, 5, 3), 8), _raw_tensor(w, (2, 3, 3, 3), 8),
                _raw_tensor(out, (1, 3, 3, 2), 8, nbytes=17)) == 13
    # Shape that claims more elements than the buffer holds.
    assert call(_raw_tensor(x, (1, 50, 5, 3), 8), _raw_tensor(w, (2, 3, 3, 3), 8),
                _raw_tensor(out, (1, 48, 3, 2), 8)) == 13
    # Sizes that overflow int32 element counts.
    assert call(_raw_tensor(x, (65536, 65536, 1, 1), 8), _raw_tensor(w, (2, 3, 3, 3), 8),
                _raw_tensor(out, (1, 3, 3, 2), 8)) == 4
    # Null data, null params, bad rank, bad bits, multiplier count.
    assert call(_raw_tensor(None, (1, 5, 5, 3), 8, nbytes=75), _raw_tensor(w, (2, 3, 3, 3), 8),
                _raw_tensor(out, (1, 3, 3, 2), 8)) == 1
    assert call(_raw_tensor(x, (1, 5, 5, 3), 8), _raw_tensor(w, (2, 3, 3, 3), 8),
                _raw_tensor(out, (1, 3, 3, 2), 8), params=None) == 1
    assert call(_raw_tensor(x, (1, 75), 8), _raw_tensor(w, (2, 3, 3, 3), 8),
                _raw_tensor(out, (1, 3, 3, 2), 8)) == 3
    assert call(_raw_tensor(x, (1, 5, 5, 3), 3), _raw_tensor(w, (2, 3, 3, 3), 8),
                _raw_tensor(out, (1, 3, 3, 2), 8)) == 2
    assert call(_raw_tensor(x, (1, 5, 5, 3), 8), _raw_tensor(w, (2, 3, 3, 3), 8),
                _raw_tensor(out, (1, 3, 3, 2), 8), quant_count=1) == 11
    # Output aliasing the input.
    assert call(_raw_tensor(x, (1, 5, 5, 3), 8), _raw_tensor(w, (2, 3, 3, 3), 8),
                _raw_tensor(x, (1, 3, 3, 2), 8)) == 14
    assert native.status_string(13).startswith("a buffer is smaller")


def test_missing_library_error_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setenv("TFQ_TFLM_EXT_LIB", str(tmp_path / "nope.so"))
    with pytest.raises(native.NativeLibraryError, match="pip install -e ."):
        native.conv_2d(X, W, B, **_conv_kwargs())
    assert not native.is_available()
