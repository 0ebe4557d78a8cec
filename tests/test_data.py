"""Dataset loaders on the offline copies: split sizes, dtypes, shapes, preprocessing ranges, seeded
calibration draws disjoint from test, the missing-data error, and the public-source code paths
that can run offline (MFCC front end, TFDS label map, UCI HAR layout, VWW image folders)."""
import hashlib
import os

import numpy as np
import pytest

from tfq_tiny import data
from tfq_tiny._compat import tf
from tfq_tiny.data import har, kws, vww
from tfq_tiny.errors import TfqError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.environ.get("TFQ_DATA_DIR") or os.path.join(REPO, "..", "shared", "data")
pytestmark = pytest.mark.skipif(not os.path.isdir(DATA_DIR), reason=f"no offline data at {DATA_DIR}")

SPEC = {  # name: (train, val, test, input shape, classes)
    "cifar10": (45_000, 5_000, 10_000, (32, 32, 3), 10),
    "kws": (12_000, 2_400, 2_400, (49, 10, 1), 12),
    "vww": (45_000, 5_000, 10_000, (96, 96, 3), 2),
}


@pytest.fixture(scope="module")
def loaded():
    return {name: data.load(name, data_dir=DATA_DIR, seed=0) for name in data.DATASETS}


def _hashes(x):
    return {hashlib.sha1(np.ascontiguousarray(row).tobytes()).hexdigest() for row in x}


@pytest.mark.parametrize("name", sorted(SPEC))
def test_split_sizes_dtypes_shapes(loaded, name):
    ds = loaded[name]
    n_train, n_val, n_test, shape, n_classes = SPEC[name]
    assert (ds.size("train"), ds.size("val"), ds.size("test")) == (n_train, n_val, n_test)
    assert ds.input_shape == shape and len(ds.classes) == n_classes
    for split in data.SPLITS:
        x = ds.features(split, slice(0, 32))
        y = ds.labels(split)
        assert x.shape == (32,) + shape and x.dtype == np.float32
        assert y.dtype == np.int32 and set(np.unique(y)) == set(range(n_classes))


def test_har_splits_by_subject(loaded):
    ds = loaded["har"]
    assert ds.size("train") + ds.size("val") == 7_415 and ds.size("test") == 2_996
    assert ds.x_train.shape == (ds.size("train"), 128, 9) and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int32 and set(np.unique(ds.y_test)) == set(range(6))
    assert len(ds.val_subjects) == har.VAL_SUBJECTS
    assert set(ds.subjects["val"]) == set(ds.val_subjects)
    assert not set(ds.subjects["train"]) & set(ds.subjects["val"])
    assert not set(ds.subjects["train"]) & set(ds.subjects["test"])
    assert abs(float(np.concatenate([ds.x_train, ds.x_val]).mean())) < 1e-3
    other = data.load("har", data_dir=DATA_DIR, seed=1)
    assert set(other.val_subjects) != set(ds.val_subjects)


def test_image_inputs_in_unit_range(loaded):
    for name in ("cifar10", "vww"):
        x = loaded[name].features("train", slice(0, 64))
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9


def test_kws_is_labelled_synthetic_and_standardised(loaded):
    ds = loaded["kws"]
    assert "SYNTHETIC" in ds.description and ds.name == "kws_synth"
    assert np.allclose(ds.x_train.mean(axis=(0, 1, 3)), 0, atol=1e-3)
    assert np.allclose(ds.x_train.std(axis=(0, 1, 3)), 1, atol=1e-3)


def test_vww_is_a_named_proxy(loaded):
    ds = loaded["vww"]
    assert ds.is_proxy and ds.name == "vww_proxy (CIFAR-10 vehicle vs animal)"
    assert "PROXY" in ds.description and ds.info()["is_proxy"]
    cifar = loaded["cifar10"]
    np.testing.assert_array_equal(ds.y_test, np.isin(cifar.y_test, vww.VEHICLES))
    np.testing.assert_array_equal(ds.y_val, np.isin(cifar.y_val, vww.VEHICLES))
    assert int(ds.y_train.sum()) == 18_000


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_calibration_seeded_and_disjoint_from_test(loaded, name):
    ds = loaded[name]
    a = ds.calibration(1024, seed=3)
    assert a.shape == (1024,) + ds.input_shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, ds.calibration(1024, seed=3))
    assert not np.array_equal(a, ds.calibration(1024, seed=4))
    idx = ds.calibration_indices(1024, seed=3)
    assert len(set(idx.tolist())) == 1024
    np.testing.assert_array_equal(a[:8], ds.features("train", idx[:8]))
    if name == "vww":
        assert not _hashes(a) & _hashes(ds.features("test", slice(0, 2000)))
    else:
        assert not _hashes(a) & _hashes(ds.features("test"))
    np.testing.assert_array_equal(ds.calibration(16), ds.calibration(16, seed=ds.seed))
    with pytest.raises(TfqError):
        ds.calibration(ds.size("train") + 1)


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_tf_dataset_batches_and_augmentation(loaded, name):
    ds = loaded[name]
    x, y = next(iter(ds.tf_dataset("train", 16, shuffle=True, augment=True, seed=0)))
    assert tuple(x.shape) == (16,) + ds.input_shape and x.dtype == tf.float32
    assert y.dtype == tf.int32 and bool(tf.reduce_all(tf.math.is_finite(x)))
    plain, _ = next(iter(ds.tf_dataset("test", 16)))
    np.testing.assert_allclose(plain.numpy(), ds.features("test", slice(0, 16)), atol=1e-6)
    augmented = ds.augment(plain)
    assert augmented.shape == plain.shape and not np.allclose(augmented, plain)


def test_validation_split_follows_seed():
    a = data.load("cifar10", data_dir=DATA_DIR, seed=0)
    b = data.load("cifar10", data_dir=DATA_DIR, seed=0)
    c = data.load("cifar10", data_dir=DATA_DIR, seed=1)
    np.testing.assert_array_equal(a.features("val", slice(0, 50)), b.features("val", slice(0, 50)))
    assert not np.array_equal(a.features("val", slice(0, 50)), c.features("val", slice(0, 50)))
    assert np.all(np.bincount(a.y_val) == 500)


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_missing_data_dir_names_both_remedies(tmp_path, monkeypatch, name):
    monkeypatch.delenv("TFQ_DATA_DIR", raising=False)
    for where in (str(tmp_path / "absent"), str(tmp_path)):
        with pytest.raises(TfqError) as err:
            data.load(name, data_dir=where)
        message = str(err.value)
        assert "TFQ_DATA_DIR" in message and "--data_dir" in message and "--download" in message
    monkeypatch.setenv("TFQ_DATA_DIR", str(tmp_path / "absent"))
    with pytest.raises(TfqError, match="TFQ_DATA_DIR"):
        data.load(name)


def test_data_dir_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("TFQ_DATA_DIR", str(tmp_path))
    assert data.resolve_data_dir("/x/y")[0] == "/x/y"
    assert data.resolve_data_dir()[0] == str(tmp_path)
    monkeypatch.delenv("TFQ_DATA_DIR")
    assert data.resolve_data_dir()[0] == data.DEFAULT_DATA_DIR
    assert data.DEFAULT_DATA_DIR == os.path.normpath(os.path.join(REPO, "..", "shared", "data"))


def test_unknown_dataset():
    with pytest.raises(TfqError, match="unknown dataset"):
        data.load("imagenet")


def test_mfcc_front_end_reproduces_offline_features():
    with np.load(os.path.join(DATA_DIR, "kws_synth", "examples.npz")) as ex:
        audio, mfcc = ex["audio"], ex["mfcc"]
    np.testing.assert_allclose(kws.mfcc(audio).numpy(), mfcc, atol=1e-4)
    short = kws.mfcc(audio[:1, :12_000]).numpy()
    assert short.shape == (1, 49, 10) and np.isfinite(short).all()
    assert np.isfinite(kws.mfcc(np.zeros((1, 16_000), np.int16)).numpy()).all()


def test_tfds_speech_commands_label_map():
    tfds_order = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes",
                  "_silence_", "_unknown_"]
    mapped = kws.label_map(tfds_order)
    assert [kws.CLASSES[i] for i in mapped] == [n.strip("_") for n in tfds_order]
    assert sorted(mapped.tolist()) == list(range(12))


def test_uci_har_official_layout(tmp_path):
    with np.load(os.path.join(DATA_DIR, "uci_har", "uci_har_raw.npz")) as d:
        raw = {k: d[k] for k in ("x_train", "y_train", "subject_train", "x_test", "y_test", "subject_test")}
    root = tmp_path / "UCI HAR Dataset"
    picks = {"train": np.flatnonzero(np.isin(raw["subject_train"], [1, 3, 5, 6, 7]))[::20],
             "test": np.arange(0, 2996, 60)}
    for split, rows in picks.items():
        (root / split / "Inertial Signals").mkdir(parents=True)
        for c, channel in enumerate(har.CHANNELS):
            np.savetxt(root / split / "Inertial Signals" / f"{channel}_{split}.txt",
                       raw[f"x_{split}"][rows, :, c], fmt="%.9e")
        np.savetxt(root / split / f"y_{split}.txt", raw[f"y_{split}"][rows] + 1, fmt="%d")
        np.savetxt(root / split / f"subject_{split}.txt", raw[f"subject_{split}"][rows], fmt="%d")
    arrays = har.read_uci_layout(str(root))
    np.testing.assert_allclose(arrays["x_train"], raw["x_train"][picks["train"]], rtol=1e-6)
    np.testing.assert_array_equal(arrays["y_test"], raw["y_test"][picks["test"]])
    ds = data.load("har", data_dir=str(tmp_path))
    assert "official UCI-HAR" in ds.description
    assert ds.size("train") + ds.size("val") == len(picks["train"]) and ds.size("test") == len(picks["test"])
    assert ds.x_test.shape == (len(picks["test"]), 128, 9)


def test_vww_person_image_directory(tmp_path):
    rng = np.random.default_rng(0)
    for c, cls in enumerate(vww.CLASSES):
        (tmp_path / cls).mkdir()
        for i in range(10):
            image = rng.integers(0, 256, size=(40 + i, 50, 3), dtype=np.uint8)
            tf.io.write_file(str(tmp_path / cls / f"{i}.png"), tf.io.encode_png(image))
    ds = data.load("vww", image_dir=str(tmp_path), seed=0)
    assert ds.name == "vww" and not ds.is_proxy
    assert (ds.size("train"), ds.size("val"), ds.size("test")) == (16, 2, 2)
    x = ds.features("train")
    assert x.shape == (16, 96, 96, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert ds.calibration(4, seed=1).shape == (4, 96, 96, 3)
    with pytest.raises(TfqError, match="person"):
        data.load("vww", image_dir=str(tmp_path / "person"))
