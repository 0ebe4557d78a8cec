"""Visual wake words, 96x96x3, 2 classes: a user's person/non_person images, else a CIFAR-10 PROXY.

There is no offline person data, so by default this builds ``PROXY_NAME``: CIFAR-10 images
(same splits as ``tfq_tiny.data.cifar10`` with the same seed: 45,000 / 5,000 / 10,000) relabelled
vehicle (airplane, automobile, ship, truck) = 1 vs animal = 0 (40 % / 60 %), upsampled 32 -> 96
bilinearly on the fly (stored as 32x32 uint8; 50,000 float32 96x96 images would be 5.5 GB). It has
VWW's shapes, not its content: always report it under its proxy name.

Real VWW: pass ``image_dir`` (or put it at ``<data_dir>/vww``) holding ``person/`` and
``non_person/`` image folders (the MLPerf Tiny ``vw_coco2014_96`` layout), optionally inside
``train/``, ``val/``, ``test/``; without those, the files are split 80/10/10 per class with the seed.
Images are decoded and resized to 96x96 on the fly. Classes: non_person = 0, person = 1.

Preprocessing (both): RGB -> bilinear resize to 96x96 -> float32 / 255, inputs in [0, 1].
Training augmentation: random horizontal flip and translation by up to 12 pixels.
"""
import os

import numpy as np

from tfq_tiny._compat import tf
from tfq_tiny.data import cifar10
from tfq_tiny.data._base import Dataset, flip_and_shift, resolve_data_dir
from tfq_tiny.errors import TfqError

PROXY_NAME = "vww_proxy (CIFAR-10 vehicle vs animal)"
PROXY_CLASSES = ("animal", "vehicle")
VEHICLES = (0, 1, 8, 9)
CLASSES = ("non_person", "person")
SIZE = 96
PREPROCESSING = "RGB -> bilinear resize to 96x96 -> float32 / 255 (inputs in [0, 1])"
_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _resize(x):
    return tf.image.resize(tf.cast(x, tf.float32), [SIZE, SIZE], method="bilinear") / 255.0


def _decode(path):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return _resize(image)


def _prepare_paths(paths):
    return tf.map_fn(_decode, paths, fn_output_signature=tf.TensorSpec([SIZE, SIZE, 3], tf.float32))


def _augment(x):
    return flip_and_shift(x, 12)


def _list_images(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(_IMAGE_EXT))


def _image_splits(root, seed):
    def labelled(folder):
        files = [(p, i) for i, c in enumerate(CLASSES) for p in _list_images(os.path.join(folder, c))]
        return np.array([p for p, _ in files]), np.array([i for _, i in files], np.int32)

    if all(os.path.isdir(os.path.join(root, s, c)) for s in ("train", "val", "test") for c in CLASSES):
        return {s: labelled(os.path.join(root, s)) for s in ("train", "val", "test")}
    paths, labels = labelled(root)
    rng = np.random.default_rng(seed)
    part = np.empty(len(labels), "<U5")
    for c in range(len(CLASSES)):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_val = n_test = len(rows) // 10
        part[rows[:n_val]], part[rows[n_val:n_val + n_test]], part[rows[n_val + n_test:]] = "val", "test", "train"
    return {s: (paths[part == s], labels[part == s]) for s in ("train", "val", "test")}


def _find_image_dir(image_dir, data_dir):
    if image_dir:
        if not all(os.path.isdir(os.path.join(image_dir, c)) or os.path.isdir(os.path.join(image_dir, "train", c))
                   for c in CLASSES):
            raise TfqError(f"VWW image_dir {image_dir} must hold person/ and non_person/ folders "
                           "(optionally inside train/, val/, test/)")
        return image_dir
    root, _ = resolve_data_dir(data_dir)
    candidate = os.path.join(root, "vww")
    if any(os.path.isdir(os.path.join(candidate, *sub, "person")) for sub in ((), ("train",))):
        return candidate
    return None


def load(data_dir=None, seed=0, download=False, image_dir=None):
    """VWW (real, from an image directory) or the CIFAR-10 vehicle-vs-animal proxy, as a ``Dataset``."""
    real = None if download else _find_image_dir(image_dir, data_dir)
    if real:
        splits = _image_splits(real, seed)
        return Dataset("vww", CLASSES, f"Visual wake words (person vs non-person images in {real}).",
                       splits, (SIZE, SIZE, 3), PREPROCESSING, prepare=_prepare_paths,
                       augment=_augment, seed=seed, normalization={"scale": 1 / 255.0, "offset": 0.0},
                       source=f"image directory {real}")
    (x_tr, y_tr), (x_te, y_te), source = cifar10.read_raw(data_dir, download)
    val = cifar10.split_train_val(y_tr, seed)
    binary = lambda y: np.isin(y, VEHICLES).astype(np.int32)  # noqa: E731
    splits = {"train": (x_tr[~val], binary(y_tr[~val])), "val": (x_tr[val], binary(y_tr[val])),
              "test": (x_te, binary(y_te))}
    return Dataset(
        PROXY_NAME, PROXY_CLASSES,
        "PROXY for visual wake words, NOT person detection: CIFAR-10 (offline copy is JPEG "
        "re-encoded) relabelled vehicle (airplane, automobile, ship, truck) vs animal, 32x32 "
        "upsampled to 96x96. Only the input/output shapes match VWW.",
        splits, (SIZE, SIZE, 3), PREPROCESSING, prepare=_resize, augment=_augment, is_proxy=True,
        seed=seed, normalization={"scale": 1 / 255.0, "offset": 0.0}, source=f"CIFAR-10: {source}")
