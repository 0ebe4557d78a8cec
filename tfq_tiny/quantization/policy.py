"""``BitPolicy``: weight and activation bit widths per layer, serialisable to JSON.

A policy has defaults and per-layer overrides, keyed by layer name. ``activation_bits``
of a layer is the width of the tensor that layer outputs (for an input layer, the model's
input tensor). ``activation_bits=None`` keeps activations in float (weights-only runs).
``output_bits`` is the width of the model's output tensors and of the input and output of a
softmax, sigmoid, tanh or Concatenate (the logits, mostly) when activations are quantized: 8 by
default, as the int8 outputs a TFLM application reads and the int8 tensors TFLM's SOFTMAX,
LOGISTIC, TANH and CONCATENATION need (a dozen logits cost nothing in RAM, and 4-bit logits
lose ranking resolution); ``None`` makes them follow ``activation_bits``. A per-layer override
of the layer wins over both.
"""
import json
import re
from dataclasses import dataclass, field

from tfq_tiny.quantization.grid import check_bits

_SHORTHAND = re.compile(r"^w(\d+)a(\d+|32|f)$", re.IGNORECASE)


def _bits_or_none(bits, what):
    return None if bits is None else check_bits(bits, what)


@dataclass(frozen=True)
class BitPolicy:
    """Bit widths for every quantized tensor of a model."""

    weight_bits: int = 8
    activation_bits: int | None = 8
    overrides: dict = field(default_factory=dict)
    output_bits: int | None = 8

    def __post_init__(self):
        object.__setattr__(self, "weight_bits", check_bits(self.weight_bits, "weight_bits"))
        object.__setattr__(self, "activation_bits",
                           _bits_or_none(self.activation_bits, "activation_bits"))
        object.__setattr__(self, "output_bits", _bits_or_none(self.output_bits, "output_bits"))
        clean = {}
        for layer, spec in dict(self.overrides).items():
            unknown = set(spec) - {"weight_bits", "activation_bits"}
            if unknown:
                raise ValueError(f"Override for layer '{layer}' has unknown keys {sorted(unknown)}; "
                                 "use 'weight_bits' and/or 'activation_bits'.")
            entry = {}
            if "weight_bits" in spec:
                entry["weight_bits"] = check_bits(spec["weight_bits"], f"weight_bits of '{layer}'")
            if "activation_bits" in spec:
                entry["activation_bits"] = _bits_or_none(
                    spec["activation_bits"], f"activation_bits of '{layer}'")
            clean[str(layer)] = entry
        object.__setattr__(self, "overrides", clean)

    @classmethod
    def uniform(cls, weight_bits=8, activation_bits=8, output_bits=8):
        return cls(weight_bits, activation_bits, {}, output_bits)

    @classmethod
    def parse(cls, spec):
        """A policy from a BitPolicy, a dict/JSON string, or a shorthand like 'w4a4' / 'w4a32'."""
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, dict):
            return cls.from_config(spec)
        if isinstance(spec, str):
            text = spec.strip()
            if text.startswith("{"):
                return cls.from_json(text)
            match = _SHORTHAND.match(text)
            if match:
                act = match.group(2)
                return cls(int(match.group(1)), None if act in ("32", "f", "F") else int(act))
        raise ValueError(
            f"Cannot read a bit policy from {spec!r}. Use BitPolicy.uniform(weight_bits=4, "
            "activation_bits=4), a shorthand such as 'w8a8', 'w4a4', 'w4a8' or 'w4a32' (float "
            "activations), or a BitPolicy JSON dict.")

    def weight_bits_for(self, layer_name):
        return self.overrides.get(layer_name, {}).get("weight_bits", self.weight_bits)

    def activation_bits_for(self, layer_name, is_model_output=False):
        override = self.overrides.get(layer_name, {})
        if "activation_bits" in override:
            return override["activation_bits"]
        if is_model_output and self.activation_bits is not None and self.output_bits is not None:
            return self.output_bits
        return self.activation_bits

    def with_override(self, layer_name, **bits):
        overrides = {k: dict(v) for k, v in self.overrides.items()}
        overrides.setdefault(layer_name, {}).update(bits)
        return BitPolicy(self.weight_bits, self.activation_bits, overrides, self.output_bits)

    @property
    def quantizes_activations(self):
        return self.activation_bits is not None or any(
            v.get("activation_bits") is not None for v in self.overrides.values())

    def get_config(self):
        return {"weight_bits": self.weight_bits, "activation_bits": self.activation_bits,
                "output_bits": self.output_bits,
                "overrides": {k: dict(v) for k, v in sorted(self.overrides.items())}}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(config.get("weight_bits", 8), config.get("activation_bits", 8),
                   config.get("overrides", {}), config.get("output_bits", 8))

    def to_json(self, **kwargs):
        return json.dumps(self.get_config(), **kwargs)

    @classmethod
    def from_json(cls, text):
        return cls.from_config(json.loads(text))

    def __str__(self):
        act = "f" if self.activation_bits is None else self.activation_bits
        extra = f" (+{len(self.overrides)} overrides)" if self.overrides else ""
        return f"W{self.weight_bits}A{act}{extra}"
