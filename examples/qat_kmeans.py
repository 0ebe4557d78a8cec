"""Measurement (not a test): QAT after PTQ, and k-means vs uniform weights at equal FLASH.

On a shipped float checkpoint, per seed (the seed draws the calibration samples and the QAT data
order):

1. uniform PTQ (``quantize_model``: BN fold + CLE, MSE ranges) at ``--policy`` (W4A4), test
   accuracy; then QAT with ``tfq_tiny.qat.finetune`` on the whole training split, test accuracy
   after each epoch (the run is resumed epoch by epoch from its checkpoint, which is also a check
   of the resume path);
   for the first seed the fine-tuned model is exported with ``to_tflite`` and
   ``--export_samples`` test samples run on the NumPy integer shim;
2. weights at 2 and 4 bits with activations at 8: k-means (``kmeans_quantize_model``) against
   uniform PTQ, with each one's FLASH for the weights (``kmeans_flash`` and
   ``analysis.model_statistics``).

    python examples/qat_kmeans.py --model=cnn1d --seeds=0,1,2,3,4 --epochs=2 \\
        --output=/tmp/qat_kmeans

Writes ``runs.jsonl`` (one row per seed and measurement) and prints a Markdown summary
(mean +- std over seeds).
"""
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "cnn1d", "Shipped checkpoint: cnn1d, res8, ds_cnn or mobilenet_v1.")
flags.DEFINE_string("data_dir", None, "Data directory (default: $TFQ_DATA_DIR or ../shared/data).")
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds (calibration draw, QAT data order).")
flags.DEFINE_integer("calibration_samples", 1024, "Unlabeled training samples for the ranges.")
flags.DEFINE_string("policy", "w4a4", "Uniform policy fine-tuned with QAT.")
flags.DEFINE_integer("epochs", 2, "QAT epochs over the training split.")
flags.DEFINE_float("lr", 1e-4, "QAT Adam learning rate (HAQ: 1e-4).")
flags.DEFINE_integer("batch_size", 64, "QAT batch size.")
flags.DEFINE_list("kmeans_bits", ["2", "4"], "Weight widths of the k-means vs uniform comparison.")
flags.DEFINE_integer("kmeans_activation_bits", 8, "Activation width of that comparison.")
flags.DEFINE_integer("export_samples", 500, "For the first seed: export the fine-tuned model with "
                     "to_tflite and run this many test samples on the NumPy integer shim (0 = skip).")
flags.DEFINE_string("output", "/tmp/qat_kmeans", "Directory for runs.jsonl.")


def _mean_std(values):
    values = np.asarray(values, np.float64)
    return f"{values.mean():.2f} +- {values.std(ddof=1) if len(values) > 1 else 0.0:.2f}"


def _export_check(qmodel, x, y, seed):
    """Export the fine-tuned model and compare the integer shim with the fake-quant model."""
    from tfq_tiny.evaluate import accuracy
    from tfq_tiny.export import to_tflite
    from tfq_tiny.export.converter import dequantize_output, quantize_input, read_metadata
    from tfq_tiny.runtime.interpreter import Interpreter

    flatbuffer = to_tflite(qmodel)
    meta = read_metadata(flatbuffer)
    logits = dequantize_output(meta, Interpreter(model_content=flatbuffer).run(
        quantize_input(meta, x))[0])
    shim = np.argmax(logits, -1)
    fake = np.argmax(np.asarray(qmodel(x, training=False)), -1)
    row = {"kind": "export", "seed": seed, "samples": len(y), "bytes": len(flatbuffer),
           "shim_accuracy": 100.0 * float(np.mean(shim == y)),
           "fake_quant_accuracy": accuracy(qmodel, x, y),
           "top1_agreement": 100.0 * float(np.mean(shim == fake))}
    print(f"seed {seed} exported after QAT: {row['bytes']} B, shim {row['shim_accuracy']:.2f}% vs "
          f"fake-quant {row['fake_quant_accuracy']:.2f}% on {len(y)} test samples, top-1 "
          f"agreement {row['top1_agreement']:.2f}%")
    return row


def main(argv):
    del argv
    import tfq_tiny
    from tfq_tiny import BitPolicy, data, models
    from tfq_tiny._compat import keras
    from tfq_tiny.evaluate import accuracy
    from tfq_tiny.io import atomic_write
    from tfq_tiny.qat import FineTuner
    from tfq_tiny.quantization.kmeans import kmeans_flash, kmeans_quantize_model
    from tfq_tiny.search import memory

    model = keras.models.load_model(models.checkpoint_path(FLAGS.model), compile=False)
    dataset = data.load(models.DATASET_OF[FLAGS.model], data_dir=FLAGS.data_dir)
    x_train, y_train, x_test, y_test = (dataset.x_train, dataset.y_train, dataset.x_test,
                                        dataset.y_test)
    rows = []
    float_acc = accuracy(model, x_test, y_test)
    started = time.time()
    for seed in (int(s) for s in FLAGS.seeds):
        calib = dataset.calibration(FLAGS.calibration_samples, seed)
        policy = BitPolicy.parse(FLAGS.policy)
        accs = []
        with tempfile.TemporaryDirectory() as directory:
            for epochs in range(0, FLAGS.epochs + 1):
                keras.utils.set_random_seed(seed)
                qmodel = tfq_tiny.quantize_model(model, policy, calib, seed=seed)
                if epochs:
                    FineTuner(epochs, FLAGS.lr, FLAGS.batch_size, checkpoint_dir=directory,
                              progress=False, seed=seed).run(qmodel, (x_train, y_train))
                accs.append(accuracy(qmodel, x_test, y_test))
                print(f"seed {seed} {policy} after {epochs} QAT epoch(s): {accs[-1]:.2f}%")
        rows.append({"kind": "qat", "seed": seed, "policy": str(policy),
                     "test_accuracy_by_epoch": accs})
        if FLAGS.export_samples and len(rows) == 1:
            rows.append(_export_check(qmodel, x_test[:FLAGS.export_samples],
                                      y_test[:FLAGS.export_samples], seed))
        for bits in (int(b) for b in FLAGS.kmeans_bits):
            spec = BitPolicy.uniform(bits, FLAGS.kmeans_activation_bits)
            uniform = tfq_tiny.quantize_model(model, spec, calib, seed=seed)
            kmeans = kmeans_quantize_model(model, spec, calib, seed=seed)
            row = {"kind": "kmeans", "seed": seed, "policy": str(spec),
                   "uniform_accuracy": accuracy(uniform, x_test, y_test),
                   "kmeans_accuracy": accuracy(kmeans, x_test, y_test),
                   "uniform_flash": memory(model, spec)[0],
                   "kmeans_flash": kmeans_flash(model, spec),
                   "kmeans_flash_fp16_codebook": kmeans_flash(model, spec, centroid_bytes=2)}
            print(f"seed {seed} {spec}: uniform {row['uniform_accuracy']:.2f}% "
                  f"({row['uniform_flash']} B), k-means {row['kmeans_accuracy']:.2f}% "
                  f"({row['kmeans_flash']} B)")
            rows.append(row)
    meta = {"command": " ".join([os.path.basename(sys.executable), "examples/qat_kmeans.py",
                                 *sys.argv[1:]]),
            "model": FLAGS.model, "dataset": dataset.name, "float_test_accuracy": float_acc,
            "train_samples": len(y_train), "test_samples": len(y_test),
            "calibration_samples": FLAGS.calibration_samples, "lr": FLAGS.lr,
            "batch_size": FLAGS.batch_size, "epochs": FLAGS.epochs,
            "seconds": time.time() - started, "machine": {
                "hostname": platform.node(), "cpu_count": os.cpu_count(),
                "load_average_at_end": list(os.getloadavg())}}
    atomic_write(os.path.join(FLAGS.output, "runs.jsonl"),
                 "".join(json.dumps(r) + "\n" for r in [{"kind": "meta", **meta}] + rows))

    qat = [r for r in rows if r["kind"] == "qat"]
    print(f"\n{meta['command']}\nfloat {float_acc:.2f}%, {len(qat)} seeds\n")
    print(f"| {FLAGS.policy.upper()} | test accuracy % (mean +- std) |\n|---|---|")
    for epoch in range(FLAGS.epochs + 1):
        label = "PTQ" if epoch == 0 else f"PTQ + {epoch} epoch(s) QAT"
        print(f"| {label} | {_mean_std([r['test_accuracy_by_epoch'][epoch] for r in qat])} |")
    print("\n| policy | uniform FLASH B | uniform acc % | k-means FLASH B (fp32 / fp16 codebook) "
          "| k-means acc % |\n|---|---|---|---|---|")
    for bits in (int(b) for b in FLAGS.kmeans_bits):
        spec = str(BitPolicy.uniform(bits, FLAGS.kmeans_activation_bits))
        sel = [r for r in rows if r["kind"] == "kmeans" and r["policy"] == spec]
        print(f"| {spec} | {sel[0]['uniform_flash']:,} | {_mean_std([r['uniform_accuracy'] for r in sel])} "
              f"| {sel[0]['kmeans_flash']:,} / {sel[0]['kmeans_flash_fp16_codebook']:,} | "
              f"{_mean_std([r['kmeans_accuracy'] for r in sel])} |")


if __name__ == "__main__":
    from tfq_tiny import cli
    from tfq_tiny.models import MODELS

    cli.check_choices("model", MODELS)
    cli.check_ints("seeds")
    cli.check_policies("policy")
    cli.check_ints("kmeans_bits", minimum=2)
    cli.run(main)
