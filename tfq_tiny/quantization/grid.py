"""The integer grid shared by simulation, converter, shim and C++ kernels.

One choice, used everywhere: a ``b``-bit tensor holds signed two's-complement integers over
the *full* range ``[-2**(b-1), 2**(b-1) - 1]`` (int8: [-128, 127], int4: [-8, 7],
int2: [-2, 1]). Weights are symmetric (zero point 0) per output channel; the most negative
level is available to them but MinMax init never needs it. Activations are asymmetric per
tensor with an integer zero point inside the range, so real 0.0 is exactly representable.
"""
from tfq_tiny.errors import BitWidthError

MIN_BITS = 2
MAX_BITS = 8
DEPLOYABLE_BITS = (2, 4, 8)


def check_bits(bits, what="bit width", allowed=None):
    """Return ``bits`` as int, or raise BitWidthError saying what is accepted."""
    allowed = tuple(allowed) if allowed is not None else tuple(range(MIN_BITS, MAX_BITS + 1))
    try:
        as_int = int(bits)
    except (TypeError, ValueError):
        as_int = None
    if as_int is None or as_int != bits or as_int not in allowed:
        raise BitWidthError(
            f"{what} must be one of {list(allowed)}, got {bits!r}. "
            f"Pick an integer bit width in that range (deployable widths: {list(DEPLOYABLE_BITS)})."
        )
    return as_int


def int_range(bits):
    """(qmin, qmax) of a signed ``bits``-bit integer, full range."""
    bits = check_bits(bits)
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def num_levels(bits):
    return 1 << check_bits(bits)


def round_half_away(x):
    """Round half away from zero (C's std::round, what TFLite's quantizers use), NumPy."""
    import numpy as np

    x = np.asarray(x)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def tf_round_half_away(x):
    """Round half away from zero in TensorFlow (``tf.round`` rounds half to even)."""
    from tfq_tiny._compat import tf

    return tf.sign(x) * tf.floor(tf.abs(x) + 0.5)
