"""The empirical study's Table 1 for our models: use case, dataset, model, float accuracy,
MACs, parameters and peak activation memory (float32 and int8), from the shipped checkpoints.

    python examples/table1.py --output=results/table1.md
"""
import os
import platform
import sys

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["res8", "ds_cnn", "mobilenet_v1", "cnn1d"], "Models to list.")
flags.DEFINE_string("data_dir", None, "Data directory.")
flags.DEFINE_string("output", "results/table1.md", "Markdown file to write.")

USE_CASES = {"res8": "image classification", "ds_cnn": "keyword spotting",
             "mobilenet_v1": "visual wake words", "cnn1d": "activity recognition"}
PAPER = {"res8": ("CIFAR-10", 86.75), "ds_cnn": ("Speech Commands", None),
         "mobilenet_v1": ("VWW", None), "cnn1d": ("UCI-HAR", 90.36)}


def main(argv):
    del argv
    from tfq_tiny import data, models
    from tfq_tiny.io import atomic_write, atomic_write_json
    from tfq_tiny._compat import keras
    from tfq_tiny.analysis import model_statistics
    from tfq_tiny.evaluate import accuracy

    rows = []
    for name in FLAGS.models:
        path = models.checkpoint_path(name)
        if not os.path.exists(path):
            print(f"skipping {name}: no checkpoint at {path}")
            continue
        model = keras.models.load_model(path, compile=False)
        dataset = data.load(models.DATASET_OF[name], data_dir=FLAGS.data_dir)
        acc = accuracy(model, dataset.x_test, dataset.y_test)
        fp = model_statistics(model)
        int8 = model_statistics(model, "w8a8")
        rows.append((USE_CASES[name], dataset.name, name, acc, PAPER[name][1], fp.macs, fp.params,
                     fp.peak_activation_bytes, int8.peak_activation_bytes, len(dataset.y_test)))
        print(f"{name}: {acc:.2f}% MACs {fp.macs:,} params {fp.params:,}")
    lines = [f"Command: `python {' '.join(sys.argv)}` on {platform.machine()}, "
             f"{os.cpu_count()} cores.", "",
             "| use case | dataset | model | float acc. % (test n) | paper float % | MACs | params | "
             "peak act. fp32 (kB) | peak act. int8 (kB) |", "|---" * 9 + "|"]
    for r in rows:
        paper = f"{r[4]:.2f}" if r[4] is not None else "-"
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2f} ({r[9]}) | {paper} | {r[5]:,} | "
                     f"{r[6]:,} | {r[7] / 1024:.1f} | {r[8] / 1024:.1f} |")
    lines += ["", "Parameters and MACs after BatchNorm folding (what is deployed). Peak activation "
              "memory: max over operators of the live tensors (inputs, output, skip connections). "
              "KWS data is SYNTHETIC speech and VWW is a CIFAR-10 proxy (see the data README): "
              "their accuracies are not comparable with the paper's."]
    atomic_write(FLAGS.output, "\n".join(lines) + "\n")
    atomic_write_json(os.path.splitext(FLAGS.output)[0] + ".json", [
        dict(zip(["use_case", "dataset", "model", "float_accuracy", "paper_accuracy", "macs",
                  "params", "peak_fp32_bytes", "peak_int8_bytes", "test_samples"], r))
        for r in rows])
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    from tfq_tiny import cli

    cli.run(main)
