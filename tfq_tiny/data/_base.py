"""The one dataset interface every loader returns, and where the data lives.

A ``Dataset`` keeps each split in a compact *storage* form (uint8 images, standardised float32
features, or image file paths) and turns it into model-ready float32 on demand, so a 96x96 VWW
proxy never has to sit in memory as 5 GB of floats. ``x_train``/``x_val``/``x_test`` materialise a
whole split (cached); ``features(split, index)`` and ``tf_dataset(split, ...)`` work on parts.
"""
import os

import numpy as np

from tfq_tiny._compat import tf
from tfq_tiny.errors import TfqError

SPLITS = ("train", "val", "test")

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA_DIR = os.path.normpath(os.path.join(_REPO_ROOT, "..", "shared", "data"))


def resolve_data_dir(data_dir=None):
    """The data directory: explicit argument, else env ``TFQ_DATA_DIR``, else ../shared/data."""
    if data_dir:
        return os.path.abspath(os.path.expanduser(data_dir)), "argument"
    if os.environ.get("TFQ_DATA_DIR"):
        return os.path.abspath(os.path.expanduser(os.environ["TFQ_DATA_DIR"])), "TFQ_DATA_DIR"
    return DEFAULT_DATA_DIR, "default ../shared/data"


def missing_data_error(what, path, public):
    """The error for absent offline data: names both ways to get it."""
    return TfqError(
        f"{what} not found at {path}. Either point TFQ_DATA_DIR (or --data_dir / data_dir=) at a "
        f"directory holding the offline copy (see the data README), or fetch the public source "
        f"({public}) with --download (download=True; needs internet)."
    )


def find_data(data_dir, relative, what, public):
    """Absolute path of ``relative`` inside the resolved data directory, or the missing-data error."""
    root, how = resolve_data_dir(data_dir)
    if not os.path.isdir(root):
        raise missing_data_error(f"data directory ({how})", root, public)
    path = os.path.join(root, relative)
    if not (os.path.exists(path) or tf.io.gfile.glob(path)):
        raise missing_data_error(what, path, public)
    return path


class Dataset:
    """Train / validation / test splits of one benchmark plus a seeded calibration draw.

    Attributes: ``name`` (as it must appear in reports), ``classes`` (names in label order),
    ``description`` (what the data is, with caveats), ``is_proxy``, ``input_shape`` (one example,
    as the model sees it), ``preprocessing`` (how storage becomes model input; quantization ranges
    depend on it), ``normalization`` (the constants used), ``seed`` (of the validation split and the
    default calibration draw). Labels are int32 class indices.
    """

    def __init__(self, name, classes, description, splits, input_shape, preprocessing, *,
                 prepare=None, augment=None, is_proxy=False, seed=0, normalization=None,
                 source=""):
        self.name = name
        self.classes = tuple(str(c) for c in classes)
        self.description = description
        self.is_proxy = bool(is_proxy)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.preprocessing = preprocessing
        self.normalization = dict(normalization or {})
        self.seed = int(seed)
        self.source = source
        self._storage = {s: x for s, (x, _) in splits.items()}
        self._labels = {s: np.asarray(y, dtype=np.int32) for s, (_, y) in splits.items()}
        self._prepare = prepare
        self._augment = augment
        self._cache = {}

    def __repr__(self):
        sizes = ", ".join(f"{s}={self.size(s)}" for s in SPLITS)
        return f"Dataset({self.name!r}, {sizes}, input_shape={self.input_shape})"

    def size(self, split):
        """Number of examples in ``split``."""
        return len(self._labels[self._check(split)])

    def _check(self, split):
        if split not in SPLITS:
            raise TfqError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return split

    def prepare(self, storage):
        """Model-ready float32 tensor from a batch of storage values (the documented preprocessing)."""
        if self._prepare is None:
            return tf.convert_to_tensor(storage, tf.float32)
        return self._prepare(tf.convert_to_tensor(storage))

    def features(self, split, index=None, batch_size=1024):
        """Model-ready float32 array of ``split`` (or of the rows ``index`` selects, in that order)."""
        stored = self._storage[self._check(split)]
        rows = stored if index is None else stored[index]
        if self._prepare is None:
            return np.asarray(rows, dtype=np.float32)
        out = [self.prepare(rows[i:i + batch_size]).numpy() for i in range(0, len(rows), batch_size)]
        if not out:
            return np.zeros((0,) + self.input_shape, np.float32)
        return np.concatenate(out)

    def labels(self, split, index=None):
        """Int32 labels of ``split`` (or of the rows ``index`` selects)."""
        y = self._labels[self._check(split)]
        return y if index is None else y[index]

    def _split_features(self, split):
        if split not in self._cache:
            self._cache[split] = self.features(split)
        return self._cache[split]

    x_train = property(lambda self: self._split_features("train"), doc="Model-ready train inputs (cached).")
    x_val = property(lambda self: self._split_features("val"), doc="Model-ready validation inputs (cached).")
    x_test = property(lambda self: self._split_features("test"), doc="Model-ready test inputs (cached).")
    y_train = property(lambda self: self._labels["train"])
    y_val = property(lambda self: self._labels["val"])
    y_test = property(lambda self: self._labels["test"])

    def calibration_indices(self, n=1024, seed=None):
        """Rows of the train split drawn without replacement by ``numpy.random.default_rng(seed)``."""
        seed = self.seed if seed is None else seed
        total = self.size("train")
        if not 0 < n <= total:
            raise TfqError(f"calibration size must be in 1..{total} (the train split), got {n}")
        return np.random.default_rng(seed).choice(total, size=n, replace=False)

    def calibration(self, n=1024, seed=None):
        """``n`` unlabeled, model-ready training examples drawn with ``seed`` (default: the dataset's).

        Drawn from the train split only, so disjoint from the validation and test splits; the same
        ``(n, seed)`` gives the same examples in the same order.
        """
        return self.features("train", self.calibration_indices(n, seed))

    def augment(self, x):
        """Random training augmentation of a model-ready batch (identity if the dataset has none)."""
        return x if self._augment is None else self._augment(x)

    def tf_dataset(self, split, batch_size, shuffle=False, augment=False, seed=None,
                   drop_remainder=False):
        """A ``tf.data.Dataset`` of (model-ready float32 batch, int32 labels) read from storage.

        Shuffling, preprocessing and augmentation happen per batch on the fly, so memory holds only
        the compact storage form of the split.
        """
        stored, y = self._storage[self._check(split)], self._labels[split]
        ds = tf.data.Dataset.from_tensor_slices((stored, y))
        if shuffle:
            seed = self.seed if seed is None else seed
            ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if self._prepare is not None:
            ds = ds.map(lambda x, t: (self._prepare(x), t), num_parallel_calls=tf.data.AUTOTUNE)
        if augment and self._augment is not None:
            ds = ds.map(lambda x, t: (self._augment(x), t), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def info(self):
        """JSON-ready summary: name, proxy flag, description, sizes, preprocessing, normalization."""
        return {
            "name": self.name,
            "is_proxy": self.is_proxy,
            "description": self.description,
            "source": self.source,
            "classes": list(self.classes),
            "sizes": {s: self.size(s) for s in SPLITS},
            "input_shape": list(self.input_shape),
            "preprocessing": self.preprocessing,
            "normalization": self.normalization,
            "split_seed": self.seed,
        }


def stratified_holdout(labels, per_class, seed):
    """Boolean mask choosing ``per_class`` examples of every class with ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        mask[rng.choice(rows, size=min(per_class, len(rows)), replace=False)] = True
    return mask


def standardize(x, mean, std):
    """``(x - mean) / std`` in float32."""
    return ((np.asarray(x, np.float32) - mean) / std).astype(np.float32)


def flip_and_shift(x, pad):
    """Random horizontal flip and random translation by up to ``pad`` pixels (zero fill), per image.

    Vectorised over the batch: the crop of the zero-padded batch is taken with ``crop_and_resize``
    at integer offsets, which samples pixels exactly.
    """
    shape = tf.shape(x)
    n, h, w = shape[0], shape[1], shape[2]
    flip = tf.random.uniform([n, 1, 1, 1]) < 0.5
    x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    ph = tf.cast(h + 2 * pad - 1, tf.float32)
    pw = tf.cast(w + 2 * pad - 1, tf.float32)
    dy = tf.cast(tf.random.uniform([n], 0, 2 * pad + 1, tf.int32), tf.float32)
    dx = tf.cast(tf.random.uniform([n], 0, 2 * pad + 1, tf.int32), tf.float32)
    hf, wf = tf.cast(h - 1, tf.float32), tf.cast(w - 1, tf.float32)
    boxes = tf.stack([dy / ph, dx / pw, (dy + hf) / ph, (dx + wf) / pw], axis=1)
    return tf.image.crop_and_resize(padded, boxes, tf.range(n), tf.stack([h, w]))
