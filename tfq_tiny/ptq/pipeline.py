"""``PTQPipeline``: the unified four-step post-training quantization pipeline.

1. preprocess (BN fold, optionally CLE) -> 2. quantizers from a BitPolicy, MinMax/MSE init
-> 3. unit-by-unit reconstruction with one optimiser (none | qparam | weights | bits | round)
at layer or block granularity -> 4. optional end-to-end bias tuning.
"""
import hashlib
import json
import os
import time

import numpy as np

from tfq_tiny._compat import keras
from tfq_tiny.graph import check_tf_keras_model
from tfq_tiny.io import atomic_write_json
from tfq_tiny.keras3 import as_tf_keras
from tfq_tiny.preprocess import preprocess
from tfq_tiny.ptq import adaquant, adaround, bitsplit, lsq  # noqa: F401  (register optimisers)
from tfq_tiny.ptq.bias_tuning import bias_tuning_model, model_biases
from tfq_tiny.ptq.config import PTQConfig
from tfq_tiny.ptq.lsq import qparam_groups
from tfq_tiny.ptq.optimiser import OPTIMISERS, activation_slots, unit_state
from tfq_tiny.ptq.reconstruction import (ReconstructionModel, StepCounter, fit,
                                         reconstruction_mse, tensor_values, top1_agreement,
                                         unit_forward)
from tfq_tiny.ptq.units import find_units, float_name
from tfq_tiny.quantization.calibration import (as_batches, calibrate, observed_activation_slots,
                                               quantizer_slots, snap_biases,
                                               tie_activation_ranges)
from tfq_tiny.quantization.loss_aware import refine_activation_ranges
from tfq_tiny.quantization.policy import BitPolicy
from tfq_tiny.quantization.quantize import build_quantized_model, strip_annotations
from tfq_tiny.quantization.range_init import starting_init


class ProgressBar(StepCounter):
    """One tqdm bar over all reconstruction steps of a run (units and bias tuning)."""

    def __init__(self, total, enabled=True):
        super().__init__()
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="PTQ", unit="it", leave=True, mininterval=2.0)
        self.unit = ""
        self.steps = 0

    def set_unit(self, name):
        self.unit = name
        if self.bar is not None:
            self.bar.set_postfix_str(name, refresh=False)

    def update_by(self, steps):
        if self.bar is not None:
            self.bar.update(steps)

    def advance(self, steps, logs):
        if self.bar is None:
            return
        if logs and "mse" in logs and (self.steps + steps) // 100 > self.steps // 100:
            self.bar.set_postfix_str(f"{self.unit} mse={float(logs['mse']):.3g}", refresh=False)
        self.steps += steps
        self.bar.update(steps)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class PTQPipeline:
    """Run a ``PTQConfig`` on a float model: ``PTQPipeline(config).run(model, calib, policy)``.

    ``callbacks`` are added to every reconstruction fit (e.g. ``keras.callbacks.TensorBoard``
    is added per unit when ``log_dir`` is given); ``history`` records each unit's MSE before
    after optimisation ("mse_optimised"), and as kept ("mse_after"; equal unless reverted),
    and its wall time. With
    ``config.revert_if_worse`` a unit whose optimisation raised its reconstruction MSE on the
    calibration data is restored, so a step never makes a unit worse than its init.

    With ``checkpoint_dir`` the quantized weights and the history are saved atomically after
    every unit; a later run of the same model, data, policy and config resumes after the
    last finished unit (each unit is seeded from ``config.seed`` and its index, so a resumed
    run computes what an uninterrupted one would).
    """

    def __init__(self, config=None, callbacks=(), log_dir=None, progress=True,
                 checkpoint_dir=None):
        self.config = config if isinstance(config, PTQConfig) else \
            PTQConfig.from_config({**PTQConfig().get_config(), **(config or {})})
        self.callbacks = list(callbacks)
        self.log_dir = log_dir
        self.progress = progress
        self.checkpoint_dir = checkpoint_dir
        self.history = []
        self.range_refinement = []

    def _unit_callbacks(self, name):
        callbacks = list(self.callbacks)
        if self.log_dir:
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(self.log_dir, name),
                                                         update_freq=50))
        if self.config.early_stop_patience:
            callbacks.append(keras.callbacks.EarlyStopping(
                "loss", patience=self.config.early_stop_patience, restore_best_weights=False))
        return callbacks

    def run(self, model, calibration_data, policy="w4a4"):
        """The quantized tf_keras model for ``model`` (tf_keras, or Keras 3 rebuilt with
        ``as_tf_keras``) under ``policy``."""
        cfg = self.config
        model = as_tf_keras(model)
        check_tf_keras_model(model)
        policy = BitPolicy.parse(policy)
        keras.utils.set_random_seed(cfg.seed)
        calib = np.concatenate(list(as_batches(calibration_data, 256, model.input_shape)))
        plain, configs = strip_annotations(model)
        float_model = preprocess(plain, cfg.preprocess_steps)
        # Loss-aware ranges are chosen for the finished model (below), from the MSE ones.
        init = {"weights": cfg.weight_init, "activations": starting_init(cfg.activation_init)}
        qmodel = build_quantized_model(float_model, policy, init, configs)
        self.range_refinement = []
        calibrate(qmodel, float_model, calib, seed=cfg.seed)
        checkpoint = _Checkpoint(self.checkpoint_dir, _fingerprint(model, calib, policy, cfg))
        self.history = checkpoint.restore(qmodel)
        done = {record["unit"] for record in self.history}
        graph, units = find_units(qmodel, cfg.granularity)
        optimise = cfg.optimize != "none" and cfg.iterations > 0
        total = (len(units) * cfg.iterations if optimise else 0) + \
            (cfg.bias_tuning_iterations if cfg.bias_tuning else 0)
        bar = ProgressBar(total, enabled=self.progress and total > 0)
        try:
            if optimise:
                for index, unit in enumerate(units):
                    if unit.name in done:
                        bar.update_by(cfg.iterations)
                        continue
                    keras.utils.set_random_seed(cfg.seed + index)
                    self._reconstruct(unit, graph, qmodel, float_model, calib, bar)
                    checkpoint.save(qmodel, self.history)
                tie_activation_ranges(qmodel)
            if cfg.bias_tuning and cfg.bias_tuning_iterations > 0 and "bias_tuning" not in done:
                keras.utils.set_random_seed(cfg.seed + len(units))
                bar.set_unit("bias tuning")
                start = time.time()
                target = float_model.predict(calib, batch_size=256, verbose=0)
                forward = lambda x, training: qmodel(x, training=training)  # noqa: E731
                before = reconstruction_mse(forward, calib, target)
                agreement = [top1_agreement(forward, calib, target)]
                saved = _snapshot(model_biases(qmodel))
                fit(bias_tuning_model(qmodel, cfg.bias_tuning_learning_rate), calib, target,
                    cfg.bias_tuning_iterations, cfg.bias_tuning_batch_size,
                    self._unit_callbacks("bias_tuning") + [bar], seed=cfg.seed)
                agreement.append(top1_agreement(forward, calib, target))
                fewer = agreement[0] is not None and agreement[1] < agreement[0]
                self._record("bias_tuning", before, reconstruction_mse(forward, calib, target),
                             saved, start, worse=cfg.bias_tuning_guard and fewer,
                             agreement_before=agreement[0], agreement_after=agreement[1])
                checkpoint.save(qmodel, self.history)
            if cfg.activation_init == "loss_aware":
                bar.set_unit("loss-aware ranges")
                self.range_refinement = refine_activation_ranges(
                    qmodel, float_model, calib, observed_activation_slots(quantizer_slots(qmodel)),
                    max_passes=cfg.range_refinement_passes)
        finally:
            bar.close()
        snap_biases(qmodel)
        return qmodel

    def _reconstruct(self, unit, graph, qmodel, float_model, calib, bar):
        cfg = self.config
        start = time.time()
        bar.set_unit(unit.name)
        inputs = tensor_values(qmodel, unit.inputs, calib)
        inputs = inputs[0] if len(inputs) == 1 else dict(zip(unit.inputs, inputs))
        dropped = unit.inputs if cfg.drop_prob > 0 else []  # QDrop also needs their float values
        float_values = tensor_values(float_model, [float_name(graph, n) for n in
                                                   [unit.output] + dropped], calib)
        target, float_inputs = float_values[0], None
        if dropped:
            float_inputs = float_values[1] if len(dropped) == 1 else \
                dict(zip(dropped, float_values[1:]))
        forward = unit_forward(unit)
        before = reconstruction_mse(forward, inputs, target)
        saved = _snapshot(unit_state(unit))
        optimiser = OPTIMISERS[cfg.optimize](cfg)
        if hasattr(optimiser, "solve"):
            optimiser.solve(unit, inputs)
            bar.update_by(cfg.iterations)
        else:
            groups = optimiser.prepare(unit)
            if cfg.learn_activation_ranges and cfg.optimize != "qparam":
                groups += qparam_groups(activation_slots(unit), cfg.activation_learning_rate)
            model = ReconstructionModel(forward, groups, optimiser.regularizer(),
                                        drop_prob=cfg.drop_prob)
            fit(model, inputs, target, cfg.iterations, cfg.batch_size,
                optimiser.callbacks() + self._unit_callbacks(unit.name) + [bar], seed=cfg.seed,
                float_inputs=float_inputs)
        optimiser.finalize(unit)
        self._record(unit.name, before, reconstruction_mse(forward, inputs, target), saved, start)

    def _record(self, name, before, after, saved, start, worse=False, **extra):
        """Log a unit's result; restore its state if its MSE rose and ``revert_if_worse``, or
        if ``worse`` (another test failed, e.g. the bias tuning guard)."""
        reverted = worse or (self.config.revert_if_worse and after > before)
        if reverted:
            _restore(saved)
        self.history.append({"unit": name, "mse_before": before, "mse_optimised": after,
                             "mse_after": before if reverted else after, "reverted": reverted,
                             "seconds": time.time() - start, **extra})


def _fingerprint(model, calib, policy, config):
    """Identity of a run: model weights, calibration data, policy and config."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    digest.update(np.ascontiguousarray(calib).tobytes())
    digest.update(policy.to_json(sort_keys=True).encode())
    digest.update(config.to_json(sort_keys=True).encode())
    return digest.hexdigest()


class _Checkpoint:
    """Weights + history of a PTQ run after each unit, written atomically; no-op without a dir."""

    def __init__(self, directory, fingerprint):
        self.directory = directory
        self.fingerprint = fingerprint

    def _paths(self):
        return (os.path.join(self.directory, "ptq_state.json"),
                os.path.join(self.directory, "ptq_weights.h5"))

    def restore(self, qmodel):
        if not self.directory:
            return []
        state_path, weights_path = self._paths()
        if not (os.path.exists(state_path) and os.path.exists(weights_path)):
            return []
        with open(state_path) as f:
            state = json.load(f)
        if state.get("fingerprint") != self.fingerprint:
            return []
        qmodel.load_weights(weights_path)
        return state["history"]

    def save(self, qmodel, history):
        if not self.directory:
            return
        os.makedirs(self.directory, exist_ok=True)
        state_path, weights_path = self._paths()
        tmp = weights_path + ".tmp.h5"
        qmodel.save_weights(tmp)
        os.replace(tmp, weights_path)
        atomic_write_json(state_path, {"fingerprint": self.fingerprint, "history": history})


def _snapshot(variables):
    return [(v, v.numpy().copy()) for v in variables]


def _restore(saved):
    for variable, value in saved:
        variable.assign(value)
