"""CIFAR-10: the offline TFRecord JPEG shards in ``<data_dir>/cifar10``, or tfds ``cifar10``.

Splits: 45,000 train / 5,000 validation (500 per class, drawn from the official training set with
the loader seed) / the official 10,000 test images in shard order. Preprocessing: RGB uint8 / 255,
so model inputs lie in [0, 1] (no mean subtraction: the input range is then fixed and known to the
quantizer). Training augmentation: random horizontal flip and random translation by up to 4 pixels.
"""
import functools
import os

import numpy as np

from tfq_tiny._compat import tf
from tfq_tiny.data._base import Dataset, find_data, flip_and_shift, stratified_holdout

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
VAL_PER_CLASS = 500
PUBLIC = "tensorflow-datasets 'cifar10'"
PREPROCESSING = "RGB uint8 -> float32 / 255 (inputs in [0, 1]); stored as uint8"

_FEATURES = {"image": tf.io.FixedLenFeature([], tf.string),
             "label": tf.io.FixedLenFeature([], tf.int64)}


def _parse(records):
    e = tf.io.parse_example(records, _FEATURES)
    images = tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3), e["image"],
                       fn_output_signature=tf.TensorSpec([32, 32, 3], tf.uint8))
    return images, e["label"]


@functools.lru_cache(maxsize=4)
def read_shards(pattern):
    """Decoded (uint8 images, int32 labels) of the TFRecord shards matching ``pattern``, in order."""
    files = sorted(tf.io.gfile.glob(pattern))
    ds = tf.data.TFRecordDataset(files).batch(2000).map(_parse)
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    x, y = np.concatenate(xs), np.concatenate(ys).astype(np.int32)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _read_tfds(data_dir):
    import tensorflow_datasets as tfds

    train, test = tfds.load("cifar10", split=["train", "test"], batch_size=-1, as_supervised=True,
                            data_dir=data_dir, download=True)
    return tuple((np.asarray(x, np.uint8), np.asarray(y, np.int32)) for x, y in
                 (tfds.as_numpy(train), tfds.as_numpy(test)))


def read_raw(data_dir=None, download=False):
    """((x_train, y_train), (x_test, y_test), source) with uint8 32x32x3 images."""
    if download:
        return (*_read_tfds(data_dir), PUBLIC)
    root = os.path.dirname(find_data(data_dir, "cifar10/train-*.tfrecord", "CIFAR-10 TFRecord shards", PUBLIC))
    train = read_shards(f"{root}/train-*.tfrecord")
    test = read_shards(f"{root}/test-*.tfrecord")
    return train, test, f"offline TFRecord JPEG shards in {root}"


def split_train_val(y_train, seed):
    """Boolean mask of the validation rows of the official training set."""
    return stratified_holdout(y_train, VAL_PER_CLASS, seed)


def _prepare(x):
    return tf.cast(x, tf.float32) / 255.0


def _augment(x):
    return flip_and_shift(x, 4)


def load(data_dir=None, seed=0, download=False):
    """CIFAR-10 as a ``Dataset`` (see the module docstring for splits and preprocessing)."""
    (x_tr, y_tr), (x_te, y_te), source = read_raw(data_dir, download)
    val = split_train_val(y_tr, seed)
    return Dataset(
        "cifar10", CLASSES,
        "CIFAR-10 (real). Offline copy: JPEG re-encodings (quality 75) of the original images, "
        "so accuracies can differ slightly from results on the original arrays.",
        {"train": (x_tr[~val], y_tr[~val]), "val": (x_tr[val], y_tr[val]), "test": (x_te, y_te)},
        (32, 32, 3), PREPROCESSING, prepare=_prepare, augment=_augment, seed=seed,
        normalization={"scale": 1 / 255.0, "offset": 0.0}, source=source)
