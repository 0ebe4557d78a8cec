"""TFLM's fixed-point helpers in NumPy, exact and vectorised.

Every function takes scalars or arrays (broadcast together), computes on int64 and returns
values with the meaning of the C++ int32 result, two's-complement wrapping where C++ would
overflow. They mirror ``tensorflow/lite/kernels/internal/common.{h,cc}``,
``quantization_util.cc`` and gemmlowp's ``fixedpoint.h``.

TFLM can be built with one of two roundings for ``MultiplyByQuantizedMultiplier``:

- ``"double"`` (default build, gemmlowp): a saturating rounding doubling high multiply
  followed by a rounding right shift, each rounding half away from zero / to nearest;
- ``"single"`` (``TFLITE_SINGLE_ROUNDING``): one 64-bit multiply and a single rounding shift.

``ROUNDING`` is what the pip ``tflite-micro`` build uses (checked bit-exactly in
tests/test_runtime.py); every helper takes ``rounding=`` to override it.
"""
import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

ROUNDING = "double"


def _rounding(rounding):
    mode = ROUNDING if rounding is None else rounding
    if mode not in ("double", "single"):
        raise ValueError(f"rounding must be 'double' or 'single', got {mode!r}.")
    return mode


def as_i64(x):
    return np.asarray(x, dtype=np.int64)


def wrap_int32(x):
    """Two's-complement wrap of integers into int32 (what C++ does on overflow in practice)."""
    x = as_i64(x)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _trunc_div_pow2(x, bits):
    """C++ integer division by 2**bits (rounds toward zero)."""
    return np.where(x >= 0, x >> bits, -((-x) >> bits))


def round_half_away(x):
    """``std::round``/``TfLiteRound``: nearest integer, ties away from zero, in x's float type."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    mag = np.abs(x)
    floor = np.floor(mag)
    rounded = floor + (mag - floor >= 0.5)
    return np.copysign(rounded, x).astype(x.dtype)


def quantize_multiplier(real_multiplier, rounding=None):
    """``tflite::QuantizeMultiplier``: real = multiplier * 2**(shift - 31), multiplier in Q0.31.

    Returns ``(int multiplier, int shift)`` with shift > 0 meaning a left shift.
    """
    mode = _rounding(rounding)
    real = float(real_multiplier)
    if real == 0.0:
        return 0, 0
    if not math.isfinite(real):
        raise ValueError(f"cannot quantize a non-finite multiplier {real!r}.")
    q, shift = math.frexp(real)
    q_fixed = int(round_half_away(q * float(1 << 31)))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    if mode == "single" and shift > 30:
        shift, q_fixed = 30, (1 << 31) - 1
    return q_fixed, shift


def quantize_multiplier_array(real_multipliers, rounding=None):
    """Element-wise ``quantize_multiplier``: (int32 multipliers, int32 shifts)."""
    reals = np.asarray(real_multipliers, dtype=np.float64).reshape(-1)
    pairs = [quantize_multiplier(r, rounding) for r in reals]
    mult = np.array([p[0] for p in pairs], dtype=np.int32)
    shift = np.array([p[1] for p in pairs], dtype=np.int32)
    return mult, shift


def quantize_multiplier_smaller_than_one_exp(real_multiplier, rounding=None):
    """``QuantizeMultiplierSmallerThanOneExp``: a multiplier in (0, 1) with shift <= 0."""
    real = float(real_multiplier)
    if not 0.0 < real < 1.0:
        raise ValueError(f"multiplier must be in (0, 1), got {real!r}.")
    return quantize_multiplier(real, rounding)


def quantize_multiplier_greater_than_one(real_multiplier, rounding=None):
    """``QuantizeMultiplierGreaterThanOne``: a multiplier > 1 with shift >= 0."""
    real = float(real_multiplier)
    if not real > 1.0:
        raise ValueError(f"multiplier must be > 1, got {real!r}.")
    return quantize_multiplier(real, rounding)


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values (ARM VQRDMULH)."""
    a, b = np.broadcast_arrays(as_i64(a), as_i64(b))
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = _trunc_div_pow2(ab + nudge, 31)
    overflow = (a == b) & (a == INT32_MIN)
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT``: x / 2**exponent rounded to nearest, ties away from 0."""
    x = as_i64(x)
    exponent = as_i64(exponent)
    if np.any((exponent < 0) | (exponent > 31)):
        raise ValueError("RoundingDivideByPOT needs an exponent in [0, 31].")
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def saturating_rounding_multiply_by_pot(x, exponent):
    """gemmlowp ``SaturatingRoundingMultiplyByPOT<exponent>`` for int32 raw values."""
    x = as_i64(x)
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    shifted = wrap_int32(x << exponent)
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, shifted))


def multiply_by_quantized_multiplier(x, multiplier, shift, rounding=None):
    """``MultiplyByQuantizedMultiplier(int32 x, int32 multiplier, int shift)``.

    Computes round(x * multiplier * 2**(shift - 31)) the way the chosen TFLM build does.
    """
    x, multiplier, shift = np.broadcast_arrays(as_i64(x), as_i64(multiplier), as_i64(shift))
    if _rounding(rounding) == "single":
        total_shift = 31 - shift
        rounder = np.int64(1) << (total_shift - 1)
        return wrap_int32((x * multiplier + rounder) >> total_shift)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    high = saturating_rounding_doubling_high_mul(wrap_int32(x << left), multiplier)
    return rounding_divide_by_pot(high, right)


def multiply_by_quantized_multiplier_smaller_than_one_exp(x, multiplier, left_shift, rounding=None):
    """``MultiplyByQuantizedMultiplierSmallerThanOneExp`` (ADD's rescaling, left_shift <= 0)."""
    if _rounding(rounding) == "single":
        return multiply_by_quantized_multiplier(x, multiplier, left_shift, "single")
    high = saturating_rounding_doubling_high_mul(x, multiplier)
    return rounding_divide_by_pot(high, -as_i64(left_shift))


def multiply_by_quantized_multiplier_greater_than_one(x, multiplier, left_shift, rounding=None):
    """``MultiplyByQuantizedMultiplierGreaterThanOne`` (softmax input scaling, left_shift >= 0)."""
    if _rounding(rounding) == "single":
        return multiply_by_quantized_multiplier(x, multiplier, left_shift, "single")
    return saturating_rounding_doubling_high_mul(wrap_int32(as_i64(x) << as_i64(left_shift)), multiplier)


def count_leading_zeros_u32(x):
    """Leading zero bits of each value read as uint32 (32 for 0)."""
    y = as_i64(x) & 0xFFFFFFFF
    bit_length = np.zeros(y.shape, dtype=np.int64)
    for step in (16, 8, 4, 2, 1):
        high = y >= (np.int64(1) << step)
        bit_length += step * high
        y = np.where(high, y >> step, y)
    bit_length += y > 0
    return 32 - bit_length
