"""Per-tensor sensitivity: how much a proxy loss grows when only one tensor is lowered.

For every searchable variable and every lower width (4 and 2 by default), the model is
quantized with that variable lowered and everything else at 8 bits, and the loss (KL of the
quantized vs float logits on the proxy split, or any ``loss_fn(policy)``) is compared with the
all-8-bit loss. Summing these per-tensor increases is the additive objective the fast search
minimises: it ignores interactions between tensors, which is what makes the problem an exact
integer program.
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

    def costs(self):
        """{key: {bits: cost}}: loss increase over the all-8-bit policy, made non-negative and
        non-increasing in bits (a narrower width never costs less than a wider one)."""
        result = {}
        for key, by_bits in self.losses.items():
            cost, running = {}, 0.0
            for bits in sorted(by_bits, reverse=True):
                running = max(running, by_bits[bits] - self.reference_loss)
                cost[bits] = running
            result[key] = cost
        return result

    def to_dict(self):
        return {"reference_loss": self.reference_loss, "seconds": self.seconds,
                "losses": [{"kind": k[0], "layer": k[1],
                            "loss": {str(b): v for b, v in sorted(by.items())}}
                           for k, by in self.losses.items()]}


def measure_sensitivity(memory_model, loss_fn, kinds=(WEIGHT, ACTIVATION), bits=(4, 2),
                        high=8, progress=True):
    """Loss of the all-``high`` policy and of each searchable variable lowered alone.

    Args:
      memory_model: the ``MemoryModel`` naming the variables (fixed ones are skipped).
      loss_fn: policy -> float, e.g. ``ProxyEvaluator(...).kl``.
      kinds: which variables to measure (``(WEIGHT,)`` for a weight-only search).
      bits: the lower widths to measure; ``high`` gets loss increase 0 by definition.
    """
    start = time.perf_counter()
    base = memory_model.assignment()
    for v in memory_model.searchable(kinds):
        base[v.key] = high
    reference = float(loss_fn(memory_model.policy(base)))
    variables = memory_model.searchable(kinds)
    result = Sensitivity(reference)
    bar = tqdm(total=len(variables) * len(bits), desc="sensitivity", disable=not progress)
    for v in variables:
        result.losses[v.key] = {high: reference}
        for b in bits:
            trial = dict(base)
            trial[v.key] = b
            result.losses[v.key][b] = float(loss_fn(memory_model.policy(trial)))
            bar.update(1)
            bar.set_postfix_str(f"{v} @{b}: {result.losses[v.key][b] - reference:+.4f}")
    bar.close()
    result.seconds = time.perf_counter() - start
    return result
