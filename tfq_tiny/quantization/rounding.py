"""How a scaled tensor ``x / scale`` is mapped to integers, as a swappable strategy.

A quantizer owns one ``Rounding``. Each rounding may create its own variables in
``build`` (AdaRound's per-weight ``V``, BitSplit's bit planes) so that PTQ optimisers can
replace rounding without forking the quantizer. All roundings pass gradients straight
through (STE) unless they define their own.
"""
from tfq_tiny._compat import tf
from tfq_tiny.quantization.grid import tf_round_half_away

_ROUNDINGS = {}


def register_rounding(cls):
    """Class decorator: make a Rounding constructible from its ``name`` and serialisable."""
    _ROUNDINGS[cls.name] = cls
    return cls


class Rounding:
    """Base rounding: subclasses implement ``round``; ``build`` may add variables."""

    name = None

    def build(self, tensor_shape, name, layer):
        return {}

    def round(self, scaled, weights, training):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name}

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()


@register_rounding
class NearestRounding(Rounding):
    """Round half away from zero with a straight-through gradient."""

    name = "nearest"

    def round(self, scaled, weights, training):
        return scaled + tf.stop_gradient(tf_round_half_away(scaled) - scaled)


def get_rounding(spec):
    """A Rounding from an instance, a name, or a ``get_config`` dict."""
    if isinstance(spec, Rounding):
        return spec
    if spec is None:
        return NearestRounding()
    if isinstance(spec, str):
        spec = {"name": spec}
    config = dict(spec)
    name = config.pop("name")
    if name not in _ROUNDINGS:
        raise ValueError(f"Unknown rounding {name!r}; known: {sorted(_ROUNDINGS)}.")
    return _ROUNDINGS[name](**config)


__all__ = ["Rounding", "NearestRounding", "register_rounding", "get_rounding"]
