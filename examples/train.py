"""Train one of the four float benchmark models (tfq_tiny.models) on its dataset (tfq_tiny.data).

    python examples/train.py --model=res8 --output=/tmp/res8 [--epochs=N --batch_size=B --lr=LR]

Writes to --output: ``last.h5`` (weights, optimizer state and epoch, replaced atomically after every
epoch; a rerun with the same flags resumes from it), ``best.h5`` (best validation accuracy so far),
``<model>.h5`` (the float model with the best validation weights, no optimizer), ``final.h5`` (the
weights after the last epoch), ``<model>.json`` (test accuracy, seed, epochs, command line, machine,
data description) and TensorBoard logs in ``tb/``. Unset flags take per-model defaults
(``DEFAULTS``), chosen so that all four models train on 2 CPU cores in about 100 minutes.
"""
import json
import os
import platform
import shlex
import socket
import sys
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from tfq_tiny import data, models  # noqa: E402
from tfq_tiny._compat import keras, tf  # noqa: E402

DEFAULTS = {
    "cnn1d": dict(epochs=40, batch_size=64, lr=2e-3, optimizer="adam", weight_decay=1e-4),
    "res8": dict(epochs=80, batch_size=128, lr=0.1, optimizer="sgd", weight_decay=5e-4),
    "ds_cnn": dict(epochs=40, batch_size=100, lr=3e-3, optimizer="adam", weight_decay=1e-4),
    "mobilenet_v1": dict(epochs=10, batch_size=64, lr=4e-3, optimizer="adam", weight_decay=1e-4),
}
NO_DECAY = ["bias", "gamma", "beta"]
SLICE = 500

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", None, list(models.MODELS), "Model to train (its dataset is implied).")
flags.DEFINE_string("data_dir", None, "Data directory (default: env TFQ_DATA_DIR, else ../shared/data).")
flags.DEFINE_bool("download", False, "Use the public data source (needs internet) instead of data_dir.")
flags.DEFINE_integer("epochs", None, "Epochs (default per model).")
flags.DEFINE_integer("batch_size", None, "Global batch size (default per model).")
flags.DEFINE_float("lr", None, "Peak learning rate of the warmup + cosine schedule (default per model).")
flags.DEFINE_enum("optimizer", None, ["sgd", "adam"], "SGD (Nesterov momentum 0.9) or Adam (default per model).")
flags.DEFINE_float("weight_decay", None, "Decoupled weight decay, not applied to biases/BN (default per model).")
flags.DEFINE_float("warmup_epochs", 1.0, "Linear learning-rate warmup length in epochs.")
flags.DEFINE_string("output", None, "Output directory (checkpoints, logs, final model, JSON).")
flags.DEFINE_integer("seed", 0, "Seed of weights init, data order, augmentation and validation split.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy: default (one device), mirrored (all local GPUs), "
                  "multi_worker (MultiWorkerMirroredStrategy, cluster from TF_CONFIG).")
flags.DEFINE_bool("augment", True, "Use the dataset's training augmentation.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"],
                  "Compute dtype while training. Variables, the saved model and the reported "
                  "accuracies stay float32; mixed_bfloat16 trains Res8 ~1.7x faster on a CPU "
                  "with AVX512_BF16 (24 s vs 40 s per epoch on 2 cores here) but is slower for "
                  "depthwise convolutions.")
flags.DEFINE_string("note", "", "Free text copied into the JSON report.")
flags.DEFINE_integer("verbose", None, "Keras fit verbosity (default: 1 = progress bar on a terminal, else 2).")
flags.mark_flags_as_required(["model", "output"])


def make_strategy(name):
    """The tf.distribute strategy selected by --strategy."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """True on the worker that owns --output (always, without a multi-worker cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def write_atomic(path, write):
    """Run ``write(tmp_path)`` then move the result over ``path`` in one ``os.replace``."""
    tmp = f"{path}.tmp-{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


class Checkpoint(keras.callbacks.Callback):
    """After every epoch, atomically save weights + optimizer state + epoch to ``last.h5``, and the
    weights to ``best.h5`` when validation accuracy improves. ``restore`` resumes from ``last.h5``."""

    def __init__(self, directory, chief=True, config=None):
        super().__init__()
        self.directory = directory
        self.chief = chief
        self.config = dict(config or {})
        self.best = -np.inf
        self.history = []

    @property
    def last_path(self):
        return os.path.join(self.directory, "last.h5")

    @property
    def best_path(self):
        return os.path.join(self.directory, "best.h5")

    def _target(self, path):
        if self.chief:
            return path
        os.makedirs(os.path.join(self.directory, "worker_tmp"), exist_ok=True)
        return os.path.join(self.directory, "worker_tmp", os.path.basename(path))

    def _write_last(self, tmp, epoch):
        self.model.save_weights(tmp, save_format="h5")
        with h5py.File(tmp, "a") as f:
            state = f.create_group("train_state")
            state.attrs["epoch"] = epoch
            state.attrs["best_val_accuracy"] = self.best
            state.attrs["history"] = json.dumps(self.history)
            state.attrs["config"] = json.dumps(self.config)
            opt = state.create_group("optimizer")
            for i, v in enumerate(self.model.optimizer.variables):
                opt.create_dataset(f"{i:05d}", data=v.numpy())

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self.history.append({k: float(v) for k, v in logs.items()} | {"epoch": epoch + 1})
        val = logs.get("val_accuracy", -np.inf)
        if val > self.best:
            self.best = float(val)
            write_atomic(self._target(self.best_path),
                         lambda tmp: self.model.save_weights(tmp, save_format="h5"))
        write_atomic(self._target(self.last_path), lambda tmp: self._write_last(tmp, epoch + 1))

    def restore(self, model):
        """Load ``last.h5`` into ``model`` and its optimizer; return the epochs already done (0 if none)."""
        if not os.path.exists(self.last_path):
            return 0
        with h5py.File(self.last_path, "r") as f:
            state = f["train_state"]
            saved = json.loads(state.attrs["config"])
            changed = {k: (saved.get(k), v) for k, v in self.config.items() if saved.get(k) != v}
            if changed:
                raise app.UsageError(f"{self.last_path} was written with other settings {changed}; "
                                     "use the same flags to resume, or another --output")
            values = [state["optimizer"][k][()] for k in sorted(state["optimizer"])]
            epoch = int(state.attrs["epoch"])
            self.best = float(state.attrs["best_val_accuracy"])
            self.history = json.loads(state.attrs["history"])
        model.load_weights(self.last_path)
        model.optimizer.build(model.trainable_variables)
        variables = model.optimizer.variables
        if len(variables) != len(values):
            raise app.UsageError(f"{self.last_path}: optimizer state does not match this model")
        for v, value in zip(variables, values):
            v.assign(value)
        return epoch


class LogLearningRate(keras.callbacks.Callback):
    """Adds the learning rate at the end of each epoch to the logs (TensorBoard and history)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = float(keras.backend.get_value(self.model.optimizer.learning_rate))


class EpochTimer(keras.callbacks.Callback):
    """Records the wall-clock seconds of each epoch (training and validation), for the JSON."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        if logs is not None:
            logs["epoch_seconds"] = self.seconds[-1]


def make_optimizer(name, schedule, weight_decay):
    if name == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    else:
        opt = keras.optimizers.Adam(schedule, weight_decay=weight_decay)
    opt.exclude_from_weight_decay(var_names=NO_DECAY)
    return opt


def accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy of a logits model on arrays."""
    return float(np.mean(np.argmax(model.predict(x, batch_size=batch_size, verbose=0), -1) == y))


def test_accuracy(model, ds, batch_size=256):
    """Top-1 accuracy on the whole test split, streamed from the dataset's storage."""
    correct = 0
    for x, y in ds.tf_dataset("test", batch_size):
        correct += int(np.sum(np.argmax(model(x, training=False).numpy(), -1) == y.numpy()))
    return correct / ds.size("test")


def machine():
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
    }


def main(argv):
    del argv
    cfg = dict(DEFAULTS[FLAGS.model])
    for key in cfg:
        if getattr(FLAGS, key) is not None:
            cfg[key] = getattr(FLAGS, key)
    cfg |= {"model": FLAGS.model, "seed": FLAGS.seed, "augment": FLAGS.augment,
            "warmup_epochs": FLAGS.warmup_epochs, "precision": FLAGS.precision}
    os.makedirs(FLAGS.output, exist_ok=True)
    keras.utils.set_random_seed(FLAGS.seed)

    strategy = make_strategy(FLAGS.strategy)
    chief = is_chief(strategy)
    ds = data.load(models.DATASET_OF[FLAGS.model], data_dir=FLAGS.data_dir, seed=FLAGS.seed,
                   download=FLAGS.download)
    logging.info("%s on %r (%s), %d replicas", FLAGS.model, ds, ds.source, strategy.num_replicas_in_sync)

    batch = cfg["batch_size"]
    steps = ds.size("train") // batch
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train = ds.tf_dataset("train", batch, shuffle=True, augment=cfg["augment"], seed=FLAGS.seed,
                          drop_remainder=True).with_options(options)
    val = ds.tf_dataset("val", 256).with_options(options)

    warmup = int(round(cfg["warmup_epochs"] * steps))
    schedule = keras.optimizers.schedules.CosineDecay(
        cfg["lr"] * 0.1 if warmup else cfg["lr"], decay_steps=max(cfg["epochs"] * steps - warmup, 1),
        warmup_target=cfg["lr"] if warmup else None, warmup_steps=warmup)
    keras.mixed_precision.set_global_policy(FLAGS.precision)
    with strategy.scope():
        model = models.build(FLAGS.model)
        if FLAGS.precision != "float32":
            logits = keras.layers.Activation("linear", dtype="float32", name="float32_logits")
            model = keras.Model(model.input, logits(model.output), name=model.name)
        model.compile(optimizer=make_optimizer(cfg["optimizer"], schedule, cfg["weight_decay"]),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        ckpt = Checkpoint(FLAGS.output, chief, config=cfg)
        start = ckpt.restore(model)
    if start:
        logging.info("resuming from %s after epoch %d", ckpt.last_path, start)

    timer = EpochTimer()
    callbacks = [timer, LogLearningRate(), ckpt]
    try:
        import tensorboard  # noqa: F401  (tf.summary needs it; TF 2.21 no longer depends on it)
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(FLAGS.output, "tb"), profile_batch=0))
    except ImportError:
        logging.warning("tensorboard is not installed (pip install tensorboard): no TensorBoard logs")
    verbose = FLAGS.verbose if FLAGS.verbose is not None else (1 if sys.stdout.isatty() else 2)
    if start < cfg["epochs"]:
        model.fit(train, epochs=cfg["epochs"], initial_epoch=start, steps_per_epoch=steps,
                  validation_data=val, callbacks=callbacks, verbose=verbose)
    if not chief:
        return

    model.save_weights(os.path.join(FLAGS.output, "final.h5"))
    final_val = ckpt.history[-1].get("val_accuracy") if ckpt.history else None
    keras.mixed_precision.set_global_policy("float32")
    best = models.build(FLAGS.model)
    best.load_weights(ckpt.best_path if os.path.exists(ckpt.best_path) else ckpt.last_path)
    out_h5 = os.path.join(FLAGS.output, f"{FLAGS.model}.h5")
    write_atomic(out_h5, lambda tmp: best.save(tmp, include_optimizer=False, save_format="h5"))

    epoch_seconds = [h["epoch_seconds"] for h in ckpt.history if "epoch_seconds" in h]
    report = {
        "model": FLAGS.model,
        "params": best.count_params(),
        "dataset": ds.info(),
        "test_accuracy": test_accuracy(best, ds),
        "test_slice": f"the first {SLICE} test examples in file order",
        f"test_accuracy_first{SLICE}": accuracy(best, ds.features("test", slice(0, SLICE)),
                                                ds.labels("test", slice(0, SLICE))),
        "val_accuracy_best": ckpt.best,
        "val_accuracy_final": final_val,
        "selection": "weights of the epoch with the best validation accuracy",
        "seed": FLAGS.seed,
        "epochs": cfg["epochs"],
        "config": cfg,
        "epoch_seconds_median": float(np.median(epoch_seconds)) if epoch_seconds else None,
        "train_seconds_total": float(np.sum(epoch_seconds)),
        "history": ckpt.history,
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "machine": machine(),
        "strategy": FLAGS.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "note": FLAGS.note,
    }
    write_atomic(os.path.join(FLAGS.output, f"{FLAGS.model}.json"),
                 lambda tmp: write_text(tmp, json.dumps(report, indent=1) + "\n"))
    logging.info("test accuracy %.4f (first %d: %.4f), best val %.4f -> %s", report["test_accuracy"],
                 SLICE, report[f"test_accuracy_first{SLICE}"], ckpt.best, out_h5)


if __name__ == "__main__":
    from tfq_tiny import cli

    cli.run(main)
