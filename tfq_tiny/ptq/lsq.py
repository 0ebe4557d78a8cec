"""opt_qparam: learned step size and zero point (LSQ, Esser et al. 2020) by reconstruction.

The quantizers' ``scale`` (weights per channel, activations per tensor) and activation
``zero_point`` are optimised through the straight-through rounding. Each variable gets an
Adam learning rate relative to its initial magnitude, which plays the role of LSQ's gradient
scaling (Adam is invariant to a constant gradient scale, not to the parameter's magnitude).
"""
from tfq_tiny.ptq.optimiser import Optimiser, activation_slots, mean_abs, register, weight_slots


@register
class LSQ(Optimiser):
    name = "qparam"

    def prepare(self, unit):
        groups = []
        for slot in weight_slots(unit) + activation_slots(unit):
            if getattr(slot.quantizer, "fixed_range", None) is not None or \
                    getattr(slot.quantizer, "tie_to_input", False):
                continue
            scale = slot.variables["scale"]
            groups.append(([scale], self.config.lr * mean_abs(scale)))
            if slot.kind == "output":
                groups.append(([slot.variables["zero_point"]], self.config.lr * 10.0))
        return groups
