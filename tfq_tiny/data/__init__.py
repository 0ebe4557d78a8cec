"""Dataset loaders with one interface: ``load(name, data_dir=None, seed=0) -> Dataset``.

Names: ``cifar10``, ``kws`` (offline: SYNTHETIC keyword spotting), ``vww`` (offline: a CIFAR-10
PROXY), ``har`` (UCI-HAR). The data directory is the ``data_dir`` argument, else env
``TFQ_DATA_DIR``, else ``../shared/data`` next to the repository; ``download=True`` uses the public
sources instead. Each module's docstring states its splits, preprocessing and augmentation.

>>> from tfq_tiny import data
>>> ds = data.load("har")
>>> ds.x_train.shape, ds.calibration(1024, seed=0).shape
"""
from tfq_tiny.data import cifar10, har, kws, vww
from tfq_tiny.data._base import DEFAULT_DATA_DIR, SPLITS, Dataset, resolve_data_dir
from tfq_tiny.errors import TfqError

_LOADERS = {"cifar10": cifar10.load, "kws": kws.load, "vww": vww.load, "har": har.load}
DATASETS = tuple(_LOADERS)


def load(name, data_dir=None, seed=0, download=False, **kw):
    """Load dataset ``name`` (one of ``DATASETS``); ``seed`` fixes the validation split and the
    default calibration draw; extra keywords go to the loader (e.g. ``image_dir`` for ``vww``)."""
    try:
        loader = _LOADERS[name]
    except KeyError:
        raise TfqError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None
    return loader(data_dir=data_dir, seed=seed, download=download, **kw)


__all__ = ["DATASETS", "DEFAULT_DATA_DIR", "SPLITS", "Dataset", "load", "resolve_data_dir"]
