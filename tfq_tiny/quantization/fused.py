"""Activation fake quantization as one XLA kernel forward and one backward.

An activation quantizer is about fifteen elementwise ops over a layer's whole output (two
dozen more in float64 with TFLM's double rounding); run one by one they cost more than the
convolution before them, and made Res8's quantized forward pass 3x slower than its float one.
``fake_quant`` computes what ``UniformQuantizer.__call__`` defines, with nearest rounding or
``DoubleRounding``, in fused kernels: the output and the gradient to the input bit for bit (the
same IEEE operations in the same order), the gradients to scale and zero point (LSQ) up to the
order of the sums (tests/test_fused.py holds both).
"""
from tfq_tiny._compat import tf
from tfq_tiny.quantization.grid import tf_round_half_away


def _codes(x, scale, zero_point, requant):
    """round(x / scale) + zero_point before clamping, as the reference expression computes it."""
    from tfq_tiny.quantization.requantization import requantize  # imports the quantizers

    scaled = x / scale
    rounded = tf_round_half_away(scaled) if requant is None else requantize(scaled, requant)
    return scaled + (rounded - scaled) + zero_point


# One output per kernel: XLA splits a single-output loop across threads but not a fusion with
# several outputs (2-4x slower here), so the backward kernels recompute the codes.
# reduce_retracing: one trace serves every activation shape (XLA still compiles per shape).
@tf.function(jit_compile=True, reduce_retracing=True)
def _forward(x, scale, zero_point, qmin, qmax, requant):
    codes = _codes(x, scale, zero_point, requant)
    return (tf.clip_by_value(codes, qmin, qmax) - zero_point) * scale


# Straight-through gradients, each formed as TF's autodiff of the reference forms it. Input and
# qparam gradients are separate kernels so that a graph that needs only the input's (every
# step but LSQ's) prunes the reductions.
def _masked(grad, codes, scale, qmin, qmax):
    grad_q = grad * scale
    return grad_q, tf.where(tf.logical_or(codes < qmin, codes > qmax), tf.zeros_like(grad_q),
                            grad_q)


@tf.function(jit_compile=True, reduce_retracing=True)
def _grad_input(grad, x, scale, zero_point, qmin, qmax, requant):
    codes = _codes(x, scale, zero_point, requant)
    return _masked(grad, codes, scale, qmin, qmax)[1] / scale


@tf.function(jit_compile=True, reduce_retracing=True)
def _grad_qparams(grad, x, scale, zero_point, qmin, qmax, requant):
    codes = _codes(x, scale, zero_point, requant)
    grad_q, grad_codes = _masked(grad, codes, scale, qmin, qmax)
    grad_scale = tf.reduce_sum(grad * (tf.clip_by_value(codes, qmin, qmax) - zero_point)) + \
        tf.reduce_sum(grad_codes * (-x / scale / scale))
    return grad_scale, tf.reduce_sum(grad_codes) - tf.reduce_sum(grad_q)


def fake_quant(x, scale, zero_point, qmin, qmax, requant=None):
    """``(clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale`` with
    straight-through gradients, for a per-tensor (scalar) ``scale`` and integer-valued
    ``zero_point``; ``requant`` (a ``DoubleRounding``) rounds as TFLM's double rounding
    instead of half away from zero (no gradient flows through its scales)."""
    qmin = tf.constant(qmin, x.dtype)
    qmax = tf.constant(qmax, x.dtype)
    if requant is not None:
        requant = tuple(tf.stop_gradient(p) for p in requant.parameters(scale))

    @tf.custom_gradient
    def quantize(x, scale, zero_point):
        def grad(upstream):
            args = (upstream, x, scale, zero_point, qmin, qmax, requant)
            return (_grad_input(*args), *_grad_qparams(*args))

        return _forward(x, scale, zero_point, qmin, qmax, requant), grad

    return quantize(x, tf.convert_to_tensor(scale), tf.convert_to_tensor(zero_point))
