"""TFLM arena RAM (activations + scratch) of the benchmark checkpoints: int8 vs W4A4 exports.

For every committed float checkpoint: quantize with 1024 calibration samples (training split,
--seed) to W8A8 and to W4A4 (``tfq_tiny.quantize_model`` defaults), export both with
``tfq_tiny.export.to_tflite``, and report the non-persistent arena ("head": activation tensors and
kernel scratch buffers, as TFLM's greedy planner lays them out):

- int8, real TFLM: ``tflm_arena_usage`` (the pip tflite-micro interpreter's allocation recorder);
- int8, ours: ``tfq_tiny.export.arena.plan_arena``, our model of TFLM's planner (must be equal);
- W4A4 before: ``plan_arena`` of the W4A4 export made by the converter of commit --before, which
  declared packed activations at their logical shape (one byte per element);
- W4A4 now: ``plan_arena`` of today's W4A4 export (packed activations declared at their byte
  size). The pip interpreter cannot load TFQ_* operators, so there is no real-TFLM figure for it.

The issue's bar: W4A4 head <= 1.1 x 0.5 x int8 head (TFLM's figure).

    python examples/arena_check.py                   # all four checkpoints
    python examples/arena_check.py --models=cnn1d,ds_cnn

Writes a Markdown table (with the command, seed and machine) to --output, atomically.
"""
import os
import platform
import shlex
import subprocess
import sys
import time
import types

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["cnn1d", "ds_cnn", "res8", "mobilenet_v1"], "Benchmark models to check.")
flags.DEFINE_string("data_dir", None, "Data directory (default: $TFQ_DATA_DIR or ../shared/data).")
flags.DEFINE_integer("calibration_samples", 1024, "Training samples for calibration.")
flags.DEFINE_integer("seed", 0, "Seed of the calibration draw.")
flags.DEFINE_string("before", "e956eef",
                    "Commit whose converter declared packed activations at their logical shape.")
flags.DEFINE_integer("arena_size", 4 << 20, "Arena given to the TFLM interpreter (bytes).")
flags.DEFINE_string("output", os.path.join("results", "arena.md"), "Markdown file to write.")

PROVISIONAL = {"res8": "checkpoint being retrained; the arena depends only on shapes and bit widths, "
                       "which do not change"}
BAR = 1.1 * 0.5


def converter_at(commit):
    """The converter module as of ``commit`` (its source from git, run against today's package)."""
    source = subprocess.check_output(["git", "show", f"{commit}:tfq_tiny/export/converter.py"], cwd=REPO)
    module = types.ModuleType(f"tfq_tiny_converter_{commit}")
    exec(compile(source, f"{commit}:tfq_tiny/export/converter.py", "exec"), module.__dict__)
    return module


def check(name, model, calib, before):
    import tfq_tiny
    from tfq_tiny.export.arena import plan_arena
    from tfq_tiny.runtime.interpreter import Interpreter
    from tfq_tiny.search.memory import tflm_arena_usage

    int8 = tfq_tiny.export.to_tflite(tfq_tiny.quantize_model(model, "w8a8", calibration_data=calib))
    w4a4_model = tfq_tiny.quantize_model(model, "w4a4", calibration_data=calib)
    w4a4 = tfq_tiny.export.to_tflite(w4a4_model)
    Interpreter(model_content=w4a4)  # the shim prepares (validates) every operator of the new layout
    plan = plan_arena(w4a4)
    row = {"model": name, "int8_tflm": tflm_arena_usage(int8, arena_size=FLAGS.arena_size)["head"],
           "int8_ours": plan_arena(int8)["head"], "w4a4": plan["head"],
           "scratch": sum(b["size"] for b in plan["buffers"] if b["tensor"] is None)}
    try:
        row["before"] = plan_arena(before.to_tflite(w4a4_model))["head"]
    except Exception as exc:  # the old converter may no longer run against today's package
        row["before"] = None
        row["before_error"] = f"{type(exc).__name__}: {exc}"[:200]
    row["ratio"] = row["w4a4"] / row["int8_tflm"]
    row["meets"] = row["w4a4"] <= BAR * row["int8_tflm"]
    return row


def markdown(rows, skipped, command, elapsed):
    import tensorflow as tf

    lines = [
        "# TFLM arena RAM of the benchmark exports: int8 vs W4A4 (packed activations)",
        "",
        f"Command: `{command}`  ",
        f"Seed {FLAGS.seed}: {FLAGS.calibration_samples} calibration samples (training split); "
        "quantization: tfq_tiny.quantize_model defaults. The arena figures depend only on the "
        "graph's shapes and bit widths, not on the weights.  ",
        f"Machine: {platform.machine()} ({platform.processor() or 'cpu'}), {os.cpu_count()} cores "
        f"(shared), Python {platform.python_version()}, TensorFlow {tf.__version__}; "
        f"wall time {elapsed / 60:.1f} min.",
        "",
        "*Head* = TFLM's non-persistent arena: activation tensors and kernel scratch buffers, each "
        "rounded up to 16 bytes and overlaid by TFLM's greedy planner (the persistent tail - tensor "
        "structs, quantization parameters, op data - is not included). *TFLM*: the pip tflite-micro "
        "interpreter's allocation recorder (`tfq_tiny.search.memory.tflm_arena_usage`); *ours*: "
        "`tfq_tiny.export.arena.plan_arena`, a model of TFLM's planner, used for the W4A4 exports "
        "because the pip interpreter cannot load TFQ_* operators. *Before*: the W4A4 export of the "
        f"converter at commit `{FLAGS.before}`, which declared packed activations at their logical "
        "shape (TFLM reserved one byte per element). Bar (issue 6): W4A4 <= 1.1 x 0.5 x int8.",
        "",
        "| model | int8 head, TFLM (B) | int8 head, ours (B) | W4A4 head before (B) | W4A4 head now (B) "
        "| W4A4 / int8 | target 0.5 x int8 (B) | bar 0.55 x int8 (B) | meets bar |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        before = "n/a" if r["before"] is None else f"{r['before']}"
        name = r["model"] + (" (provisional)" if r["model"] in PROVISIONAL else "")
        lines.append(
            f"| {name} | {r['int8_tflm']} | {r['int8_ours']} | {before} | {r['w4a4']} "
            f"| {r['ratio']:.3f} | {r['int8_tflm'] / 2:.0f} | {BAR * r['int8_tflm']:.0f} "
            f"| {'yes' if r['meets'] else 'NO'} |")
    lines.append("")
    mismatched = [r["model"] for r in rows if r["int8_tflm"] != r["int8_ours"]]
    lines.append("Planner check: our plan of the int8 exports equals TFLM's head on "
                 + ("every model." if not mismatched else f"all but {', '.join(mismatched)}."))
    scratch = [r["model"] for r in rows if r["scratch"]]
    lines.append("W4A4 exports request no scratch buffers (TFQ_* operators keep none)"
                 + (f", except {', '.join(scratch)}." if scratch else "."))
    for r in rows:
        if r["model"] in PROVISIONAL:
            lines.append(f"{r['model']}: {PROVISIONAL[r['model']]}.")
        if r.get("before_error"):
            lines.append(f"{r['model']}: the converter of {FLAGS.before} failed: {r['before_error']}")
    if skipped:
        lines += ["", "Skipped (no checkpoint yet): " + ", ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    from tfq_tiny import data, models
    from tfq_tiny._compat import keras
    from tfq_tiny.io import atomic_write

    start = time.time()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    before = converter_at(FLAGS.before)
    rows, skipped = [], []
    for name in FLAGS.models:
        path = models.checkpoint_path(name)
        if not os.path.exists(path):
            print(f"{name}: no checkpoint at {path}; skipped.")
            skipped.append(name)
            continue
        model = keras.models.load_model(path, compile=False)
        dataset = data.load(models.DATASET_OF[name], data_dir=FLAGS.data_dir, seed=FLAGS.seed)
        row = check(name, model, dataset.calibration(FLAGS.calibration_samples, FLAGS.seed), before)
        rows.append(row)
        print(" | ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
              flush=True)
    if not rows:
        raise app.UsageError(f"no checkpoint found for {FLAGS.models}; nothing checked.")
    atomic_write(FLAGS.output, markdown(rows, skipped, command, time.time() - start))
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    from tfq_tiny import cli
    from tfq_tiny.models import MODELS

    cli.check_choices("models", MODELS)
    cli.run(main)
