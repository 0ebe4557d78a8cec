"""opt_round: AdaRound (Nagel et al. 2020) — learn, per weight, whether to round up or down.

The weight quantizer's rounding is swapped for ``AdaRoundRounding``: ``floor(w/s) + h(V)``
with the rectified sigmoid ``h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)``,
initialised so that ``h(V)`` equals the fractional part of ``w/s``. The loss adds
``lambda * sum(1 - |2 h(V) - 1|^beta)`` after a warm-up (divided by the unit's output channels,
because the papers' reconstruction error sums the squared error over channels where ours
averages it, so lambda = 0.01 weighs as much as in the papers), with ``beta`` annealed from 20 to 2
(``BetaAnnealing``, a Keras callback), which drives every ``h(V)`` to 0 or 1. ``finalize``
writes the hard-rounded grid values into the kernel and restores nearest rounding, so the
result is an ordinary quantized model.
"""
import numpy as np

from tfq_tiny._compat import tf
from tfq_tiny.ptq.optimiser import Optimiser, register, weight_slots
from tfq_tiny.ptq.reconstruction import StepSchedule
from tfq_tiny.quantization.rounding import NearestRounding, Rounding

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v):
    return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


class AdaRoundRounding(Rounding):
    """``floor(x) + h(V)``: soft while optimising, ``floor(x) + [h(V) >= 0.5]`` when hard."""

    name = "adaround"

    def __init__(self, v):
        self.v = v
        self.hard = False

    def round(self, scaled, weights, training):
        h = rectified_sigmoid(self.v)
        if self.hard:
            h = tf.cast(h >= 0.5, h.dtype)
        return tf.floor(scaled) + h


class BetaAnnealing(StepSchedule):
    """AdaRound's schedule: no regulariser during warm-up, then beta decays linearly."""

    def __init__(self, beta, reg_on, start=20.0, end=2.0, warmup=0.2):
        super().__init__()
        self.beta, self.reg_on = beta, reg_on
        self.start, self.end, self.warmup = start, end, warmup

    def update(self, step):
        warm = int(self.warmup * self.total)
        if step < warm:
            self.reg_on.assign(0.0)
        else:
            self.reg_on.assign(1.0)
            t = (step - warm) / max(1, self.total - warm)
            self.beta.assign(self.end + (self.start - self.end) * max(0.0, 1.0 - t))


def _init_v(rest):
    p = np.clip((rest - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p)).astype(np.float32)


@register
class AdaRound(Optimiser):
    name = "round"

    def prepare(self, unit):
        self.beta = tf.Variable(self.config.adaround_beta[0], trainable=False)
        self.reg_on = tf.Variable(0.0, trainable=False)
        self.roundings = []
        self.channels = int(unit.nodes[-1].layer.output_shape[-1])
        for slot in weight_slots(unit):
            quantizer = slot.quantizer
            scale = quantizer._broadcast(slot.variables["scale"], len(slot.weight.shape))
            scaled = (slot.weight / scale).numpy()
            v = tf.Variable(_init_v(scaled - np.floor(scaled)), name=f"{slot.layer.name}_adaround_v")
            rounding = AdaRoundRounding(v)
            quantizer.rounding = rounding
            self.roundings.append(rounding)
        return [([r.v for r in self.roundings], self.config.lr)]

    def regularizer(self):
        weight = self.config.adaround_reg_weight / self.channels

        def reg():
            total = tf.constant(0.0)
            for rounding in self.roundings:
                h = rectified_sigmoid(rounding.v)
                total += tf.reduce_sum(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), self.beta))
            return self.reg_on * weight * total

        return reg

    def callbacks(self):
        start, end = self.config.adaround_beta
        return [BetaAnnealing(self.beta, self.reg_on, start, end, self.config.adaround_warmup)]

    def finalize(self, unit):
        for slot in weight_slots(unit):
            quantizer = slot.quantizer
            if not isinstance(quantizer.rounding, AdaRoundRounding):
                continue
            quantizer.rounding.hard = True
            qmin, qmax = quantizer.int_range
            scale = quantizer._broadcast(slot.variables["scale"], len(slot.weight.shape))
            codes = tf.clip_by_value(quantizer.rounding.round(slot.weight / scale, None, False),
                                     qmin, qmax)
            slot.weight.assign(codes * scale)
            quantizer.rounding = NearestRounding()

    def soft_values(self):
        """Current h(V) of every weight in the unit (for tests and diagnostics)."""
        return [rectified_sigmoid(r.v).numpy() for r in self.roundings]
