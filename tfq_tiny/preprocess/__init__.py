"""Step 1 of the pipeline: float-model transforms that make a model easier to quantize.

Each step returns a new model whose float outputs equal the input model's (to float
tolerance). Four always run (``as_deployed``), because the integer kernels have no BatchNorm,
no PAD, no input scaling and no two-operator layers: folding ZeroPadding into the SAME padding
of the convolution after it, splitting SeparableConv1D/2D and softmax/sigmoid/tanh-activated weight layers,
folding Rescaling/Normalization into the weight layers they feed, then BatchNorm folding.
Cross-layer equalization is optional.
"""
from tfq_tiny.preprocess.bn_fold import fold_batch_norm
from tfq_tiny.preprocess.cle import cross_layer_equalize
from tfq_tiny.preprocess.pad_fold import fold_zero_padding
from tfq_tiny.preprocess.rescale_fold import fold_input_scaling
from tfq_tiny.preprocess.split import split_layers

STEPS = {"bn_fold": fold_batch_norm, "cle": cross_layer_equalize}


def as_deployed(model):
    """``model`` as the integer kernels will run it: paddings folded into convolutions,
    two-operator layers split, input scaling and BN folded into weights."""
    return fold_batch_norm(fold_input_scaling(split_layers(fold_zero_padding(model))))


def preprocess(model, steps=("bn_fold", "cle")):
    """``as_deployed(model)``, then CLE if "cle" is in ``steps`` ("bn_fold" always runs)."""
    steps = tuple(steps or ())
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"Unknown preprocess step(s) {unknown}; choose from {sorted(STEPS)}.")
    model = as_deployed(model)
    if "cle" in steps:
        model = cross_layer_equalize(model)
    return model


__all__ = ["as_deployed", "fold_batch_norm", "fold_input_scaling", "fold_zero_padding",
           "cross_layer_equalize", "preprocess", "split_layers", "STEPS"]
