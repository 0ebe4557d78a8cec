"""Range initialisation: MinMax, and MSE (search over clipping ranges minimising ||x - q(x)||^2).

Pure NumPy, shared by weight and activation quantizers. Ranges become ``(scale, zero_point)``
on the grid of ``grid.py``. Symmetric ranges (weights) are per channel over ``channel_axes``;
asymmetric ranges (activations) are per tensor and always contain 0 so that real zero is an
exact integer.
"""
import numpy as np

from tfq_tiny.quantization.grid import int_range, round_half_away

INIT_METHODS = ("minmax", "mse")
# Activations may also be fitted to the model output (``loss_aware.py``), from their MSE range.
ACTIVATION_INIT_METHODS = INIT_METHODS + ("loss_aware",)
_EPS = 1e-12
_MSE_GRID = np.linspace(1.0, 0.05, 96)


def starting_init(method):
    """The observed-statistics init a method starts from (loss-aware ranges refine MSE ones)."""
    return "mse" if method == "loss_aware" else method


def numpy_fake_quant(x, scale, zero_point, bits):
    """NumPy reference of the simulated quantizer: clamp(round(x/s)+zp) then dequantize."""
    qmin, qmax = int_range(bits)
    q = np.clip(round_half_away(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def symmetric_qparams(absmax, bits):
    """Scale (zero point 0) that maps ``absmax`` to the largest positive level."""
    qmax = int_range(bits)[1]
    scale = np.maximum(np.asarray(absmax, np.float64), _EPS) / qmax
    return scale, np.zeros_like(scale)


def asymmetric_qparams(lo, hi, bits):
    """Scale and integer zero point covering [min(lo,0), max(hi,0)] with 2^b levels.

    A tensor seen only as zeros (a dead layer, an untrained model's logits) gets [0, 1]: it holds
    zeros exactly on any grid, and a vanishing scale would leave kernels after it (TFLM's
    SOFTMAX, LOGISTIC, TANH) without a usable multiplier."""
    qmin, qmax = int_range(bits)
    lo = min(float(lo), 0.0)
    hi = max(float(hi), 0.0)
    if hi == lo:
        hi = 1.0
    scale = max((hi - lo) / (qmax - qmin), _EPS)
    zero_point = float(np.clip(qmin - round_half_away(lo / scale), qmin, qmax))
    return np.float64(scale), np.float64(zero_point)


def _reduce_axes(ndim, channel_axes):
    keep = {a % ndim for a in channel_axes}
    return tuple(a for a in range(ndim) if a not in keep)


def weight_qparams(w, bits, method="mse", channel_axes=(-1,)):
    """Per-channel symmetric (scale, zero_point) for a weight tensor, shaped like its channels."""
    w = np.asarray(w, np.float64)
    axes = _reduce_axes(w.ndim, channel_axes)
    absmax = np.max(np.abs(w), axis=axes)
    if method == "minmax":
        return symmetric_qparams(absmax, bits)
    if method != "mse":
        raise ValueError(f"init must be one of {INIT_METHODS}, got {method!r}.")
    best_err = np.full(absmax.shape, np.inf)
    best_scale = symmetric_qparams(absmax, bits)[0]
    for alpha in _MSE_GRID:
        scale = symmetric_qparams(alpha * absmax, bits)[0]
        bshape = _broadcast_shape(w.ndim, channel_axes, scale)
        err = np.sum((w - numpy_fake_quant(w, scale.reshape(bshape), 0.0, bits)) ** 2, axis=axes)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scale = np.where(better, scale, best_scale)
    return best_scale, np.zeros_like(best_scale)


def _broadcast_shape(ndim, channel_axes, per_channel):
    shape = [1] * ndim
    axes = sorted(a % ndim for a in channel_axes)
    for axis, size in zip(axes, per_channel.shape):
        shape[axis] = size
    return shape


def activation_qparams(samples, bits, method="mse", lo=None, hi=None):
    """Per-tensor asymmetric (scale, zero_point) from activation samples.

    ``lo``/``hi`` are the exact extremes seen (the samples may be a subset of the data).
    MSE searches a shrink factor for both ends jointly, then refines each end alone; the
    MinMax range is always a candidate, so MSE is never worse than MinMax on the samples.
    """
    x = np.asarray(samples, np.float64).ravel()
    lo = float(np.min(x)) if lo is None else float(lo)
    hi = float(np.max(x)) if hi is None else float(hi)
    if method == "minmax":
        return asymmetric_qparams(lo, hi, bits)
    if method != "mse":
        raise ValueError(f"init must be one of {INIT_METHODS}, got {method!r}.")

    def error(a, b):
        scale, zp = asymmetric_qparams(a, b, bits)
        return float(np.sum((x - numpy_fake_quant(x, scale, zp, bits)) ** 2))

    best = (error(lo, hi), lo, hi)
    for alpha in _MSE_GRID[1:]:
        best = min(best, (error(alpha * lo, alpha * hi), alpha * lo, alpha * hi))
    _, best_lo, best_hi = best
    for alpha in _MSE_GRID[1:]:
        best = min(best, (error(alpha * best_lo, best_hi), alpha * best_lo, best_hi))
    _, best_lo, best_hi = best
    for alpha in _MSE_GRID[1:]:
        best = min(best, (error(best_lo, alpha * best_hi), best_lo, alpha * best_hi))
    return asymmetric_qparams(best[1], best[2], bits)


class ActivationObserver:
    """Streams batches of one activation tensor: exact min/max and a bounded random sample.

    Keeps memory bounded for large feature maps (the MSE search runs on the sample, with the
    exact extremes as the MinMax candidate).
    """

    def __init__(self, max_samples=1 << 18, seed=0):
        self.lo = np.inf
        self.hi = -np.inf
        self.count = 0
        self.max_samples = max_samples
        self._rng = np.random.default_rng(seed)
        self._chunks = []
        self._kept = 0

    def update(self, batch):
        x = np.asarray(batch, np.float32).ravel()
        if x.size == 0:
            return
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))
        self.count += x.size
        budget = self.max_samples // 8
        if x.size > budget:
            x = self._rng.choice(x, budget, replace=False)
        self._chunks.append(x)
        self._kept += x.size
        if self._kept > self.max_samples:
            merged = np.concatenate(self._chunks)
            merged = self._rng.choice(merged, self.max_samples, replace=False)
            self._chunks, self._kept = [merged], merged.size

    def samples(self):
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)

    def qparams(self, bits, method):
        if self.count == 0:
            raise ValueError("No activation values were observed.")
        return activation_qparams(self.samples(), bits, method, lo=self.lo, hi=self.hi)
