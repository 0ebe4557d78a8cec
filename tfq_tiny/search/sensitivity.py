"""Per-tensor sensitivity: how a proxy loss changes when only one tensor changes width.

Every searchable variable is held at an *anchor* width; then each variable alone takes each
other width, the model is quantized and the loss (KL of the quantized vs float logits on the
proxy split, or any ``loss_fn(policy)``) is compared with the all-anchor loss. Summing these
per-tensor changes is the additive objective the fast search minimises: it ignores
interactions between tensors, which is what makes the problem an exact integer program.

The additive model is a linearisation around the anchor, so the anchor should be where the
solution will lie: at budgets near uniform W4A4 most tensors end at 4 bits, and a tensor's
damage at 2 bits (or its gain at 8) is measured with the rest of the network already at 4
bits, where the errors it compounds with are. Anchoring at 8 bits (HAWQ-style, every tensor
lowered alone from a clean model) underrates how errors add up at low widths.
"""
import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from tfq_tiny.search.memory import ACTIVATION, WEIGHT


@dataclass
class Sensitivity:
    """Measured losses and the solver's costs per variable key."""

    reference_loss: float
    losses: dict = field(default_factory=dict)
    seconds: float = 0.0
    anchor: int = 8

    def costs(self, gain_weight=1.0):
        """{key: {bits: cost}}: loss change from the all-anchor policy, made non-increasing in
        bits (a narrower width never costs less than a wider one). Widths above the anchor may
        cost less than zero: raising a tensor can gain; ``gain_weight`` scales those gains
        (0 = count damage only), since the additive model tends to overrate what several
        raised tensors gain together."""
        result = {}
        for key, by_bits in self.losses.items():
            cost, running = {}, float("-inf")
            for bits in sorted(by_bits, reverse=True):
                change = by_bits[bits] - self.reference_loss
                if bits > self.anchor and change < 0:
                    change *= gain_weight
                running = max(running, change)
                cost[bits] = running
            result[key] = cost
        return result

    def to_dict(self):
        return {"reference_loss": self.reference_loss, "anchor": self.anchor,
                "seconds": self.seconds,
                "losses": [{"kind": k[0], "layer": k[1],
                            "loss": {str(b): v for b, v in sorted(by.items())}}
                           for k, by in self.losses.items()]}


def anchor_width(memory_model, flash=None, ram=None, kinds=(WEIGHT, ACTIVATION)):
    """The widest choice at which every searchable variable of ``kinds`` fits the budgets
    together (the narrowest choice when none does): where a fast search's solution lies."""
    for bits in sorted(memory_model.choices, reverse=True):
        trial = memory_model.assignment()
        for v in memory_model.searchable(kinds):
            trial[v.key] = bits
        m1, m2 = memory_model.memory(trial)
        if (flash is None or m1 <= flash) and (ram is None or m2 <= ram):
            return bits
    return min(memory_model.choices)


def measure_sensitivity(memory_model, loss_fn, kinds=(WEIGHT, ACTIVATION), anchor=8,
                        progress=True):
    """Loss of the all-``anchor`` policy and of each searchable variable at each other width.

    Args:
      memory_model: the ``MemoryModel`` naming the variables and widths (fixed ones skipped).
      loss_fn: policy -> float, e.g. ``ProxyEvaluator(...).kl``.
      kinds: which variables to measure (``(WEIGHT,)`` for a weight-only search).
      anchor: the width every measured variable holds while one of them changes.
    """
    if anchor not in memory_model.choices:
        raise ValueError(f"anchor={anchor!r} is not one of the widths {memory_model.choices}.")
    start = time.perf_counter()
    base = memory_model.assignment()
    variables = memory_model.searchable(kinds)
    for v in variables:
        base[v.key] = anchor
    reference = float(loss_fn(memory_model.policy(base)))
    others = [b for b in sorted(memory_model.choices, reverse=True) if b != anchor]
    result = Sensitivity(reference, anchor=anchor)
    bar = tqdm(total=len(variables) * len(others), desc="sensitivity", disable=not progress)
    for v in variables:
        result.losses[v.key] = {anchor: reference}
        for b in others:
            trial = dict(base)
            trial[v.key] = b
            result.losses[v.key][b] = float(loss_fn(memory_model.policy(trial)))
            bar.update(1)
            bar.set_postfix_str(f"{v} @{b}: {result.losses[v.key][b] - reference:+.4f}")
    bar.close()
    result.seconds = time.perf_counter() - start
    return result
