"""The one reconstruction loop: every optimiser, both granularities, and bias tuning.

For each unit, in execution order: cache the unit's inputs computed by the *quantized*
model so far (so each unit learns to correct the error its quantized predecessors left,
as AdaRound's asymmetric reconstruction and BRECQ do) and the *float* model's output of the
unit as the target; then minimise the MSE between them (plus the optimiser's regulariser)
over the optimiser's variables with ``keras.Model.fit``, so that schedules, logging,
progress and early stopping are ordinary Keras callbacks. Bias tuning runs the same loop
with the whole model as one unit and the biases as its variables. An optimiser with a
closed-form step (BitSplit's ``solve``) gets the same cached inputs in place of the fit.

A reconstruction step is small (one layer, batch 32), so Python dispatch between steps
cost a third of the wall time. ``fit`` therefore runs steps in groups inside one graph
call (Keras ``steps_per_execution``), at most ``MAX_GROUP`` and about ``SCHEDULE_POINTS``
groups per fit; schedules (``StepSchedule``) are set from the true step count once per
group, so a 10k-step fit updates its learning rate and AdaRound's beta every 8 steps.
"""
import numpy as np

from tfq_tiny._compat import keras, tf
from tfq_tiny.graph import call_layer


def apply_group_gradients(groups, optimizers, grads):
    """Apply ``grads`` (ordered as the groups' variables, concatenated) group by group, each
    with its own optimizer; variables without a gradient are skipped."""
    start = 0
    for (variables, _), optimizer in zip(groups, optimizers):
        pairs = [(g, v) for g, v in zip(grads[start:start + len(variables)], variables)
                 if g is not None]
        start += len(variables)
        if pairs:
            optimizer.apply_gradients(pairs)


class ReconstructionModel(keras.Model):
    """A Keras model over a callable, training only the given variable groups.

    ``forward(inputs, training)`` computes the quantized output; ``groups`` is a list of
    ``(variables, learning_rate)``, each with its own Adam (the first is ``model.optimizer``,
    so Keras learning-rate callbacks act on it); ``regularizer()`` returns a scalar added to
    the MSE (AdaRound's rounding term). Logs report loss, mse and reg.

    With ``drop_prob`` > 0 the training inputs are pairs ``(quantized, float)`` and each
    element of the unit's input is the float value with that probability (QDrop, Wei et al.
    2022): the unit learns to be right around the float input as well as the quantized
    one, which flattens the loss landscape the rounding is chosen on.
    """

    def __init__(self, forward, groups, regularizer=None, drop_prob=0.0, **kwargs):
        super().__init__(**kwargs)
        self._forward = forward
        self._drop_prob = float(drop_prob)
        self._groups = [(list(v), float(lr)) for v, lr in groups if len(v)]
        self._opt_vars = [v for vs, _ in self._groups for v in vs]
        self._regularizer = regularizer
        self._extra_optimizers = [keras.optimizers.Adam(lr) for _, lr in self._groups[1:]]
        self.compile(optimizer=keras.optimizers.Adam(self._groups[0][1] if self._groups else 0.0))

    def call(self, inputs, training=False):
        # Layers always run in inference mode: reconstruction must not see dropout noise.
        return self._forward(inputs, False)

    def _mix(self, x):
        quantized, full = x
        keep = lambda q, f: tf.where(  # noqa: E731
            tf.random.uniform(tf.shape(q)) < self._drop_prob, f, q)
        return tf.nest.map_structure(keep, quantized, full)

    def train_step(self, data):
        x, y = data
        if self._drop_prob > 0:
            x = self._mix(x)
        with tf.GradientTape() as tape:
            tape.watch(self._opt_vars)
            mse = tf.reduce_mean(tf.square(self(x, training=True) - y))
            reg = self._regularizer() if self._regularizer is not None else tf.constant(0.0)
            loss = mse + reg
        apply_group_gradients(self._groups, [self.optimizer] + self._extra_optimizers,
                              tape.gradient(loss, self._opt_vars))
        return {"loss": loss, "mse": mse, "reg": reg}

    def test_step(self, data):
        x, y = data
        return {"mse": tf.reduce_mean(tf.square(self(x, training=False) - y))}


MAX_GROUP = 16
SCHEDULE_POINTS = 1000


class StepSchedule(keras.callbacks.Callback):
    """A schedule over the fit's steps: ``update(step)`` runs before every group of steps with
    the global index of its first step, and ``self.total`` is the fit's step count."""

    def on_train_begin(self, logs=None):
        self.epoch = 0
        self.total = self.params["epochs"] * self.params["steps"]

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.update(self.epoch * self.params["steps"] + batch)

    def update(self, step):
        raise NotImplementedError


class CosineDecay(StepSchedule):
    """Cosine learning-rate decay to zero over the fit, for every variable group's Adam."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.optimizers = [self.model.optimizer] + self.model._extra_optimizers
        self.base = [float(o.learning_rate.numpy()) for o in self.optimizers]

    def update(self, step):
        factor = 0.5 * (1.0 + np.cos(np.pi * min(step, self.total) / max(1, self.total)))
        for optimizer, base in zip(self.optimizers, self.base):
            optimizer.learning_rate.assign(base * factor)


class StepCounter(keras.callbacks.Callback):
    """Calls ``advance(n)`` with the number of steps each group of steps ran."""

    def on_epoch_begin(self, epoch, logs=None):
        self._seen = 0

    def on_train_batch_end(self, batch, logs=None):
        done, self._seen = batch + 1 - self._seen, batch + 1
        self.advance(done, logs)

    def advance(self, steps, logs):
        raise NotImplementedError


def reconstruction_mse(forward, inputs, target, batch_size=256):
    """MSE of ``forward`` (traced afresh, so it sees the current rounding) against ``target``."""
    return float(ReconstructionModel(forward, []).evaluate(inputs, target, batch_size=batch_size,
                                                           verbose=0))


def top1_agreement(forward, inputs, target, batch_size=256):
    """Share of samples whose ``forward`` output and ``target`` have the same argmax (the
    quantized and the float model's decision), or None for outputs with one channel."""
    if np.shape(target)[-1] < 2:
        return None
    output = np.concatenate([np.asarray(forward(inputs[i:i + batch_size], False))
                             for i in range(0, len(inputs), batch_size)])
    return float(np.mean(output.argmax(-1) == np.asarray(target).argmax(-1)))


def unit_forward(unit):
    """Forward function of a unit: runs its nodes on a dict of its input tensors."""

    def forward(inputs, training):
        values = dict(inputs) if isinstance(inputs, dict) else {unit.inputs[0]: inputs}
        for node in unit.nodes:
            values[node.name] = call_layer(node.layer, [values[p] for p in node.inputs],
                                           training=training)
        return values[unit.output]

    return forward


def tensor_values(model, names, data, batch_size=256):
    """NumPy values of the outputs of layers ``names`` of ``model`` on ``data``."""
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    chunks = [[] for _ in names]
    for i in range(0, len(data), batch_size):
        outs = probe(data[i:i + batch_size], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for chunk, out in zip(chunks, outs):
            chunk.append(np.asarray(out))
    return [np.concatenate(c) for c in chunks]


def group_size(steps_per_epoch, iterations):
    """Steps per graph call: the largest divisor of ``steps_per_epoch`` that is at most
    ``MAX_GROUP`` and leaves about ``SCHEDULE_POINTS`` schedule updates in the fit."""
    limit = max(1, min(MAX_GROUP, iterations // SCHEDULE_POINTS))
    return max(d for d in range(1, limit + 1) if steps_per_epoch % d == 0)


def fit(model, inputs, target, iterations, batch_size, callbacks=(), seed=0, verbose=0,
        float_inputs=None):
    """Run about ``iterations`` steps of ``model`` on cached ``inputs`` -> ``target``.

    Steps are whole epochs of ``steps_per_epoch``, run ``group_size`` at a time; callbacks
    see the true total as ``params['epochs'] * params['steps']``. ``float_inputs`` (the
    float model's values of the same tensors) are needed when the model drops quantization.
    """
    if model._drop_prob > 0:
        if float_inputs is None:
            raise ValueError("a ReconstructionModel with drop_prob > 0 needs float_inputs.")
        inputs = (inputs, float_inputs)
    if iterations <= 0 or not model._opt_vars:
        return None
    n = len(target)
    batch_size = min(batch_size, n)
    steps_per_epoch = max(1, min(n // batch_size, iterations))
    epochs = -(-iterations // steps_per_epoch)
    group = group_size(steps_per_epoch, iterations)
    if group != model._steps_per_execution.numpy():
        model.compile(optimizer=model.optimizer, steps_per_execution=group)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, target)).shuffle(
        n, seed=seed, reshuffle_each_iteration=True).repeat().batch(batch_size, drop_remainder=True)
    return model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch,
                     callbacks=list(callbacks), verbose=verbose)
