"""Keyword spotting, 12 classes, 49x10 MFCC: the offline SYNTHETIC set, or tfds ``speech_commands``.

Offline: ``<data_dir>/kws_synth/kws_synth_mfcc.npz``, synthetic text-to-speech words with held-out
test voices (its own train 12,000 / val 2,400 / test 2,400 splits). It is NOT Speech Commands and
its accuracies are not comparable with published KWS results. Public (``download=True``):
tensorflow-datasets ``speech_commands`` through the MLPerf Tiny MFCC front end (``mfcc``), with TFDS
labels mapped by name to the class order below (TFDS orders them down, go, left, ... differently).

Preprocessing: each MFCC coefficient standardised with the training split's per-coefficient mean
and standard deviation (recorded in ``normalization``); coefficient 0 has ~14x the spread of the
others, so without this a per-tensor input quantizer would leave few levels for coefficients 1-9.
Input shape [49, 10, 1]. Training augmentation works on the features: random time shift and
stretch, a per-clip cepstral offset and scale (a crude stand-in for timbre/channel differences
between voices), SpecAugment-style time and coefficient masks, and small Gaussian noise.
"""
import os

import numpy as np

from tfq_tiny._compat import tf
from tfq_tiny.data._base import Dataset, find_data, standardize

CLASSES = ("silence", "unknown", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
PUBLIC = "tensorflow-datasets 'speech_commands' with the MLPerf Tiny MFCC front end"
SAMPLE_RATE = 16000
FRAMES, COEFFS = 49, 10


def mfcc(audio_int16):
    """MLPerf Tiny KWS MFCC features [..., 49, 10] of 1 s int16 clips [..., 16000] (see the data README).

    Shorter clips are zero-padded at the end and longer ones cut, as the reference pipeline does.
    The reference divides by the clip's maximum sample; an all-zero clip is left at zero instead
    of turning into NaN.
    """
    x = tf.cast(audio_int16, tf.float32)
    n = tf.shape(x)[-1]
    x = tf.pad(x, [[0, 0]] * (len(x.shape) - 1) + [[0, tf.maximum(SAMPLE_RATE - n, 0)]])
    x = x[..., :SAMPLE_RATE]
    peak = tf.reduce_max(x, axis=-1, keepdims=True)
    x = x / tf.where(peak > 0, peak, tf.ones_like(peak))
    stft = tf.signal.stft(x, frame_length=480, frame_step=320, fft_length=512,
                          window_fn=tf.signal.hann_window)
    mel = tf.signal.linear_to_mel_weight_matrix(40, 257, SAMPLE_RATE, 20.0, 4000.0)
    log_mel = tf.math.log(tf.tensordot(tf.abs(stft), mel, 1) + 1e-6)
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :COEFFS]


def label_map(names):
    """Array mapping label indices of a source whose class names are ``names`` to ``CLASSES``.

    Names are matched after stripping underscores (TFDS writes ``_silence_``, ``_unknown_``).
    """
    return np.array([CLASSES.index(str(n).strip("_").lower()) for n in names], np.int32)


def _read_public(data_dir):
    """Splits of tfds speech_commands as MFCC, cached in an .npz next to the TFDS data.

    Only the deterministic front end is applied; MLPerf Tiny's training pipeline also mixes in
    background noise and shifts the audio, which the feature-domain augmentation here replaces.
    """
    import tensorflow_datasets as tfds

    cache_dir = data_dir or os.path.join(os.path.expanduser("~"), ".cache", "tfq_tiny")
    cache = os.path.join(cache_dir, "kws_speech_commands_mfcc.npz")
    if os.path.exists(cache):
        with np.load(cache) as d:
            return {k: d[k] for k in d.files}
    builder = tfds.builder("speech_commands", data_dir=data_dir)
    builder.download_and_prepare()
    to_ours = label_map(builder.info.features["label"].names)
    out = {}
    for ours, theirs in (("train", "train"), ("val", "validation"), ("test", "test")):
        clips = builder.as_dataset(split=theirs).map(
            lambda ex: (mfcc(ex["audio"]), ex["label"]), num_parallel_calls=tf.data.AUTOTUNE)
        feats, labels = zip(*((x.numpy(), y.numpy()) for x, y in clips.batch(1024)))
        out[f"x_{ours}"] = np.concatenate(feats).astype(np.float32)
        out[f"y_{ours}"] = to_ours[np.concatenate(labels)].astype(np.int8)
    os.makedirs(cache_dir, exist_ok=True)
    np.savez_compressed(cache, **out)
    return out


def _augment(x):
    n = tf.shape(x)[0]
    pad = 10
    padded = tf.pad(x, [[0, 0], [pad, pad], [0, 0], [0, 0]], mode="SYMMETRIC")
    length = tf.cast(FRAMES - 1, tf.float32) * tf.random.uniform([n], 0.85, 1.15)
    centre = pad + (FRAMES - 1) / 2 + tf.random.uniform([n], -6.0, 6.0)
    span = float(FRAMES + 2 * pad - 1)
    boxes = tf.stack([(centre - length / 2) / span, tf.zeros([n]),
                      (centre + length / 2) / span, tf.ones([n])], axis=1)
    x = tf.image.crop_and_resize(padded, boxes, tf.range(n), [FRAMES, COEFFS])
    x = x * tf.random.uniform([n, 1, COEFFS, 1], 0.85, 1.15) + tf.random.normal([n, 1, COEFFS, 1], 0, 0.2)
    t = tf.range(FRAMES, dtype=tf.float32)[None, :, None, None]
    for _ in range(2):
        start = tf.random.uniform([n, 1, 1, 1], 0, FRAMES)
        width = tf.random.uniform([n, 1, 1, 1], 0, 7)
        x = tf.where((t >= start) & (t < start + width), 0.0, x)
    c = tf.range(COEFFS, dtype=tf.float32)[None, None, :, None]
    start = tf.random.uniform([n, 1, 1, 1], 0, COEFFS)
    width = tf.random.uniform([n, 1, 1, 1], 0, 3)
    x = tf.where((c >= start) & (c < start + width), 0.0, x)
    return x + tf.random.normal(tf.shape(x), 0, 0.05)


def load(data_dir=None, seed=0, download=False):
    """Keyword spotting as a ``Dataset`` (see the module docstring for the two sources)."""
    if download:
        arrays = _read_public(data_dir)
        name, source = "speech_commands", PUBLIC
        description = ("Speech Commands v2 (tensorflow-datasets), 12 classes, MLPerf Tiny MFCC "
                       "front end; labels mapped from TFDS order to ours by name.")
    else:
        path = find_data(data_dir, "kws_synth/kws_synth_mfcc.npz",
                         "synthetic KWS features kws_synth_mfcc.npz", PUBLIC)
        with np.load(path) as d:
            arrays = {k: d[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        name, source = "kws_synth", f"offline {path}"
        description = ("SYNTHETIC keyword spotting (text-to-speech words from espeak-ng/flite/festival "
                       "with synthetic noise; test voices held out from training). NOT Speech "
                       "Commands: accuracies are not comparable with published KWS results.")
    mean = arrays["x_train"].mean(axis=(0, 1))
    std = arrays["x_train"].std(axis=(0, 1))
    splits = {s: (standardize(arrays[f"x_{s}"], mean, std)[..., None], arrays[f"y_{s}"])
              for s in ("train", "val", "test")}
    return Dataset(
        name, CLASSES, description, splits, (FRAMES, COEFFS, 1),
        "MFCC [49, 10] standardised per coefficient with train-split mean/std, channel axis added",
        augment=_augment, seed=seed,
        normalization={"mean": mean.tolist(), "std": std.tolist(), "axis": "per MFCC coefficient"},
        source=source)


__all__ = ["CLASSES", "load", "mfcc", "label_map"]
