"""opt_qparam: learned step size and zero point (LSQ, Esser et al. 2020) by reconstruction.

The quantizers' ``scale`` (weights per channel, activations per tensor) and activation
``zero_point`` are optimised through the straight-through rounding. Each variable gets an
Adam learning rate relative to its initial magnitude, which plays the role of LSQ's gradient
scaling (Adam is invariant to a constant gradient scale, not to the parameter's magnitude).
"""
from tfq_tiny.ptq.optimiser import Optimiser, activation_slots, mean_abs, register, weight_slots


def qparam_groups(slots, learning_rate):
    """Adam groups for the learnable scales (and activation zero points) of ``slots``;
    fixed-range and tied quantizers (average pools, Concatenate inputs) are left alone."""
    groups = []
    for slot in slots:
        if getattr(slot.quantizer, "fixed_range", None) is not None or \
                getattr(slot.quantizer, "tie_to_input", False) or \
                getattr(slot.quantizer, "tie_to_consumer", False):
            continue
        scale = slot.variables["scale"]
        groups.append(([scale], learning_rate * mean_abs(scale)))
        if slot.kind == "output":
            groups.append(([slot.variables["zero_point"]], learning_rate * 10.0))
    return groups


@register
class LSQ(Optimiser):
    name = "qparam"

    def prepare(self, unit):
        return qparam_groups(weight_slots(unit) + activation_slots(unit), self.config.lr)
