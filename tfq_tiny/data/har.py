"""Human activity recognition, UCI-HAR windows (128 samples x 9 channels, 6 activities).

Offline: ``<data_dir>/uci_har/uci_har_raw.npz`` (windows re-derived from the HAPT raw recordings;
see the data README). Public: the official UCI HAR zip layout, ``UCI HAR Dataset/{train,test}/
Inertial Signals/<channel>_<split>.txt`` with ``y_<split>.txt`` and ``subject_<split>.txt``, found
when ``data_dir`` is (or contains) that directory, or downloaded with ``download=True``.

Splits: the official subject split for test; validation = ``VAL_SUBJECTS`` of the 21 training
subjects chosen with the loader seed (adjacent windows overlap by 50 %, so a random-window split
would leak). Preprocessing: each channel standardised with the mean/std of all training-subject
windows (before the validation split, so the constants do not depend on the seed). Training
augmentation: per-window channel scaling by U(0.9, 1.1) and Gaussian noise (std 0.05).
"""
import os
import zipfile

import numpy as np

from tfq_tiny._compat import keras, tf
from tfq_tiny.data._base import Dataset, missing_data_error, resolve_data_dir, standardize

CLASSES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")
CHANNELS = ("body_acc_x", "body_acc_y", "body_acc_z", "body_gyro_x", "body_gyro_y", "body_gyro_z",
            "total_acc_x", "total_acc_y", "total_acc_z")
VAL_SUBJECTS = 4
UCI_URL = "https://archive.ics.uci.edu/static/public/240/human+activity+recognition+using+smartphones.zip"
PUBLIC = f"the official UCI HAR zip ({UCI_URL})"
LAYOUT = "UCI HAR Dataset"


def read_uci_layout(root):
    """Arrays (x_train, y_train, subject_train, x_test, ...) from the official UCI HAR directory."""
    out = {}
    for split in ("train", "test"):
        signals = [np.loadtxt(os.path.join(root, split, "Inertial Signals", f"{c}_{split}.txt"),
                              dtype=np.float32, ndmin=2) for c in CHANNELS]
        out[f"x_{split}"] = np.stack(signals, axis=-1)
        out[f"y_{split}"] = np.loadtxt(os.path.join(root, split, f"y_{split}.txt"), dtype=np.int64, ndmin=1) - 1
        out[f"subject_{split}"] = np.loadtxt(os.path.join(root, split, f"subject_{split}.txt"),
                                             dtype=np.int64, ndmin=1)
    return out


def _find_layout(root):
    for candidate in (root, os.path.join(root, LAYOUT), os.path.join(root, "uci_har", LAYOUT)):
        if os.path.isdir(os.path.join(candidate, "train", "Inertial Signals")):
            return candidate
    return None


def _download(data_dir):
    cache_dir = data_dir or os.path.join(os.path.expanduser("~"), ".cache", "tfq_tiny")
    os.makedirs(cache_dir, exist_ok=True)
    if _find_layout(cache_dir):
        return _find_layout(cache_dir)
    archive = keras.utils.get_file("uci_har.zip", UCI_URL, cache_dir=cache_dir, cache_subdir=".")
    with zipfile.ZipFile(archive) as z:
        z.extractall(cache_dir)
    inner = os.path.join(cache_dir, f"{LAYOUT}.zip")
    if os.path.exists(inner):
        with zipfile.ZipFile(inner) as z:
            z.extractall(cache_dir)
    return _find_layout(cache_dir)


def read_raw(data_dir=None, download=False):
    """(arrays, source): the offline npz if present, else the official layout, else the error."""
    if download:
        layout = _download(data_dir)
        return read_uci_layout(layout), f"official UCI HAR download in {layout}"
    root, how = resolve_data_dir(data_dir)
    if not os.path.isdir(root):
        raise missing_data_error(f"data directory ({how})", root, PUBLIC)
    npz = os.path.join(root, "uci_har", "uci_har_raw.npz")
    if os.path.exists(npz):
        with np.load(npz) as d:
            return {k: d[k] for k in d.files}, f"offline {npz} (re-derived from HAPT raw data)"
    layout = _find_layout(root)
    if layout:
        return read_uci_layout(layout), f"official UCI HAR layout in {layout}"
    raise missing_data_error(f"UCI-HAR data (uci_har/uci_har_raw.npz or '{LAYOUT}/')", root, PUBLIC)


def val_subjects(subjects, seed):
    """The training subjects held out for validation, chosen with ``default_rng(seed)``."""
    return np.sort(np.random.default_rng(seed).choice(np.unique(subjects), VAL_SUBJECTS, replace=False))


def _augment(x):
    n = tf.shape(x)[0]
    x = x * tf.random.uniform([n, 1, len(CHANNELS)], 0.9, 1.1)
    return x + tf.random.normal(tf.shape(x), 0, 0.05)


def load(data_dir=None, seed=0, download=False):
    """UCI-HAR as a ``Dataset`` (see the module docstring for splits and preprocessing)."""
    a, source = read_raw(data_dir, download)
    mean, std = a["x_train"].mean(axis=(0, 1)), a["x_train"].std(axis=(0, 1))
    held = val_subjects(a["subject_train"], seed)
    val = np.isin(a["subject_train"], held)
    x_train = standardize(a["x_train"], mean, std)
    splits = {"train": (x_train[~val], a["y_train"][~val]),
              "val": (x_train[val], a["y_train"][val]),
              "test": (standardize(a["x_test"], mean, std), a["y_test"])}
    offline = "offline" in source
    description = ("UCI-HAR-style windows (real), " + (
        "re-derived from the HAPT raw recordings: close to, but not strictly comparable with, "
        "the official UCI-HAR windows." if offline else "official UCI-HAR Inertial Signals."
    ) + f" Validation subjects {held.tolist()}.")
    ds = Dataset("uci_har", CLASSES, description, splits, (128, len(CHANNELS)),
                 "9 inertial channels standardised per channel with all-training-subject mean/std",
                 augment=_augment, seed=seed,
                 normalization={"mean": mean.tolist(), "std": std.tolist(), "axis": "per channel",
                                "channels": list(CHANNELS)},
                 source=source)
    ds.val_subjects = held
    ds.subjects = {"train": a["subject_train"][~val], "val": a["subject_train"][val],
                   "test": a["subject_test"]}
    return ds
