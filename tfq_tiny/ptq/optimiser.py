"""What a reconstruction optimiser provides to the loop: variables, regulariser, callbacks.

An optimiser never runs its own loop. ``prepare(unit)`` installs whatever it needs (a
rounding strategy, variables) and returns ``(variables, learning_rate)`` groups;
``finalize(unit)`` writes the result back so the model uses plain nearest rounding again.
"""
import numpy as np

from tfq_tiny.quantization.calibration import layer_slots


class Optimiser:
    """Base: optimises nothing (``optimize='none'``)."""

    name = "none"

    def __init__(self, config):
        self.config = config

    def prepare(self, unit):
        return []

    def regularizer(self):
        return None

    def callbacks(self):
        """Schedules for the fit; by default a cosine learning-rate decay."""
        from tfq_tiny.ptq.reconstruction import CosineDecay

        return [CosineDecay()]

    def finalize(self, unit):
        pass


def weight_slots(unit):
    return [s for layer in unit.weight_layers for s in layer_slots(layer) if s.kind == "weight"]


def activation_slots(unit):
    return [s for node in unit.nodes for s in layer_slots(node.layer) if s.kind == "output"]


def unit_state(unit):
    """Every variable an optimiser may change in ``unit`` (kernels, biases, qparams)."""
    state = []
    for node in unit.nodes:
        for slot in layer_slots(node.layer):
            state += [slot.variables["scale"], slot.variables["zero_point"]]
            if slot.weight is not None:
                state.append(slot.weight)
                bias = getattr(slot.layer.layer, "bias", None)
                if bias is not None:
                    state.append(bias)
    return state


def mean_abs(variable):
    return float(np.mean(np.abs(variable.numpy()))) or 1.0


OPTIMISERS = {}


def register(cls):
    OPTIMISERS[cls.name] = cls
    return cls


register(Optimiser)
