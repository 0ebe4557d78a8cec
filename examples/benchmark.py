"""Benchmark sweep of the PTQ pipeline: models x bit widths x optimisers x seeds.

Every cell is one PTQ run (``PTQPipeline`` with the study's best pipeline unless flags say
otherwise) recorded as a JSON line in ``<output>/runs.jsonl`` (config, seed, accuracy, wall
time, machine). Finished cells are skipped when re-run, so an interrupted sweep resumes;
``--workers`` runs cells in parallel processes. The Markdown table (the paper's Table 2
layout, mean +- std over seeds) is rewritten atomically after every cell.

    python examples/benchmark.py --models=cnn1d,res8 --bits=w4a4 \
        --optimize=none,qparam,weights,bits,round --seeds=0 --output=results/ptq_w4a4
"""
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from absl import app, flags

from tfq_tiny.io import atomic_write

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["cnn1d"], "Benchmark models (shipped checkpoints).")
flags.DEFINE_list("bits", ["w8a8", "w4a8", "w4a4", "w3a3", "w2a2"], "Bit policies (shorthands).")
flags.DEFINE_list("optimize", ["round"], "Step 3 optimisers: none, qparam, weights, bits, round.")
flags.DEFINE_list("granularity", ["layer"], "layer and/or block.")
flags.DEFINE_list("seeds", ["0"], "Seeds (calibration draw and optimisation).")
flags.DEFINE_enum("preset", "paper", ["paper", "fast"], "Iteration preset.")
flags.DEFINE_integer("iterations", None, "Override iterations per unit.")
flags.DEFINE_bool("bias_tuning", True, "Step 4 bias tuning.")
flags.DEFINE_enum("preprocess", "cle", ["none", "bn_fold", "cle"], "Step 1.")
flags.DEFINE_enum("init", "mse", ["minmax", "mse"], "Step 2 (weights and activations).")
flags.DEFINE_integer("calibration_samples", 1024, "Calibration samples.")
flags.DEFINE_integer("test_samples", 0, "Evaluate on the first N test samples (0 = all).")
flags.DEFINE_string("data_dir", None, "Data directory.")
flags.DEFINE_integer("workers", 1, "Parallel worker processes.")
flags.DEFINE_string("output", "results/benchmark", "Output directory.")


def _cell_key(cell):
    return "|".join(str(cell[k]) for k in ("model", "bits", "optimize", "granularity", "seed",
                                           "preset", "bias_tuning", "preprocess", "init"))


def run_cell(cell):
    """One PTQ run in a fresh process: returns the JSON record."""
    import tfq_tiny  # noqa: F401
    from tfq_tiny import data, models
    from tfq_tiny._compat import keras
    from tfq_tiny.evaluate import accuracy
    from tfq_tiny.ptq import PTQConfig, PTQPipeline

    model = keras.models.load_model(models.checkpoint_path(cell["model"]), compile=False)
    dataset = data.load(models.DATASET_OF[cell["model"]], data_dir=cell["data_dir"],
                        seed=cell["seed"])
    x_test, y_test = dataset.x_test, dataset.y_test
    if cell["test_samples"]:
        x_test, y_test = x_test[:cell["test_samples"]], y_test[:cell["test_samples"]]
    overrides = dict(optimize=cell["optimize"], granularity=cell["granularity"],
                     bias_tuning=cell["bias_tuning"], preprocess=cell["preprocess"],
                     weight_init=cell["init"], activation_init=cell["init"], seed=cell["seed"])
    if cell["iterations"] is not None:
        overrides["iterations"] = cell["iterations"]
    config = PTQConfig.preset(cell["preset"], **overrides)
    calib = dataset.calibration(cell["calibration_samples"], seed=cell["seed"])
    float_acc = accuracy(model, x_test, y_test)
    start = time.time()
    pipeline = PTQPipeline(config, progress=False)
    qmodel = pipeline.run(model, calib, cell["bits"])
    seconds = time.time() - start
    quant_acc = accuracy(qmodel, x_test, y_test)
    return {**{k: v for k, v in cell.items() if k != "data_dir"}, "key": _cell_key(cell),
            "dataset": dataset.name, "config": config.get_config(),
            "float_accuracy": float_acc, "accuracy": quant_acc, "drop": float_acc - quant_acc,
            "ptq_seconds": seconds, "test_samples_used": len(y_test),
            "units": pipeline.history,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}


def load_runs(path):
    runs = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                runs[record["key"]] = record
    return runs


def markdown_table(runs, command):
    """Table-2 layout: one row per (model, optimiser, granularity), one column per bit policy."""
    import numpy as np

    cells = {}
    for r in runs:
        cells.setdefault((r["model"], r["optimize"], r["granularity"]), {}).setdefault(
            r["bits"], []).append(r)
    bits = sorted({r["bits"] for r in runs}, key=lambda b: (-int(b[1:b.index("a")]), b))
    lines = [f"Command: `{command}`", "",
             "| model | float | optimize | granularity | " + " | ".join(b.upper() for b in bits)
             + " |", "|---" * (4 + len(bits)) + "|"]
    for (model, optimize, gran), by_bits in sorted(cells.items()):
        first = next(iter(by_bits.values()))[0]
        row = [model, f"{first['float_accuracy']:.2f}", optimize, gran]
        for b in bits:
            accs = [r["accuracy"] for r in by_bits.get(b, [])]
            secs = [r["ptq_seconds"] for r in by_bits.get(b, [])]
            if not accs:
                row.append("")
            elif len(accs) == 1:
                row.append(f"{accs[0]:.2f} ({secs[0]:.0f}s)")
            else:
                row.append(f"{np.mean(accs):.2f} +- {np.std(accs):.2f} (n={len(accs)})")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Accuracy in % on the full test split unless test_samples says otherwise; "
              "(s) = PTQ wall time of the run on this machine."]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    os.makedirs(FLAGS.output, exist_ok=True)
    runs_path = os.path.join(FLAGS.output, "runs.jsonl")
    done = load_runs(runs_path)
    cells = [dict(model=m, bits=b, optimize=o, granularity=g, seed=int(s), preset=FLAGS.preset,
                  bias_tuning=FLAGS.bias_tuning, preprocess=FLAGS.preprocess, init=FLAGS.init,
                  iterations=FLAGS.iterations, calibration_samples=FLAGS.calibration_samples,
                  test_samples=FLAGS.test_samples, data_dir=FLAGS.data_dir)
             for m in FLAGS.models for b in FLAGS.bits for o in FLAGS.optimize
             for g in FLAGS.granularity for s in FLAGS.seeds
             if not (o == "bits" and g == "block")]
    todo = [c for c in cells if _cell_key(c) not in done]
    command = "python " + " ".join(sys.argv)
    print(f"{len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run")

    def record(result):
        done[result["key"]] = result
        with open(runs_path, "a") as f:
            f.write(json.dumps(result) + "\n")
        atomic_write(os.path.join(FLAGS.output, "table.md"),
                      markdown_table(list(done.values()), command))
        print(f"[{len(done)}/{len(cells)}] {result['model']} {result['bits']} "
              f"{result['optimize']}/{result['granularity']} seed {result['seed']}: "
              f"{result['accuracy']:.2f}% (float {result['float_accuracy']:.2f}) "
              f"in {result['ptq_seconds']:.0f}s", flush=True)

    if FLAGS.workers > 1:
        with ProcessPoolExecutor(FLAGS.workers) as pool:
            for result in pool.map(run_cell, todo):
                record(result)
    else:
        for cell in todo:
            record(run_cell(cell))


if __name__ == "__main__":
    app.run(main)
