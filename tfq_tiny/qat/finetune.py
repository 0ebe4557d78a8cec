"""Quantization-aware fine-tuning (QAT) of a calibrated fake-quant model.

The last stage of HAQ-for-MCU: once a ``BitPolicy`` is chosen and the model quantized
(``tfq_tiny.quantize_model`` or the PTQ pipeline), train it end to end on labelled data with the
quantizers in the forward pass. What is trained:

- every trainable weight (kernels, biases) with Adam at ``lr`` (1e-4, HAQ's setting);
- the quantizers' ranges ("learned ranges", as in HAQ/LSQ): the variables and relative learning
  rates the PTQ 'qparam' optimiser (``tfq_tiny.ptq.lsq.LSQ``) picks, i.e. weight scales per
  channel and activation scales and zero points, each with its own Adam at ``lr`` times the
  variable's magnitude, plus the model input quantizer by the same rule. Quantizers tied to their
  input (average pooling) or with a fixed range (softmax) are not trained.

Gradients pass the rounding straight through (``quantizers.py``), so a scale receives LSQ's
gradient ``round(x/s) - x/s`` inside the range and ``qmin/qmax - zp`` where values clip. The
model runs in training mode, as in Keras ``fit``: its Dropout (and other noise) layers regularise
as when it was trained. Without them one QAT epoch overfits DS-CNN's training split and leaves
its W8A8 model worse on test than PTQ did; ``dropout=False`` runs in inference mode instead.
BatchNorm is folded before quantization, so no batch statistics are involved. The dropout masks
of epoch ``e`` are drawn from ``(seed, e)`` alone, so a run is a deterministic function of its
inputs. After every step the scales are kept positive and tied quantizers copy their input's
range; at the end zero points are rounded onto the integer grid inside the range
and biases snapped to their int32 grid (``calibration.snap_biases``), so the result still
exports with ``tfq_tiny.export.to_tflite`` and the integer model matches the simulation.

With ``checkpoint_dir`` the whole state (model variables, every Adam's slots, epoch, history) is
written atomically after each epoch; a rerun on the same quantized model, data and settings
continues at the next epoch and ends with exactly the weights an uninterrupted run has (the data
order of epoch ``e`` is a permutation drawn from ``(seed, e)``).
"""
import hashlib
import io
import json
import os
import time
import warnings

import numpy as np

from tfq_tiny._compat import keras, tf
from tfq_tiny.errors import TfqError
from tfq_tiny.evaluate import outputs_probabilities
from tfq_tiny.graph import Graph, check_tf_keras_model
from tfq_tiny.io import atomic_write
from tfq_tiny.ptq.config import PTQConfig
from tfq_tiny.ptq.lsq import LSQ
from tfq_tiny.ptq.optimiser import mean_abs
from tfq_tiny.ptq.reconstruction import apply_group_gradients
from tfq_tiny.ptq.units import Unit
from tfq_tiny.quantization.calibration import (grid_ties, quantizer_slots, snap_biases,
                                               tie_activation_ranges)
from tfq_tiny.quantization.grid import round_half_away

STATE_FILE = "qat_state.npz"
STATE_VERSION = 1
_MIN_SCALE = 1e-8
_NOISE_LAYERS = (keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                 keras.layers.AlphaDropout)


class FinetuneError(TfqError):
    """Input that quantization-aware fine-tuning cannot use (model, data or settings)."""


def _check_settings(epochs, lr, batch_size):
    if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 1:
        raise FinetuneError(f"epochs must be an integer >= 1, got {epochs!r}.")
    if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise FinetuneError(f"lr must be a positive number (HAQ fine-tunes with 1e-4), got {lr!r}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise FinetuneError(f"batch_size must be an integer >= 1, got {batch_size!r}.")


def _check_model(qmodel):
    check_tf_keras_model(qmodel)
    slots = quantizer_slots(qmodel)
    if not slots:
        raise FinetuneError(
            f"model '{qmodel.name}' has no quantizers: QAT fine-tunes a fake-quant model. Quantize "
            "it first, e.g. qmodel = tfq_tiny.quantize_model(model, policy, calibration_data), "
            "then finetune(qmodel, (x, y), epochs).")
    for slot in slots:
        if "scale" not in slot.variables or "zero_point" not in slot.variables:
            raise FinetuneError(
                f"layer '{slot.layer_name}' has a {type(slot.quantizer).__name__}, which has no "
                "scale/zero point to learn; finetune supports the uniform quantizers of "
                "tfq_tiny.quantization (k-means models are simulation only).")
    if len(qmodel.outputs) != 1 or qmodel.outputs[0].shape.rank != 2:
        raise FinetuneError(
            f"model '{qmodel.name}' must have one output of shape (batch, classes) for the "
            f"classification loss; it has {[tuple(t.shape) for t in qmodel.outputs]}.")
    return slots


def labelled_arrays(data, qmodel, what="train_data"):
    """(float32 inputs, int32 class labels) from ``(x, y)`` arrays or a ``tf.data.Dataset``.

    Labels may be class indices of shape (n,) or (n, 1), or one-hot rows of shape
    (n, classes). Raises FinetuneError naming what is wrong otherwise.
    """
    if data is None:
        raise FinetuneError(f"{what} is required: labelled samples as (x, y) arrays or a "
                            "tf.data.Dataset of (x, y).")
    rank = len(qmodel.input_shape)
    if isinstance(data, tf.data.Dataset):
        xs, ys = [], []
        for element in data.as_numpy_iterator():
            if not isinstance(element, (tuple, list)) or len(element) != 2:
                raise FinetuneError(f"{what} must yield (x, y) pairs; labels are required for QAT.")
            x, y = np.asarray(element[0]), np.asarray(element[1])
            batched = x.ndim == rank
            xs.append(x if batched else x[None])
            ys.append(y if batched else y[None])
        if not xs:
            raise FinetuneError(f"{what} is empty.")
        data = (np.concatenate(xs), np.concatenate(ys))
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise FinetuneError(f"{what} must be a pair (x, y) of inputs and labels, got "
                            f"{type(data).__name__}.")
    x = np.asarray(data[0], np.float32)
    y = np.asarray(data[1])
    expected = tuple(qmodel.input_shape[1:])
    if x.ndim != rank or any(e is not None and e != d for e, d in zip(expected, x.shape[1:])):
        raise FinetuneError(f"{what} inputs have shape {x.shape}; the model expects "
                            f"(n, {', '.join(str(d) for d in expected)}).")
    if len(x) == 0:
        raise FinetuneError(f"{what} is empty.")
    if not np.all(np.isfinite(x)):
        raise FinetuneError(f"{what} inputs contain NaN or Inf values.")
    classes = max(int(qmodel.output_shape[-1]), 2)   # one output column: a binary classifier
    if y.ndim == 2 and y.shape[1] == classes and classes > 1:
        if not np.all((y == 0) | (y == 1)) or not np.all(y.sum(1) == 1):
            raise FinetuneError(f"{what} labels of shape {y.shape} are not one-hot rows; pass "
                                "class indices of shape (n,) instead.")
        y = np.argmax(y, 1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        raise FinetuneError(
            f"{what} labels have shape {y.shape} for {len(x)} inputs; pass class indices of shape "
            f"({len(x)},) (or ({len(x)}, 1), or one-hot ({len(x)}, {classes})).")
    if not np.all(np.isfinite(y.astype(np.float64))) or np.any(y != np.round(y)) or \
            y.min() < 0 or y.max() >= classes:
        raise FinetuneError(f"{what} labels must be integer classes in [0, {classes}); got values "
                            f"in [{y.min()}, {y.max()}].")
    return x, y.astype(np.int32)


def noise_layers(model):
    """The layers that act only in training mode (Dropout and its kin) of ``model``."""
    return [layer for layer in model.submodules if isinstance(layer, _NOISE_LAYERS)]


def trained_groups(qmodel, slots, lr):
    """``(variables, learning rate)`` groups: weights at ``lr``, then LSQ's qparam groups."""
    graph = Graph(qmodel)
    whole = Unit("model", list(graph), [], graph.output_names[0])
    groups = [(list(qmodel.trainable_weights), lr)]
    groups += LSQ(PTQConfig(optimize="qparam", learning_rate=lr)).prepare(whole)
    for slot in slots:
        if slot.kind == "input" and slot.quantizer.fixed_range is None:
            groups += [([slot.variables["scale"]], lr * mean_abs(slot.variables["scale"])),
                       ([slot.variables["zero_point"]], lr * 10.0)]
    return [(list(v), float(rate)) for v, rate in groups if len(v)]


class QATModel(keras.Model):
    """Trains a quantized model on labels: each variable group with its own Adam.

    The model runs in training mode (dropout active) when ``dropout``, else in inference mode.
    After every step the scales stay at least ``1e-8`` and tied quantizers copy their source's
    scale and zero point (``calibration.grid_ties``: average pools, Concatenate inputs).
    """

    def __init__(self, qmodel, groups, from_logits, dropout=True, **kwargs):
        super().__init__(**kwargs)
        self.qmodel = qmodel
        self.dropout = bool(dropout)
        self._groups = groups
        self._opt_vars = [v for vs, _ in groups for v in vs]
        self._optimizers = [keras.optimizers.Adam(rate) for _, rate in groups]
        for (variables, _), optimizer in zip(groups, self._optimizers):
            optimizer.build(variables)
        slots = quantizer_slots(qmodel)
        self._scales = [s.variables["scale"] for s in slots]
        self._ties = [(source.variables, target.variables) for source, target in grid_ties(slots)]
        self._binary = int(qmodel.output_shape[-1]) == 1
        if self._binary:
            self._loss_fn = keras.losses.BinaryCrossentropy(from_logits=from_logits)
            self._accuracy = keras.metrics.BinaryAccuracy("accuracy", threshold=0.0 if from_logits else 0.5)
        else:
            self._loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
            self._accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")
        self._loss_tracker = keras.metrics.Mean("loss")
        self.compile(optimizer=self._optimizers[0])

    @property
    def optimizers(self):
        return list(self._optimizers)

    @property
    def metrics(self):
        return [self._loss_tracker, self._accuracy]

    def call(self, inputs, training=False):
        return self.qmodel(inputs, training=bool(training) and self.dropout)

    def reseed(self, seed):
        """Draw the next ``fit``'s dropout masks from ``seed`` alone: TF's op seeds derive from
        the global seed when a function is traced, so set it and trace the train step anew."""
        tf.random.set_seed(seed)
        self.train_function = None

    def _targets(self, y):
        """Class indices, or (batch, 1) float targets for a binary classifier's one column."""
        return tf.cast(tf.reshape(y, (-1, 1)), tf.float32) if self._binary else y

    def _update_metrics(self, y, out, loss):
        self._loss_tracker.update_state(loss)
        self._accuracy.update_state(y, out)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = data
        y = self._targets(y)
        with tf.GradientTape() as tape:
            tape.watch(self._opt_vars)   # the quantizers' scales and zero points are not trainable
            out = self(x, training=True)
            loss = self._loss_fn(y, out)
        apply_group_gradients(self._groups, self._optimizers, tape.gradient(loss, self._opt_vars))
        for scale in self._scales:
            scale.assign(tf.maximum(scale, _MIN_SCALE))
        for source, target in self._ties:
            target["scale"].assign(source["scale"])
            target["zero_point"].assign(source["zero_point"])
        return self._update_metrics(y, out, loss)

    def test_step(self, data):
        x, y = data
        y = self._targets(y)
        out = self(x, training=False)
        return self._update_metrics(y, out, self._loss_fn(y, out))


def finalize_qparams(qmodel):
    """Put the learned ranges back on the deployable grid: scales positive, zero points integers
    inside the range, tied quantizers equal to their inputs', biases on their int32 grid."""
    for slot in quantizer_slots(qmodel):
        scale = slot.variables["scale"]
        scale.assign(np.maximum(scale.numpy(), _MIN_SCALE))
        if slot.kind != "weight":
            qmin, qmax = slot.quantizer.int_range
            zero_point = slot.variables["zero_point"]
            zero_point.assign(np.clip(round_half_away(zero_point.numpy()), qmin, qmax))
    tie_activation_ranges(qmodel)
    snap_biases(qmodel)
    return qmodel


class _ProgressBar(keras.callbacks.Callback):
    """One tqdm bar over every step of the run, with the epoch and the running loss/accuracy."""

    def __init__(self, epochs, steps_per_epoch, done):
        super().__init__()
        from tqdm.auto import tqdm

        self.epochs = epochs
        self.bar = tqdm(total=epochs * steps_per_epoch, initial=done * steps_per_epoch,
                        desc="QAT", unit="step", mininterval=1.0)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if batch % 20:
            return
        logs = logs or {}
        self.bar.set_postfix_str(f"epoch {self.epoch + 1}/{self.epochs} loss "
                                 f"{float(logs.get('loss', np.nan)):.4f} acc "
                                 f"{float(logs.get('accuracy', np.nan)):.3f}", refresh=False)

    def close(self):
        self.bar.close()


class _Checkpoint:
    """The fine-tuning state in one ``.npz`` written atomically; no-op without a directory."""

    def __init__(self, directory, fingerprint):
        self.directory = directory
        self.fingerprint = fingerprint
        self.path = os.path.join(directory, STATE_FILE) if directory else None

    def restore(self, qmodel, optimizers, best):
        """(epochs done, history) after loading a matching state (and ``best``'s kept
        weights, score and epoch), else (0, [])."""
        if not self.path or not os.path.exists(self.path):
            return 0, []
        with np.load(self.path, allow_pickle=False) as state:
            meta = json.loads(str(state["meta"]))
            if meta.get("fingerprint") != self.fingerprint or meta.get("version") != STATE_VERSION:
                warnings.warn(f"{self.path} was written for another model, data or settings; "
                              "fine-tuning starts from epoch 0 and will overwrite it.")
                return 0, []
            qmodel.set_weights([state[f"model_{i}"] for i in range(meta["model_vars"])])
            for j, optimizer in enumerate(optimizers):
                for k, variable in enumerate(optimizer.variables):
                    variable.assign(state[f"opt{j}_{k}"])
            if meta.get("best") is not None:
                best.update(meta["best"], weights=[state[f"best_{i}"]
                                                  for i in range(meta["model_vars"])])
        return int(meta["epoch"]), list(meta["history"])

    def save(self, qmodel, optimizers, epoch, history, best):
        if not self.path:
            return
        weights = qmodel.get_weights()
        arrays = {f"model_{i}": w for i, w in enumerate(weights)}
        if best.weights is not None:
            arrays.update({f"best_{i}": w for i, w in enumerate(best.weights)})
        for j, optimizer in enumerate(optimizers):
            for k, variable in enumerate(optimizer.variables):
                arrays[f"opt{j}_{k}"] = variable.numpy()
        meta = {"fingerprint": self.fingerprint, "version": STATE_VERSION, "epoch": epoch,
                "history": history, "model_vars": len(weights),
                "best": None if best.weights is None else best.summary()}
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
        atomic_write(self.path, buffer.getvalue())


class _Best:
    """The weights with the highest validation accuracy seen so far (epoch 0 = the start)."""

    def __init__(self):
        self.weights, self.accuracy, self.epoch = None, None, None

    def offer(self, qmodel, accuracy, epoch):
        if self.accuracy is None or accuracy > self.accuracy:
            self.weights, self.accuracy, self.epoch = qmodel.get_weights(), accuracy, epoch

    def update(self, summary, weights):
        self.accuracy, self.epoch, self.weights = summary["accuracy"], summary["epoch"], weights

    def summary(self):
        return {"accuracy": self.accuracy, "epoch": self.epoch}


def _fingerprint(qmodel, x, y, settings):
    digest = hashlib.sha256()
    for weight in qmodel.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


class FineTuner:
    """QAT of quantized models: ``FineTuner(epochs=2).run(qmodel, (x, y))``; see ``finetune``.

    ``history`` holds one record per finished epoch (loss, accuracy and, with validation data,
    val_loss/val_accuracy, as Keras logs them, and its wall time ``epoch_seconds``), including
    the epochs restored from a checkpoint, so a resumed run still knows what the whole cost.
    With ``restore_best``, ``restored_epoch`` says which epoch's weights were kept when it was
    not the last (0 = the starting model), else None. ``dropout_layers`` counts the noise layers
    the last run trained with (0 with ``dropout=False`` or a model without any).
    """

    def __init__(self, epochs, lr=1e-4, batch_size=64, checkpoint_dir=None, log_dir=None,
                 progress=True, validation_data=None, callbacks=(), seed=0, from_logits=None,
                 restore_best=False, dropout=True):
        _check_settings(epochs, lr, batch_size)
        if restore_best and validation_data is None:
            raise FinetuneError("restore_best keeps the weights with the best validation "
                                "accuracy, so it needs validation_data=(x_val, y_val): labelled "
                                "samples held out from the training data.")
        self.restore_best = bool(restore_best)
        self.restored_epoch = None
        self.dropout = bool(dropout)
        self.dropout_layers = 0
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.checkpoint_dir = checkpoint_dir
        self.log_dir = log_dir
        self.progress = progress
        self.validation_data = validation_data
        self.callbacks = list(callbacks)
        self.seed = int(seed)
        self.from_logits = from_logits
        self.history = []

    def settings(self):
        """What, besides the model and the data, determines the result of an epoch."""
        settings = {"lr": self.lr, "batch_size": self.batch_size, "seed": self.seed,
                    "from_logits": self.from_logits, "version": STATE_VERSION}
        settings |= {"restore_best": True} if self.restore_best else {}
        return settings | ({"dropout": True} if self.dropout else {})

    def run(self, qmodel, train_data):
        """Fine-tune ``qmodel`` in place on ``train_data`` and return it, ready to export."""
        slots = _check_model(qmodel)
        x, y = labelled_arrays(train_data, qmodel)
        validation = None if self.validation_data is None else \
            labelled_arrays(self.validation_data, qmodel, "validation_data")
        from_logits = (not outputs_probabilities(qmodel)) if self.from_logits is None \
            else bool(self.from_logits)
        checkpoint = _Checkpoint(self.checkpoint_dir,
                                 _fingerprint(qmodel, x, y, self.settings() | {
                                     "from_logits": from_logits}))
        self.dropout_layers = len(noise_layers(qmodel)) if self.dropout else 0
        trainer = QATModel(qmodel, trained_groups(qmodel, slots, self.lr), from_logits,
                           dropout=self.dropout)
        best = _Best()
        start, self.history = checkpoint.restore(qmodel, trainer.optimizers, best)
        if self.restore_best and start == 0:
            logs = trainer.evaluate(*validation, batch_size=self.batch_size, verbose=0,
                                    return_dict=True)
            best.offer(qmodel, float(logs["accuracy"]), 0)
        if start and self.progress:
            print(f"QAT: resuming after epoch {start} from {checkpoint.path}")
        callbacks = list(self.callbacks)
        if self.log_dir:
            callbacks.append(keras.callbacks.TensorBoard(self.log_dir, write_graph=False))
        bar = None
        if self.progress and start < self.epochs:
            bar = _ProgressBar(self.epochs, -(-len(x) // self.batch_size), start)
            callbacks.append(bar)
        try:
            for epoch in range(start, self.epochs):
                order = np.random.default_rng([self.seed, epoch]).permutation(len(x))
                if self.dropout_layers:
                    trainer.reseed(int(np.random.default_rng([self.seed, epoch, 1]).integers(
                        2 ** 31)))
                began = time.perf_counter()
                fit = trainer.fit(x[order], y[order], batch_size=self.batch_size,
                                  epochs=epoch + 1, initial_epoch=epoch, shuffle=False,
                                  validation_data=validation, callbacks=callbacks, verbose=0)
                record = {"epoch": epoch + 1, "epoch_seconds": time.perf_counter() - began}
                record.update({k: float(v[-1]) for k, v in fit.history.items()})
                self.history.append(record)
                if self.restore_best:
                    best.offer(qmodel, record["val_accuracy"], epoch + 1)
                checkpoint.save(qmodel, trainer.optimizers, epoch + 1, self.history, best)
        finally:
            if bar is not None:
                bar.close()
        self.restored_epoch = None
        if self.restore_best and best.epoch != self.epochs:
            qmodel.set_weights(best.weights)
            self.restored_epoch = best.epoch
            if self.progress:
                print(f"QAT: kept the weights of epoch {best.epoch} (validation accuracy "
                      f"{100 * best.accuracy:.2f} %; epoch 0 = before fine-tuning)")
        return finalize_qparams(qmodel)


def finetune(qmodel, train_data, epochs, lr=1e-4, batch_size=64, checkpoint_dir=None,
             log_dir=None, progress=True, validation_data=None, callbacks=(), seed=0,
             from_logits=None, restore_best=False, dropout=True):
    """Quantization-aware fine-tuning of a calibrated fake-quant model, in place.

    Args:
      qmodel: a model from ``tfq_tiny.quantize_model`` / ``PTQPipeline.run`` (its BitPolicy
        stays as it is; weights and quantizer ranges are trained).
      train_data: labelled samples, ``(x, y)`` arrays (y: class indices or one-hot) or a
        ``tf.data.Dataset`` of ``(x, y)``.
      epochs: total epochs (>= 1); with a checkpoint, those already done are skipped.
      lr: Adam learning rate of the weights (1e-4, HAQ); scales use ``lr`` times their size.
      batch_size: mini-batch size; the order of epoch ``e`` is drawn from ``(seed, e)``.
      checkpoint_dir: save the state after every epoch and resume from it.
      log_dir: TensorBoard logs (Keras' ``TensorBoard`` callback).
      progress: a tqdm progress bar over all steps.
      validation_data: optional labelled ``(x, y)`` evaluated after every epoch.
      callbacks: more Keras callbacks for every epoch's fit.
      from_logits: whether the model outputs logits; None detects a final softmax or sigmoid.
      restore_best: end with the weights (epoch 0 = the starting model included) of the best
        validation accuracy, as Keras' ``EarlyStopping(restore_best_weights=True)``; needs
        ``validation_data``. QAT can lower the accuracy of a good starting point; this keeps
        fine-tuning from making it worse on held-out data.
      dropout: run the model in training mode, as Keras ``fit`` does, so its Dropout layers
        regularise (masks drawn from ``(seed, epoch)``; sets TF's global seed). False: inference
        mode, which lets one epoch overfit a model trained with dropout, such as DS-CNN.

    Returns:
      ``qmodel``, fine-tuned, with scales positive, zero points on the integer grid, tied
      average pools equal to their inputs and biases snapped, so ``to_tflite`` accepts it.

    Raises:
      FinetuneError (a ``TfqError``) for a model without quantizers, unusable data or labels,
      or settings out of range.
    """
    tuner = FineTuner(epochs, lr, batch_size, checkpoint_dir, log_dir, progress,
                      validation_data, callbacks, seed, from_logits, restore_best, dropout)
    return tuner.run(qmodel, train_data)
