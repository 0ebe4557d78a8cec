"""Step 1 of the pipeline: float-model transforms that make a model easier to quantize.

Each step returns a new model whose float outputs equal the input model's (to float
tolerance): BatchNorm folding and cross-layer equalization.
"""
from tfq_tiny.preprocess.bn_fold import fold_batch_norm
from tfq_tiny.preprocess.cle import cross_layer_equalize

STEPS = {"bn_fold": fold_batch_norm, "cle": cross_layer_equalize}


def preprocess(model, steps=("bn_fold", "cle")):
    """Apply ``steps`` in order ("bn_fold", "cle"); CLE implies BN folding first."""
    steps = tuple(steps or ())
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"Unknown preprocess step(s) {unknown}; choose from {sorted(STEPS)}.")
    if "cle" in steps and "bn_fold" not in steps:
        steps = ("bn_fold",) + steps
    for step in steps:
        model = STEPS[step](model)
    return model


__all__ = ["fold_batch_norm", "cross_layer_equalize", "preprocess", "STEPS"]
