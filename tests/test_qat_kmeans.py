"""QAT fine-tuning (resumable, exportable), the QAT reward of the search, k-means weights."""
import numpy as np
import pytest

import tfq_tiny
from tfq_tiny._compat import keras, tf
from tfq_tiny.errors import TfqError
from tfq_tiny.qat import FinetuneError, FineTuner, finetune
from tfq_tiny.quantization import WeightQuantizer
from tfq_tiny.quantization.calibration import (QuantizeWrapper, input_activation_slot,
                                               quantizer_slots, snap_biases)
from tfq_tiny.quantization.kmeans import (KMeansQuantizer, KMeansWeightQuantizeConfig,
                                          kmeans_flash, kmeans_quantize_model, kmeans_scope)
from tfq_tiny.search import memory
from tfq_tiny.search.proxy import QATProxyEvaluator


def _teacher_labels(model, x):
    return np.argmax(model.predict(x, verbose=0), -1)


def _loss(qmodel, x, y):
    return float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, qmodel(x)))


def test_finetune_lowers_training_loss_and_keeps_the_model_exportable(small_cnn, images):
    from tfq_tiny.export import to_tflite

    y = _teacher_labels(small_cnn, images)
    qmodel = tfq_tiny.quantize_model(small_cnn, "w2a8", images)
    before = _loss(qmodel, images, y)
    tuner = FineTuner(epochs=3, lr=1e-3, batch_size=16, progress=False)
    assert tuner.run(qmodel, (images, y)) is qmodel
    assert _loss(qmodel, images, y) < before
    assert [r["epoch"] for r in tuner.history] == [1, 2, 3]
    slots = quantizer_slots(qmodel)
    for slot in slots:
        assert np.all(slot.variables["scale"].numpy() > 0)
        zero_point = slot.variables["zero_point"].numpy()
        np.testing.assert_array_equal(zero_point, np.round(zero_point))
    tied = [s for s in slots if s.kind == "output" and s.quantizer.tie_to_input]
    assert tied, "8-bit average pools keep their input's grid"
    for slot in tied:
        source = input_activation_slot(slot.layer, slots)
        for name in ("scale", "zero_point"):
            np.testing.assert_array_equal(slot.variables[name].numpy(),
                                          source.variables[name].numpy())
    with_bias = [layer.layer for layer in qmodel.layers
                 if isinstance(layer, QuantizeWrapper) and getattr(layer.layer, "use_bias", False)]
    biases = [layer.bias.numpy() for layer in with_bias]
    snap_biases(qmodel)  # finetune snapped them already: snapping again changes nothing
    for value, layer in zip(biases, with_bias):
        np.testing.assert_array_equal(value, layer.bias.numpy())
    assert len(to_tflite(qmodel)) > 0


class _StopAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


def test_resume_after_interruption_equals_an_uninterrupted_run(small_conv1d, signals, tmp_path):
    y = _teacher_labels(small_conv1d, signals)
    settings = dict(epochs=2, lr=1e-3, batch_size=16, progress=False, seed=5)

    full = tfq_tiny.quantize_model(small_conv1d, "w4a4", signals)
    finetune(full, (signals, y), checkpoint_dir=str(tmp_path / "full"), **settings)

    cut = tfq_tiny.quantize_model(small_conv1d, "w4a4", signals)
    with pytest.raises(KeyboardInterrupt):
        finetune(cut, (signals, y), checkpoint_dir=str(tmp_path / "cut"),
                 callbacks=[_StopAt(1, 2)], **settings)
    resumed = tfq_tiny.quantize_model(small_conv1d, "w4a4", signals)
    tuner = FineTuner(checkpoint_dir=str(tmp_path / "cut"), **settings)
    tuner.run(resumed, (signals, y))
    assert [r["epoch"] for r in tuner.history] == [1, 2]
    # the epoch restored from the checkpoint keeps the wall time it took before the cut
    assert all(r["epoch_seconds"] > 0 for r in tuner.history)
    for a, b in zip(full.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)

    with pytest.warns(UserWarning, match="another model, data or settings"):
        finetune(full, (signals, y), checkpoint_dir=str(tmp_path / "cut"),
                 **{**settings, "epochs": 1, "lr": 2e-3})


def _with_dropout(model):
    """``model`` with a Dropout layer in front of its classifier."""
    layers = keras.layers
    i = keras.Input(model.input_shape[1:], name="signal")
    x = i
    for layer in model.layers[1:-1]:
        x = layer(x)
    x = layers.Dropout(0.5, name="drop")(x)
    return keras.Model(i, model.layers[-1](x))


def test_dropout_trains_in_training_mode_and_still_resumes_exactly(small_conv1d, signals,
                                                                 tmp_path):
    """Dropout is active during QAT (the weights differ from an inference-mode run), yet its
    masks come from (seed, epoch): two runs agree, and so does a run cut and resumed."""
    model = _with_dropout(small_conv1d)
    y = _teacher_labels(model, signals)
    settings = dict(epochs=2, lr=1e-3, batch_size=16, progress=False, seed=3)

    def run(**kwargs):
        qmodel = tfq_tiny.quantize_model(model, "w4a8", signals)
        tuner = FineTuner(**{**settings, **kwargs})
        tuner.run(qmodel, (signals, y))
        return qmodel.get_weights(), tuner

    full, tuner = run(checkpoint_dir=str(tmp_path / "full"))
    assert tuner.dropout_layers == 1
    again, _ = run()
    inference, off = run(dropout=False)
    assert off.dropout_layers == 0
    assert not all(np.array_equal(a, b) for a, b in zip(full, inference))
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint_dir=str(tmp_path / "cut"), callbacks=[_StopAt(1, 2)])
    resumed, _ = run(checkpoint_dir=str(tmp_path / "cut"))
    for a, b, c in zip(full, again, resumed):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_restore_best_keeps_the_start_when_training_hurts_validation(small_conv1d, signals,
                                                                    tmp_path):
    """Training on wrong labels lowers the accuracy on the true ones; restore_best ends where
    the run began (epoch 0), also when the run was cut and resumed from its checkpoint."""
    from tfq_tiny.qat.finetune import finalize_qparams

    y = _teacher_labels(small_conv1d, signals)
    wrong = ((signals, (y + 1) % 3))
    settings = dict(epochs=2, lr=1e-2, batch_size=16, progress=False,
                    validation_data=(signals, y))
    start = finalize_qparams(tfq_tiny.quantize_model(small_conv1d, "w8a8", signals))
    plain = tfq_tiny.quantize_model(small_conv1d, "w8a8", signals)
    FineTuner(**settings).run(plain, wrong)
    assert not all(np.array_equal(a, b) for a, b in zip(start.get_weights(), plain.get_weights()))
    kept = tfq_tiny.quantize_model(small_conv1d, "w8a8", signals)
    tuner = FineTuner(restore_best=True, **settings)
    tuner.run(kept, wrong)
    assert tuner.restored_epoch == 0
    for a, b in zip(start.get_weights(), kept.get_weights()):
        np.testing.assert_array_equal(a, b)
    cut = tfq_tiny.quantize_model(small_conv1d, "w8a8", signals)
    with pytest.raises(KeyboardInterrupt):
        FineTuner(restore_best=True, checkpoint_dir=str(tmp_path), callbacks=[_StopAt(1, 1)],
                  **settings).run(cut, wrong)
    resumed = tfq_tiny.quantize_model(small_conv1d, "w8a8", signals)
    tuner = FineTuner(restore_best=True, checkpoint_dir=str(tmp_path), **settings)
    tuner.run(resumed, wrong)
    assert tuner.restored_epoch == 0
    for a, b in zip(start.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FinetuneError, match="validation_data"):
        FineTuner(1, restore_best=True)


def test_bad_inputs_raise_clean_errors(small_conv1d, signals):
    y = _teacher_labels(small_conv1d, signals)
    with pytest.raises(FinetuneError, match="no quantizers"):
        finetune(small_conv1d, (signals, y), 1, progress=False)
    qmodel = tfq_tiny.quantize_model(small_conv1d, "w8a8", signals)
    bad = [((signals, y[:10]), "labels have shape"),
           ((signals, np.zeros((len(y), 2))), "labels have shape"),
           ((signals, y + 3), r"integer classes in \[0, 3\)"),
           ((signals[:, :5], y), "the model expects"),
           ((signals,), "pair"),
           (None, "required")]
    for data, message in bad:
        with pytest.raises(FinetuneError, match=message):
            finetune(qmodel, data, 1, progress=False)
    for kwargs in ({"epochs": 0}, {"epochs": 1, "lr": -1.0}, {"epochs": 1, "batch_size": 0}):
        with pytest.raises(FinetuneError):
            finetune(qmodel, (signals, y), progress=False, **kwargs)
    assert issubclass(FinetuneError, TfqError)
    one_hot = tf.data.Dataset.from_tensor_slices((signals[:16], np.eye(3)[y[:16]])).batch(8)
    tuner = FineTuner(1, progress=False, validation_data=(signals[16:24], y[16:24]))
    tuner.run(qmodel, one_hot)
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(tuner.history[0])


def test_qat_reward_is_an_accuracy_and_deterministic(small_conv1d, signals):
    y = _teacher_labels(small_conv1d, signals)
    evaluator = QATProxyEvaluator(small_conv1d, signals[:32], signals[32:], y[32:],
                                  train_data=(signals[:32], y[:32]), finetune_batch_size=16)
    policy = tfq_tiny.BitPolicy.uniform(2, 4)
    score = evaluator.accuracy(policy)
    assert 0.0 <= score <= 100.0
    assert evaluator.accuracy(policy) == score


@pytest.mark.parametrize("bits", [2, 4])
def test_kmeans_beats_uniform_weight_mse_on_a_gaussian_tensor(bits):
    from tfq_tiny.quantization.range_init import weight_qparams

    w = tf.constant(np.random.default_rng(7).normal(size=(3, 3, 16, 32)), tf.float32)
    holder = keras.layers.Dense(1)
    kmeans = KMeansQuantizer(bits)
    k_vars = kmeans.build(w.shape, "k", holder)
    kmeans.fit(w.numpy(), k_vars)
    k_out = kmeans(w, False, k_vars).numpy()
    assert len(np.unique(k_out)) <= 2 ** bits
    # One codebook per tensor against one uniform grid per tensor (the same granularity; a
    # grid per output channel fits each channel's 144 samples and is no longer like for like).
    uniform = WeightQuantizer(bits, channel_axes=())
    u_vars = uniform.build(w.shape, "u", holder)
    scale, _ = weight_qparams(w.numpy(), bits, "mse", uniform.channel_axes)
    u_vars["scale"].assign(scale.astype(np.float32))
    u_out = uniform(w, False, u_vars).numpy()
    assert np.mean((k_out - w) ** 2) < np.mean((u_out - w) ** 2)


def test_kmeans_model_has_few_values_round_trips_and_refuses_export(small_cnn, images, tmp_path):
    from tfq_tiny.export import ExportError, to_tflite

    qmodel = kmeans_quantize_model(small_cnn, "w2a8", images)
    uniform = tfq_tiny.quantize_model(small_cnn, "w2a8", images)
    weight_slots = [s for s in quantizer_slots(qmodel) if s.kind == "weight"]
    assert len(weight_slots) == 4
    for slot in weight_slots:
        assert isinstance(slot.quantizer, KMeansQuantizer)
        values = slot.quantizer(slot.weight, False, slot.variables).numpy()
        assert len(np.unique(values)) <= 4
    activations = {(s.kind, s.layer_name): s.variables["scale"].numpy()
                   for s in quantizer_slots(uniform) if s.kind != "weight"}
    for slot in quantizer_slots(qmodel):
        if slot.kind != "weight":
            np.testing.assert_array_equal(slot.variables["scale"].numpy(),
                                          activations[(slot.kind, slot.layer_name)])
    quantizer = weight_slots[0].quantizer
    assert KMeansQuantizer.from_config(quantizer.get_config()) == quantizer
    config = weight_slots[0].layer.quantize_config
    assert KMeansWeightQuantizeConfig.from_config(config.get_config()) == config
    path = str(tmp_path / "kmeans.h5")
    qmodel.save(path)
    with kmeans_scope():
        loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(images[:4]).numpy(), qmodel(images[:4]).numpy())
    with pytest.raises(ExportError, match="simulation only"):
        to_tflite(qmodel)
    with pytest.raises(FinetuneError, match="k-means"):
        finetune(qmodel, (images, np.zeros(len(images), int)), 1, progress=False)


def test_kmeans_flash_counts_indices_codebook_and_bias(small_conv1d):
    # c1: 120 weights, 6 biases; c2: 108 and 6; fc: 234 and 3 (flatten of 13 x 6).
    # W2: packed indices 30 + 27 + 59, codebooks 3 x 4 x 4 B, biases 15 x 4 B.
    assert kmeans_flash(small_conv1d, "w2a8") == 116 + 48 + 60
    # The uniform grid stores a float32 scale per output channel (15) instead of a codebook.
    assert memory(small_conv1d, "w2a8")[0] == 116 + 15 * 4 + 60
    assert kmeans_flash(small_conv1d, "w4a8", centroid_bytes=2) == 231 + 3 * 16 * 2 + 60


def test_a_binary_sigmoid_classifier_trains_on_binary_cross_entropy(signals):
    """One output column is a binary classifier: labels 0/1, binary cross-entropy and a
    threshold accuracy (sparse categorical cross-entropy over one column is always 0)."""
    from tfq_tiny.evaluate import accuracy

    keras.utils.set_random_seed(1)
    i = keras.Input(signals.shape[1:])
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Conv1D(8, 5, activation="relu")(i))
    model = keras.Model(i, keras.layers.Dense(1, activation="sigmoid", name="wake")(x))
    y = (signals[:, :, 0].mean(1) > np.median(signals[:, :, 0].mean(1))).astype(int)
    qmodel = tfq_tiny.quantize_model(model, "w4a4", signals)
    before = accuracy(qmodel, signals, y)
    tuner = FineTuner(epochs=8, lr=1e-2, batch_size=16, progress=False)
    tuner.run(qmodel, (signals, y))
    losses = [r["loss"] for r in tuner.history]
    assert losses[0] > 0.1 and losses[-1] < losses[0]
    assert accuracy(qmodel, signals, y) > max(before, 60)
    assert tuner.history[-1]["accuracy"] == pytest.approx(accuracy(qmodel, signals, y) / 100, abs=0.1)


def test_finetune_and_learned_ranges_keep_concatenated_inputs_on_one_grid(images):
    """QAT (every step) and LSQ reconstruction (at the end) put the layers a Concatenate joins
    back on its grid, so the model still exports. The shared grid itself stays where
    calibration put it: its inputs arrive on it, so its own rounding has no gradient."""
    from tfq_tiny.export import to_tflite
    from tfq_tiny.ptq import PTQConfig, PTQPipeline

    keras.utils.set_random_seed(3)
    i = keras.Input(images.shape[1:])
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(i)
    b = keras.layers.Conv2D(4, 1, name="b")(i)
    x = keras.layers.Concatenate(name="cat")([a, b])
    model = keras.Model(i, keras.layers.Dense(3, name="fc")(keras.layers.GlobalAveragePooling2D()(x)))
    y = _teacher_labels(model, images)

    def grids(qmodel):
        return {s.layer_name: (float(s.variables["scale"].numpy()), float(s.variables["zero_point"].numpy()))
                for s in quantizer_slots(qmodel) if s.kind == "output"}

    tuned = tfq_tiny.quantize_model(model, "w4a4", images)
    before = grids(tuned)
    FineTuner(epochs=2, lr=1e-2, batch_size=16, progress=False).run(tuned, (images, y))
    learned = PTQPipeline(PTQConfig(optimize="qparam", iterations=50, learning_rate=1e-2,
                                    bias_tuning=False), progress=False).run(model, images, "w4a4")
    for qmodel in (tuned, learned):
        assert len({grids(qmodel)[name] for name in ("a", "b", "cat")}) == 1
        assert len(to_tflite(qmodel)) > 0
    assert grids(tuned)["fc"] != before["fc"]


def test_finetune_learns_the_quantization_ranges(small_conv1d, signals):
    """The scales and zero points are not trainable variables; QAT must still learn them
    (a tape that does not watch them leaves every range where calibration put it)."""
    y = _teacher_labels(small_conv1d, signals)
    qmodel = tfq_tiny.quantize_model(small_conv1d, "w4a4", signals)
    slots = quantizer_slots(qmodel)
    before = [s.variables["scale"].numpy().copy() for s in slots]
    FineTuner(epochs=1, lr=1e-2, batch_size=16, progress=False).run(qmodel, (signals, y))
    moved = {s.kind for s, old in zip(slots, before) if not np.array_equal(old, s.variables["scale"].numpy())}
    assert moved == {"input", "weight", "output"}
