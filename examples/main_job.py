"""The main job, end to end on an embedded default: float model -> best PTQ pipeline at W4A4 ->
packed TFLite export -> bit-exact integer runs -> accuracy, FLASH, RAM and BOPs vs int8 and float.

    python examples/main_job.py                          # UCI-HAR 1D-CNN, shipped checkpoint
    python examples/main_job.py --model=res8 --iterations=10000

The W8A8 export runs on the real TFLM interpreter (pip tflite-micro) and on our NumPy shim,
which must agree on every output element; the W4A4 export uses tfq_tiny's packed TFQ_* custom
operators (which the pip TFLM build cannot load), so there the shim's NumPy kernels are checked
against the tflm_ext C++ kernels element for element. Files go to --output.
"""
import os
import sys
import time

from absl import flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "cnn1d", "Shipped benchmark model.")
flags.DEFINE_string("data_dir", None, "Data directory (default: $TFQ_DATA_DIR or ../shared/data).")
flags.DEFINE_string("policy", "w4a4", "Low-bit policy for the PTQ pipeline.")
flags.DEFINE_enum("optimize", "round", ["none", "qparam", "weights", "bits", "round"],
                  "Step 3 optimiser (default: AdaRound, the study's best).")
flags.DEFINE_integer("iterations", 2000, "Reconstruction iterations per layer (paper: 10000).")
flags.DEFINE_integer("bias_tuning_iterations", 500, "Bias tuning iterations (paper preset: 2000).")
flags.DEFINE_integer("calibration_samples", 1024, "Unlabeled calibration samples.")
flags.DEFINE_integer("eval_samples", 1000,
                     "Test samples (a seeded random subset) for the integer runs (0 = all).")
flags.DEFINE_integer("seed", 0, "Seed of the calibration draw and the optimisation.")
flags.DEFINE_string("output", "outputs/main_job", "Directory for the models and the report.")


def _equal_elements(a, b):
    import numpy as np

    return int(np.sum(np.asarray(a) == np.asarray(b))), int(np.asarray(a).size)


def main(argv):
    del argv
    import numpy as np

    import tfq_tiny
    from tfq_tiny import data, models
    from tfq_tiny._compat import keras
    from tfq_tiny.analysis import model_statistics
    from tfq_tiny.evaluate import accuracy
    from tfq_tiny.export import converter, device
    from tfq_tiny.io import atomic_write, atomic_write_json
    from tfq_tiny.ptq import PTQConfig, PTQPipeline
    from tfq_tiny.runtime.interpreter import Interpreter
    from tfq_tiny.runtime.tflm import run_tflm

    logging.set_verbosity(logging.WARNING)
    start = time.time()
    model = keras.models.load_model(models.checkpoint_path(FLAGS.model), compile=False)
    dataset = data.load(models.DATASET_OF[FLAGS.model], data_dir=FLAGS.data_dir, seed=FLAGS.seed)
    calib = dataset.calibration(FLAGS.calibration_samples, seed=FLAGS.seed)
    n = min(FLAGS.eval_samples or len(dataset.y_test), len(dataset.y_test))
    pick = np.sort(np.random.default_rng(FLAGS.seed).choice(len(dataset.y_test), n, replace=False))
    x_eval, y_eval = dataset.x_test[pick], dataset.y_test[pick]
    print(f"[1/4] float {FLAGS.model} on {dataset.name}: {len(calib)} calibration samples, "
          f"{len(dataset.y_test)} test samples ({n} for the integer runs)")

    print(f"[2/4] PTQ: W8A8 (MSE ranges) and {FLAGS.policy.upper()} with the best pipeline "
          f"(CLE, MSE init, layer-wise {FLAGS.optimize}, bias tuning)")
    int8_model = tfq_tiny.quantize_model(model, "w8a8", calibration_data=calib)
    config = PTQConfig(optimize=FLAGS.optimize, iterations=FLAGS.iterations,
                       bias_tuning_iterations=FLAGS.bias_tuning_iterations, seed=FLAGS.seed)
    low_model = PTQPipeline(config).run(model, calib, FLAGS.policy)

    print("[3/4] export to TFLite and run the integer models")
    rows = {}
    for name, qmodel in (("W8A8", int8_model), (FLAGS.policy.upper(), low_model)):
        model_bytes = converter.to_tflite(qmodel)
        path = os.path.join(FLAGS.output, f"{FLAGS.model}_{name.lower()}.tflite")
        atomic_write(path, model_bytes)
        xs = converter.quantize_input(model_bytes, x_eval)
        shim_out = Interpreter(model_content=model_bytes).run(xs)[0]
        custom = any(op.startswith("CUSTOM") for _, op in Interpreter(
            model_content=model_bytes).operators)
        if custom:
            other = Interpreter(model_content=model_bytes, kernels="native").run(xs)[0]
            check = ("shim NumPy == tflm_ext C++", *_equal_elements(shim_out, other))
        else:
            check = ("shim == TFLM (pip tflite-micro)", *_equal_elements(shim_out, run_tflm(
                model_bytes, xs)))
        stats = model_statistics(qmodel)
        rows[name] = dict(
            path=path, bytes=len(model_bytes), check=check,
            fake_acc=accuracy(qmodel, dataset.x_test, dataset.y_test),
            int_acc=100.0 * float(np.mean(np.argmax(shim_out, -1) == y_eval)),
            fake_acc_eval=accuracy(qmodel, x_eval, y_eval),
            flash=stats.weight_bytes, ram=stats.peak_activation_bytes, bops=stats.bops)
    float_stats = model_statistics(model)
    float_acc = accuracy(model, dataset.x_test, dataset.y_test)
    quant_path = os.path.join(FLAGS.output, f"{FLAGS.model}_{FLAGS.policy}_quantized.h5")
    tfq_tiny.save_model(low_model, quant_path)
    low_path = rows[FLAGS.policy.upper()]["path"]
    firmware = device.write_device_sources(
        open(low_path, "rb").read(), os.path.join(FLAGS.output, "firmware"),
        os.path.splitext(os.path.basename(low_path))[0])

    print(f"[4/4] results ({time.time() - start:.0f} s)\n")
    head = (f"{'model':<8}{'acc %':>8}{'int acc %':>11}{'FLASH kB':>10}{'.tflite kB':>11}"
            f"{'RAM kB':>9}{'BOPs (M)':>10}")
    print(head + "\n" + "-" * len(head))
    print(f"{'float':<8}{float_acc:>8.2f}{'-':>11}{float_stats.weight_bytes / 1024:>10.1f}{'-':>11}"
          f"{float_stats.peak_activation_bytes / 1024:>9.1f}{float_stats.bops / 1e6:>10.1f}")
    for name, r in rows.items():
        print(f"{name:<8}{r['fake_acc']:>8.2f}{r['int_acc']:>11.2f}{r['flash'] / 1024:>10.1f}"
              f"{r['bytes'] / 1024:>11.1f}{r['ram'] / 1024:>9.1f}{r['bops'] / 1e6:>10.1f}")
    low = rows[FLAGS.policy.upper()]
    print(f"\n'acc' = fake-quant model on all {len(dataset.y_test)} test samples; 'int acc' = the "
          f"exported integer model on {n} of them drawn with seed {FLAGS.seed} (fake-quant on the same: "
          + ", ".join(f"{k} {r['fake_acc_eval']:.2f}" for k, r in rows.items()) + ").")
    for name, r in rows.items():
        label, same, total = r["check"]
        print(f"{name}: {label}: {same}/{total} output elements identical")
    print(f"{FLAGS.policy.upper()} vs int8: FLASH x{rows['W8A8']['flash'] / low['flash']:.2f} smaller,"
          f" RAM x{rows['W8A8']['ram'] / low['ram']:.2f}, BOPs x{rows['W8A8']['bops'] / low['bops']:.1f};"
          f" vs float: FLASH x{float_stats.weight_bytes / low['flash']:.1f}, "
          f"RAM x{float_stats.peak_activation_bytes / low['ram']:.1f}")
    report = {"command": " ".join(sys.argv), "model": FLAGS.model, "dataset": dataset.name,
              "float": {"accuracy": float_acc, "flash": float_stats.weight_bytes,
                        "ram": float_stats.peak_activation_bytes, "bops": float_stats.bops},
              "exports": rows, "ptq_config": config.get_config(), "seconds": time.time() - start}
    atomic_write_json(os.path.join(FLAGS.output, "report.json"), report)
    print("files: " + ", ".join([r["path"] for r in rows.values()] +
                                [quant_path, os.path.join(FLAGS.output, "report.json")]))
    print("firmware sources (C array, operator registrations, arena head; "
          "tflm_ext/README.md says how to build them with TFLM): " + ", ".join(firmware))


if __name__ == "__main__":
    from tfq_tiny import cli
    from tfq_tiny.models import MODELS

    cli.check_choices("model", MODELS)
    cli.check_policies("policy")
    cli.run(main)
