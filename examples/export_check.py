"""Export the benchmark checkpoints and check the integer models against everything we have.

For every committed float checkpoint (tfq_tiny/models/checkpoints/<model>.h5; models without one
are skipped with a message), quantize with each policy (calibration: 1024 training samples drawn
with --seed), export with tfq_tiny.export.converter.to_tflite, and measure on --num_samples test
samples:

- TFLM vs shim: identical output elements, real TFLM interpreter (pip tflite-micro) against the
  NumPy shim, for exports made of TFLM builtins only (int8, and W4A8 whose 4-bit Dense is written
  as a 1x1 CONV_2D);
- shim NumPy vs native: identical output elements with the TFQ_* operators run on the NumPy
  reference kernels and on the tflm_ext C++ kernels;
- fake quant vs integer: share of output elements equal, and within one output quantization
  step, end to end, and the smallest per-layer share of equal outputs when each fake-quant layer
  gets the integer model's own inputs (layer_agreement on --layer_samples samples);
- top-1 accuracy of the fake-quant Keras model and of the integer model (same samples);
- flatbuffer size against the ideal (weights at their bit width + int32 biases + float32
  per-channel scales), the size rule (``SIZE_RULE``) and where the bytes go
  (``tfq_tiny.export.size_report``).

    python examples/export_check.py                       # all checkpoints that exist
    python examples/export_check.py --models=cnn1d --num_samples=2996
    python examples/export_check.py --size_only           # sizes only (~2 min), printed

Every (model, policy) row is appended to ``<output stem>.jsonl`` as soon as it is measured, keyed
by model, policy, float checkpoint (SHA-256 prefix), the sample settings and the converter's
LAYOUT_VERSION, so an interrupted check resumes, a retrained checkpoint re-runs only its own rows
and a new export layout re-runs them all. The Markdown table (with the command, seed, sample
counts and machine) is rewritten atomically after every row. ``--size_only`` quantizes and exports
every cell with the same calibration, prints the size table and writes nothing. Rows recorded
before the stripped size (``strip_strings=True``) was measured get it by a re-export.
"""
import json
import os
import platform
import shlex
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["cnn1d", "ds_cnn", "res8", "mobilenet_v1"], "Benchmark models to check.")
flags.DEFINE_string("data_dir", None, "Data directory (default: $TFQ_DATA_DIR or ../shared/data).")
flags.DEFINE_list("policies", ["int8", "w4a8", "w4a4", "mixed"],
                  "Policies: int8 (= w8a8), any shorthand such as w4a8/w4a4/w2a2, or mixed.")
flags.DEFINE_integer("num_samples", 1000, "Test samples for every comparison and the accuracies.")
flags.DEFINE_integer("layer_samples", 64, "Test samples for the per-layer agreement check.")
flags.DEFINE_integer("calibration_samples", 1024, "Training samples for calibration.")
flags.DEFINE_integer("seed", 0, "Seed of the calibration draw and of the test-sample draw.")
flags.DEFINE_string("output", os.path.join("results", "export_check.md"), "Markdown file to write.")
flags.DEFINE_bool("size_only", False, "Only export every cell and print its size table (no checks, "
                  "no files written).")

MIXED_DESCRIPTION = ("mixed: W4A4 default; the input and the first layer's weights 8-bit; the "
                     "largest layer's weights 2-bit; logits 8-bit")
SIZE_RULE = (0.03, 4096)
"""A flatbuffer meets the size rule when size <= (1 + 0.03) * ideal + 4096 bytes."""
SIZE_CATEGORIES = ("constants", "quantization", "shapes", "names", "options", "metadata", "structure", "padding")


def mixed_policy(model):
    """A 2/4/8-bit policy for any model: see MIXED_DESCRIPTION."""
    from tfq_tiny import BitPolicy
    from tfq_tiny.quantization.configs import weight_attr

    weighted = [layer for layer in model.layers if weight_attr(layer) is not None]
    largest = max(weighted, key=lambda layer: layer.count_params())
    policy = BitPolicy.uniform(4, 4).with_override(model.input_names[0], activation_bits=8)
    policy = policy.with_override(weighted[0].name, weight_bits=8)
    return policy.with_override(largest.name, weight_bits=2)


def ideal_bytes(qmodel):
    """Weights at their bits + int32 biases + float32 per-channel scales (analysis' FLASH)."""
    from tfq_tiny.analysis import model_statistics

    return model_statistics(qmodel).weight_bytes


def export(model, policy_name, calib):
    """(quantized model, flatbuffer) of one cell."""
    import tfq_tiny

    policy = {"int8": "w8a8", "mixed": mixed_policy(model)}.get(policy_name, policy_name)
    qmodel = tfq_tiny.quantize_model(model, policy, calibration_data=calib)
    return qmodel, to_tflite(qmodel, policy_name)


def to_tflite(qmodel, policy_name, **options):
    """The cell's flatbuffer; W4A8 writes its 4-bit Dense as a 1x1 CONV_2D (TFLM builtins only)."""
    from tfq_tiny.export import converter

    dense_int4 = "conv_1x1" if policy_name == "w4a8" else "custom"
    return converter.to_tflite(qmodel, dense_int4=dense_int4, **options)


def size_row(name, policy_name, qmodel, model_bytes):
    """The size columns of a row: bytes, ideal, the size report's categories, and the bytes of
    the same model exported with ``strip_strings=True`` (no names: what a device needs)."""
    from tfq_tiny.export import size_report, strip_strings

    return {"model": name, "policy": policy_name.upper() if policy_name != "mixed" else "mixed",
            "size": len(model_bytes), "ideal": ideal_bytes(qmodel), "size_report": size_report(model_bytes),
            "size_stripped": len(strip_strings(model_bytes))}


def check(name, model, policy_name, calib, x_test, y_test, float_acc):
    import numpy as np

    from tfq_tiny.export import converter
    from tfq_tiny.runtime.interpreter import Interpreter
    from tfq_tiny.runtime.tflm import run_litert, run_tflm

    qmodel, model_bytes = export(model, policy_name, calib)
    meta = converter.read_metadata(model_bytes)
    shim = Interpreter(model_content=model_bytes)
    ops = [op for _, op in shim.operators]
    custom = sum(op.startswith("CUSTOM") for op in ops)
    xs = converter.quantize_input(meta, x_test)
    ours = shim.run(xs)[0]
    row = dict(size_row(name, policy_name, qmodel, model_bytes), ops=f"{len(ops) - custom} / {custom}",
               float_acc=float_acc)
    if custom:
        row["tflm"] = row["litert"] = "n/a (TFQ ops)"
        native = Interpreter(model_content=model_bytes, kernels="native").run(xs)[0]
        row["native"] = f"{int(np.sum(native == ours))}/{ours.size}"
    else:
        tflm = run_tflm(model_bytes, xs)
        row["tflm"] = f"{int(np.sum(tflm == ours))}/{ours.size}"
        litert = run_litert(to_tflite(qmodel, policy_name, litert_compatible=True), xs)
        row["litert"] = f"{int(np.sum(litert == ours))}/{ours.size}"
        if not np.array_equal(litert, ours):
            row["litert"] += f" (max diff {int(np.abs(litert.astype(int) - ours).max())})"
        row["native"] = "n/a (builtins only)"
    fake = qmodel.predict(x_test, batch_size=256, verbose=0)
    step = np.float32(meta["outputs"][0]["scale"])
    integer = converter.dequantize_output(meta, ours)
    row["within"] = 100.0 * float(np.mean(np.abs(integer - fake) <= step * (1 + 1e-4)))
    row["exact"] = 100.0 * float(np.mean(np.abs(integer - fake) <= step * 0.5))
    layers = converter.layer_agreement(qmodel, model_bytes, x_test[:FLAGS.layer_samples])
    differing = {name: round((1 - v["exact"]) * v["elements"]) for name, v in layers.items()}
    worst = min(layers.items(), key=lambda kv: kv[1]["exact"])
    row["layers"] = (f"100 (all {len(layers)} layers)" if not any(differing.values()) else
                     f"{100 * worst[1]['exact']:.4f} ({worst[0]}; {sum(differing.values())} of "
                     f"{sum(v['elements'] for v in layers.values())} outputs differ)")
    row["fake_acc"] = 100.0 * float(np.mean(fake.argmax(-1) == y_test))
    row["int_acc"] = 100.0 * float(np.mean(ours.argmax(-1) == y_test))
    return row


def size_margin(row, size="size"):
    """(overhead over the ideal, what SIZE_RULE allows) of a row's ``size`` field, in bytes."""
    share, fixed = SIZE_RULE
    return row[size] - row["ideal"], share * row["ideal"] + fixed


def size_misses(rows):
    """Markdown lines on the cells that miss SIZE_RULE: by how much, per operator, and whether
    the same model exported with ``strip_strings=True`` meets it."""
    share, fixed = SIZE_RULE
    lines = []
    for r in rows:
        over, limit = size_margin(r)
        if over <= limit:
            continue
        ops = sum(int(n) for n in r["ops"].split("/"))
        text = (f"- {r['model']} {r['policy']} misses the rule by {over - limit:.0f} B: {over} B of "
                f"overhead over {ops} operators ({over / ops:.0f} B each), where the rule allows "
                f"{limit:.0f} B ({fixed} B + {share * r['ideal'] / ops:.0f} B per operator). ")
        if "size_stripped" in r:
            stripped, _ = size_margin(r, "size_stripped")
            text += (f"Exported with strip_strings=True it carries {stripped} B: " + (
                "it meets the rule." if stripped <= limit else
                f"still {stripped - limit:.0f} B over, the TFLite tables, vectors and quantization "
                "parameters of each operator and its tensors cost more than 3 % of a layer this small."))
        else:
            text += "(Recorded before stripped sizes were measured.)"
        lines.append(text)
    return (["Cells that miss the size rule:", ""] + lines) if lines else ["Every cell meets the size rule."]


def size_table(rows):
    """Markdown lines: per cell the size, the ideal, the overhead against SIZE_RULE and the
    overhead's categories from tfq_tiny.export.size_report."""
    lines = [
        "| model | policy | size (B) | ideal (B) | overhead (B) | limit (B) | rule met | stripped (B) | "
        "rule met stripped | weights + biases + scales (B) | " + " | ".join(SIZE_CATEGORIES) + " |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(SIZE_CATEGORIES),
    ]
    for r in rows:
        report, (over, limit) = r["size_report"], size_margin(r)
        stored = report["weights"] + report["biases"] + report["scales"]
        stripped = met_stripped = ""
        if "size_stripped" in r:
            stripped = str(r["size_stripped"])
            met_stripped = "yes" if size_margin(r, "size_stripped")[0] <= limit else "**no**"
        lines.append(f"| {r['model']} | {r['policy']} | {r['size']} | {r['ideal']} "
                     f"| {over} ({over / r['ideal']:+.1%}) | {limit:.0f} | {'yes' if over <= limit else '**no**'} "
                     f"| {stripped} | {met_stripped} "
                     f"| {stored} | " + " | ".join(str(report[c]) for c in SIZE_CATEGORIES) + " |")
    return lines


def markdown(rows, skipped, command):
    import tensorflow as tf

    n_test, n_calib = rows[-1]["n_test"], rows[-1]["n_calib"]
    elapsed = sum(r["seconds"] for r in rows)
    commands = list(dict.fromkeys(r.get("command", command) for r in rows))
    lines = [
        "# Export check: integer TFLite models of the benchmark checkpoints",
        "",
        ("Command: " if len(commands) == 1 else "Commands: ")
        + ", ".join(f"`{c}`" for c in commands) + "  ",
        f"Seed {FLAGS.seed}: {n_calib} calibration samples (training split), {n_test} test samples "
        f"(drawn from the test split with the same seed), per-layer check on the first "
        f"{min(FLAGS.layer_samples, n_test)} of them. Quantization: tfq_tiny.quantize_model defaults "
        "(MSE ranges, BN folding + CLE).  ",
        f"Machine: {platform.machine()} ({platform.processor() or 'cpu'}), {os.cpu_count()} cores "
        f"(shared), Python {platform.python_version()}, TensorFlow {tf.__version__}; "
        f"wall time {elapsed / 60:.1f} min (sum over rows). Float checkpoints (SHA-256[:16]): "
        + ", ".join(f"{m} `{c}`" for m, c in dict((r["model"], r["checkpoint"]) for r in rows).items())
        + ".",
        "",
        "Policies: INT8 = W8A8; W4A8 exported with `dense_int4=\"conv_1x1\"` (the 4-bit Dense as a 1x1 "
        f"CONV_2D, so TFLM runs it with builtins only); W4A4; {MIXED_DESCRIPTION}. Model outputs "
        "(logits) are 8-bit in every policy (BitPolicy.output_bits).",
        "",
        "| model | policy | ops builtin / TFQ | TFLM = shim (elements) | LiteRT = shim (elements) "
        "| shim NumPy = C++ (elements) | output exact / within 1 step (%) | per-layer exact, min (%) "
        "| float acc (%) | fake-quant acc (%) | integer acc (%) | Δ acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['policy']} | {r['ops']} | {r['tflm']} | {r.get('litert', 'not run')} | {r['native']} "
            f"| {r['exact']:.2f} / {r['within']:.2f} | {r['layers']} | {r['float_acc']:.2f} | {r['fake_acc']:.2f} "
            f"| {r['int_acc']:.2f} | {r['int_acc'] - r['fake_acc']:+.2f} |")
    lines += [
        "",
        "Columns: *TFLM = shim*, *LiteRT = shim* and *NumPy = C++* count identical output elements "
        "(LiteRT: `tf.lite.Interpreter` on its reference kernels, the same model exported with "
        "`litert_compatible=True`, per-channel zero points, as it requires; where it differs, LiteRT's "
        "reference FULLY_CONNECTED with per-channel int8 weights rounds a few logits one step away "
        "from TFLM's, the rest of the graph being identical (`tests/test_export.py::"
        "test_w4a8_default_dense_is_a_custom_op_and_8bit_dense_stays_builtin` pins it to one step; "
        "W4A8 writes the Dense as a 1x1 CONV_2D and matches LiteRT exactly); *output exact / "
        "within 1 step* compares the integer model's dequantized logits with the fake-quant model's "
        "end to end (exact: the same integer); *per-layer exact* feeds every fake-quant layer the "
        "integer model's own inputs and counts identical outputs (the worst layer); *Δ acc* = "
        "integer - fake-quant accuracy on the same samples.",
        "",
        "## Size",
        "",
        f"Rule: size <= {1 + SIZE_RULE[0]:.2f} x ideal + {SIZE_RULE[1]} B (3 % plus 4 kB of fixed overhead), "
        "*ideal* = weights at their bit width + int32 biases + float32 per-channel filter scales. "
        "The categories come from `tfq_tiny.export.size_report` (every byte counted once; shared "
        "vectors and tables once): *weights + biases + scales* is the stored part of the ideal (less "
        "than the ideal where a zero bias is left out); *constants* = other constant data; "
        "*quantization* = QuantizationParameters tables, activation scales and zero points, one zero "
        "point per filter (TFLM's compact form; `litert_compatible=True` writes them per channel); "
        "*shapes* = tensor shape vectors; *names* = tensor names, custom codes and other strings; "
        "*options* = custom options "
        "(a flexbuffer int vector per TFQ_* operator) and builtin option tables; *metadata* = the "
        "`tfq_tiny` JSON (BitPolicy, versions, input/output grids); *structure* = the other "
        "tables, vtables and index vectors (tensors, operators, buffers); *padding* = alignment "
        "(constant data starts on 16-byte boundaries, as the schema asks). *stripped* = the same "
        "model exported with `strip_strings=True` (no tensor/subgraph names or description, as "
        "TFLite's strip_strings tool; custom codes and metadata stay): the file a device needs.",
        "",
    ] + size_table(rows) + [""] + size_misses(rows)
    if skipped:
        lines += ["", "Skipped (no checkpoint yet): " + ", ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def load(name, path):
    """The float model at ``path``, its dataset and the calibration draw of --seed."""
    from tfq_tiny import data, models
    from tfq_tiny._compat import keras

    model = keras.models.load_model(path, compile=False)
    dataset = data.load(models.DATASET_OF[name], data_dir=FLAGS.data_dir, seed=FLAGS.seed)
    return model, dataset, dataset.calibration(FLAGS.calibration_samples, seed=FLAGS.seed)


def main(argv):
    del argv
    import numpy as np

    from tfq_tiny import models
    from tfq_tiny.evaluate import accuracy

    from benchmark import load_runs
    from tfq_tiny.export import converter
    from tfq_tiny.io import atomic_write, file_sha256

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    rows_path = os.path.splitext(FLAGS.output)[0] + ".jsonl"
    done = load_runs(rows_path)
    rows, skipped = [], []

    def key(name, policy_name, checkpoint):
        return (f"{name}|{policy_name}|{checkpoint}|{FLAGS.num_samples}|{FLAGS.layer_samples}|"
                f"{FLAGS.calibration_samples}|{FLAGS.seed}|layout{converter.LAYOUT_VERSION}")

    for name in FLAGS.models:
        path = models.checkpoint_path(name)
        if not os.path.exists(path):
            print(f"{name}: no checkpoint at {path} yet; skipped.")
            skipped.append(name)
            continue
        checkpoint = file_sha256(path)
        keys = [key(name, p, checkpoint) for p in FLAGS.policies]
        if FLAGS.size_only:
            model, _, calib = load(name, path)
            rows += [size_row(name, p, *export(model, p, calib)) for p in FLAGS.policies]
            continue
        if all(k in done for k in keys):
            rows += [done[k] for k in keys]
            print(f"{name}: all {len(keys)} policies already checked in {rows_path}.")
            continue
        model, dataset, calib = load(name, path)
        count = min(FLAGS.num_samples, dataset.size("test"))
        index = np.sort(np.random.default_rng(FLAGS.seed).choice(dataset.size("test"), count, replace=False))
        x_test = dataset.features("test", index)
        y_test = np.asarray(dataset.y_test)[index]
        n_test, n_calib = count, len(calib)
        float_acc = accuracy(model, x_test, y_test)
        for policy_name, row_key in zip(FLAGS.policies, keys):
            if row_key in done:
                rows.append(done[row_key])
                continue
            start = time.time()
            row = check(name, model, policy_name, calib, x_test, y_test, float_acc)
            row.update(key=row_key, checkpoint=checkpoint, seconds=time.time() - start,
                       n_test=n_test, n_calib=n_calib, command=command)
            with open(rows_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            done[row_key] = row
            rows.append(row)
            atomic_write(FLAGS.output, markdown(rows, skipped, command))
            print(" | ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
    if not rows:
        raise app.UsageError(f"no checkpoint found for {FLAGS.models}; nothing checked.")
    if FLAGS.size_only:
        print("\n".join(size_table(rows)))
        return
    atomic_write(FLAGS.output, markdown(rows, skipped, command))
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    from tfq_tiny import cli
    from tfq_tiny.models import MODELS

    cli.check_choices("models", MODELS)
    cli.check_policies("policies", extra=("int8", "mixed"))
    cli.run(main)
