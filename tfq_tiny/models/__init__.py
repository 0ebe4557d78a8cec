"""Float model builders for the four tinyML benchmarks of the empirical study.

Every builder returns a functional tf_keras model that outputs logits (no softmax; train with
``from_logits=True``), uses only layer types the quantization pipeline supports, and names every
layer readably so bit policies and reports can refer to layers by name.

>>> from tfq_tiny import models
>>> model = models.build("res8")
"""
import os

from tfq_tiny.errors import TfqError
from tfq_tiny.models import cnn1d, ds_cnn, mobilenet_v1, res8

_BUILDERS = {
    "res8": res8.build,
    "ds_cnn": ds_cnn.build,
    "mobilenet_v1": mobilenet_v1.build,
    "cnn1d": cnn1d.build,
}

MODELS = tuple(_BUILDERS)

DATASET_OF = {
    "res8": "cifar10",
    "ds_cnn": "kws",
    "mobilenet_v1": "vww",
    "cnn1d": "har",
}
"""The dataset (name for ``tfq_tiny.data.load``) each model is trained on."""


def build(name, **kw):
    """Build model ``name`` (one of ``MODELS``); keyword arguments go to its builder."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise TfqError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
    return builder(**kw)


def checkpoint_path(name):
    """Path of the committed float checkpoint ``<name>.h5`` (its ``.json`` sits beside it)."""
    if name not in _BUILDERS:
        raise TfqError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return os.path.join(os.path.dirname(__file__), "checkpoints", f"{name}.h5")


__all__ = ["MODELS", "DATASET_OF", "build", "checkpoint_path"]
