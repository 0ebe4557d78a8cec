"""Quickstart: quantize a shipped float model on real data at W8A8 and W4A4 and compare.

Defaults need no flags: the UCI-HAR 1D-CNN checkpoint shipped in the package and the
offline HAR data (TFQ_DATA_DIR or ../shared/data). Prints float vs quantized test accuracy
for each policy and init method, and the per-layer statistics (MACs, BOPs, FLASH, RAM).

    python examples/quickstart.py
    python examples/quickstart.py --model=res8 --policies=w8a8,w4a4,w2a8
"""
import os
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "cnn1d", "Shipped model: cnn1d, res8, ds_cnn or mobilenet_v1.")
flags.DEFINE_string("data_dir", None, "Data directory (default: $TFQ_DATA_DIR or ../shared/data).")
flags.DEFINE_list("policies", ["w8a8", "w4a4"], "Bit policies (shorthands) to try.")
flags.DEFINE_list("inits", ["minmax", "mse"], "Range initialisations to compare.")
flags.DEFINE_integer("calibration_samples", 1024, "Unlabeled training samples for calibration.")
flags.DEFINE_integer("seed", 0, "Seed of the calibration draw.")
flags.DEFINE_integer("test_samples", 0, "Evaluate on the first N test samples (0 = all).")
flags.DEFINE_string("output", None, "Optional JSON file for the results.")


def main(argv):
    del argv
    import tfq_tiny
    from tfq_tiny.io import atomic_write_json
    from tfq_tiny import data, models
    from tfq_tiny._compat import keras
    from tfq_tiny.analysis import model_statistics
    from tfq_tiny.evaluate import accuracy

    path = models.checkpoint_path(FLAGS.model)
    if not os.path.exists(path):
        raise app.UsageError(f"No shipped checkpoint for '{FLAGS.model}' at {path}; train one with "
                             f"examples/train.py --model={FLAGS.model}.")
    model = keras.models.load_model(path, compile=False)
    dataset = data.load(models.DATASET_OF[FLAGS.model], data_dir=FLAGS.data_dir, seed=FLAGS.seed)
    x_test, y_test = dataset.x_test, dataset.y_test
    if FLAGS.test_samples:
        x_test, y_test = x_test[:FLAGS.test_samples], y_test[:FLAGS.test_samples]
    calib = dataset.calibration(FLAGS.calibration_samples, seed=FLAGS.seed)
    print(f"model {FLAGS.model} on {dataset.name}: {len(x_test)} test samples, "
          f"{len(calib)} calibration samples (seed {FLAGS.seed})")
    float_acc = accuracy(model, x_test, y_test)
    print(f"float accuracy: {float_acc:.2f}%")
    results = {"model": FLAGS.model, "dataset": dataset.name, "float_accuracy": float_acc,
               "test_samples": len(x_test), "calibration_samples": len(calib),
               "seed": FLAGS.seed, "runs": []}
    last = None
    for policy in FLAGS.policies:
        for init in FLAGS.inits:
            start = time.time()
            qmodel = tfq_tiny.quantize_model(model, policy, calibration_data=calib, init=init)
            acc = accuracy(qmodel, x_test, y_test)
            print(f"{policy.upper():>6} init={init:<6} accuracy {acc:6.2f}% "
                  f"(drop {float_acc - acc:+.2f}) in {time.time() - start:.1f}s")
            results["runs"].append({"policy": policy, "init": init, "accuracy": acc})
            last = (policy, qmodel)
    print(f"\nFloat model statistics:\n{model_statistics(model).table()}")
    if last is not None:
        print(f"\n{last[0].upper()} model statistics:\n{model_statistics(last[1]).table()}")
    if FLAGS.output:
        atomic_write_json(FLAGS.output, results)
        print(f"results written to {FLAGS.output}")


if __name__ == "__main__":
    from tfq_tiny import cli
    from tfq_tiny.models import MODELS

    cli.check_choices("model", MODELS)
    cli.check_policies("policies")
    cli.run(main)
