"""opt_weights: AdaQuant (Hubara et al. 2020): the float weights themselves are optimised
through the straight-through quantizer so that the quantized unit reproduces the float
output. Kernel and bias learning rates are relative to the quantization step / bias size.
"""
from tfq_tiny.ptq.optimiser import Optimiser, mean_abs, register, weight_slots


@register
class AdaQuant(Optimiser):
    name = "weights"

    def prepare(self, unit):
        groups = []
        for slot in weight_slots(unit):
            groups.append(([slot.weight], self.config.lr * mean_abs(slot.variables["scale"])))
            bias = getattr(slot.layer.layer, "bias", None)
            if bias is not None:
                groups.append(([bias], self.config.lr * mean_abs(bias) * 0.1))
        return groups
