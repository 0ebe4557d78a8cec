"""Run the unified PTQ pipeline on a trained model and write the quantized model + a JSON report.

    python examples/ptq.py --model=cnn1d --weight_bits=4 --activation_bits=4
    python examples/ptq.py --model=res8 --optimize=round --granularity=block --preset=fast
    python examples/ptq.py --checkpoint=my_model.h5 --dataset=har --optimize=qparam

Defaults are the empirical study's best pipeline (CLE, MSE init, layer-wise AdaRound, bias
tuning) with the papers' iteration counts; --preset=fast for a quick look. Progress is shown
per reconstruction step; --log_dir writes TensorBoard logs per unit.
"""
import os
import platform
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "cnn1d", "Benchmark model whose shipped checkpoint to use.")
flags.DEFINE_string("checkpoint", None, "A float model file (tf_keras .h5/.keras, or a Keras 3 "
                    ".keras file) instead of the shipped one.")
flags.DEFINE_string("dataset", None, "Dataset name (default: the model's benchmark dataset).")
flags.DEFINE_string("data_dir", None, "Data directory (default: $TFQ_DATA_DIR or ../shared/data).")
flags.DEFINE_integer("weight_bits", 4, "Weight bits (2-8).")
flags.DEFINE_string("activation_bits", "4", "Activation bits (2-8), or 'none' for weights only.")
flags.DEFINE_string("policy", None, "A BitPolicy JSON file (overrides --weight/activation_bits).")
flags.DEFINE_integer("edge_bits", 0, "Hold the model input, first and last weight layers and "
                     "residual-Add inputs at this width, as the papers' W4A4 does "
                     "(tfq_tiny.quantization.with_edge_bits); 0 = off.")
flags.DEFINE_enum("optimize", "round", ["none", "qparam", "weights", "bits", "round"],
                  "Step 3 optimisation variable.")
flags.DEFINE_enum("granularity", "layer", ["layer", "block"], "Step 3 granularity.")
flags.DEFINE_bool("bias_tuning", True, "Step 4 bias tuning.")
flags.DEFINE_bool("bias_tuning_guard", True, "Keep tuned biases only if the top-1 agreement with "
                  "the float model on the calibration data does not fall (--nobias_tuning_guard: "
                  "the study's plain bias tuning).")
flags.DEFINE_enum("init", "mse", ["minmax", "mse"], "Step 2 range init (weights and activations).")
flags.DEFINE_enum("weight_init", None, ["minmax", "mse"], "Weight init (overrides --init).")
flags.DEFINE_enum("activation_init", None, ["minmax", "mse", "loss_aware"],
                  "Activation init (overrides --init); loss_aware = MSE ranges rescaled for the "
                  "model output (tfq_tiny.quantization.loss_aware).")
flags.DEFINE_integer("refinement_passes", 3, "At most this many sweeps of the loss-aware range "
                     "refinement (PTQConfig.range_refinement_passes).")
flags.DEFINE_enum("preprocess", "cle", ["none", "bn_fold", "cle"], "Step 1 preprocessing.")
flags.DEFINE_enum("preset", "paper", ["paper", "fast"], "Iteration preset.")
flags.DEFINE_integer("iterations", None, "Reconstruction iterations per unit (overrides preset).")
flags.DEFINE_float("drop_prob", 0.0, "QDrop: probability that a unit sees the float value of an "
                   "input element instead of the quantized one during reconstruction.")
flags.DEFINE_bool("learn_activation_ranges", False, "Also learn the unit's activation scales and "
                  "zero points (LSQ) during reconstruction.")
flags.DEFINE_integer("calibration_samples", 1024, "Unlabeled calibration samples.")
flags.DEFINE_integer("seed", 0, "Seed of the calibration draw and the optimisation.")
flags.DEFINE_string("output", "outputs/ptq", "Output directory (model .h5 and report .json).")
flags.DEFINE_string("tensorboard_dir", None, "TensorBoard log directory (one run per unit).")
flags.DEFINE_bool("resume", True, "Checkpoint after every unit in --output and resume from it.")


def main(argv):
    del argv
    import tfq_tiny
    from tfq_tiny.io import atomic_write_json
    from tfq_tiny import data, models
    from tfq_tiny.analysis import model_statistics
    from tfq_tiny.evaluate import accuracy
    from tfq_tiny.ptq import PTQConfig, PTQPipeline

    path = FLAGS.checkpoint or models.checkpoint_path(FLAGS.model)
    if not os.path.exists(path):
        raise app.UsageError(f"Checkpoint {path} not found; train it with examples/train.py.")
    dataset_name = FLAGS.dataset or models.DATASET_OF.get(FLAGS.model)
    model = tfq_tiny.load_float_model(path)
    dataset = data.load(dataset_name, data_dir=FLAGS.data_dir, seed=FLAGS.seed)
    if FLAGS.policy:
        with open(FLAGS.policy) as f:
            policy = tfq_tiny.BitPolicy.from_json(f.read())
    else:
        act = None if FLAGS.activation_bits.lower() in ("none", "32", "f") else \
            int(FLAGS.activation_bits)
        policy = tfq_tiny.BitPolicy(FLAGS.weight_bits, act)
    if FLAGS.edge_bits:
        from tfq_tiny.quantization import with_edge_bits

        policy = with_edge_bits(policy, model, FLAGS.edge_bits)
    overrides = dict(preprocess=FLAGS.preprocess,
                     weight_init=FLAGS.weight_init or FLAGS.init,
                     activation_init=FLAGS.activation_init or FLAGS.init,
                     optimize=FLAGS.optimize, granularity=FLAGS.granularity,
                     bias_tuning=FLAGS.bias_tuning, seed=FLAGS.seed, drop_prob=FLAGS.drop_prob,
                     learn_activation_ranges=FLAGS.learn_activation_ranges,
                     bias_tuning_guard=FLAGS.bias_tuning_guard,
                     range_refinement_passes=FLAGS.refinement_passes)
    if FLAGS.iterations is not None:
        overrides["iterations"] = FLAGS.iterations
    config = PTQConfig.preset(FLAGS.preset, **overrides)
    calib = dataset.calibration(FLAGS.calibration_samples, seed=FLAGS.seed)
    float_acc = accuracy(model, dataset.x_test, dataset.y_test)
    start = time.time()
    pipeline = PTQPipeline(config, log_dir=FLAGS.tensorboard_dir,
                           checkpoint_dir=FLAGS.output if FLAGS.resume else None)
    qmodel = pipeline.run(model, calib, policy)
    seconds = time.time() - start
    quant_acc = accuracy(qmodel, dataset.x_test, dataset.y_test)
    stats = model_statistics(qmodel)
    os.makedirs(FLAGS.output, exist_ok=True)
    model_path = os.path.join(FLAGS.output, "quantized.h5")
    tmp_path = model_path + ".tmp.h5"
    tfq_tiny.save_model(qmodel, tmp_path)
    os.replace(tmp_path, model_path)
    report = {
        "command": " ".join(sys.argv), "checkpoint": path, "dataset": dataset.name,
        "policy": policy.get_config(), "config": config.get_config(),
        "calibration_samples": len(calib), "test_samples": len(dataset.y_test),
        "float_accuracy": float_acc, "quantized_accuracy": quant_acc,
        "accuracy_drop": float_acc - quant_acc, "ptq_seconds": seconds,
        "units": pipeline.history, "range_refinement": pipeline.range_refinement,
        "statistics": {"macs": stats.macs, "params": stats.params, "bops": stats.bops,
                       "weight_bytes": stats.weight_bytes,
                       "peak_activation_bytes": stats.peak_activation_bytes},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    atomic_write_json(os.path.join(FLAGS.output, "report.json"), report)
    print(stats.table())
    print(f"\n{dataset.name}: float {float_acc:.2f}% -> {policy} {quant_acc:.2f}% "
          f"(drop {float_acc - quant_acc:+.2f}) in {seconds:.0f}s; wrote {model_path} and "
          f"{os.path.join(FLAGS.output, 'report.json')}")


if __name__ == "__main__":
    from tfq_tiny import cli

    cli.check_bits("weight_bits")
    cli.check_bits("activation_bits", off=("none", "32", "f"), meaning="float activations")
    flags.register_validator("policy", lambda path: path is None or os.path.isfile(path),
                             message="must be an existing BitPolicy JSON file.")
    cli.check_bits("edge_bits", off=(0,), meaning="edges follow the policy")
    cli.run(main)
