"""Export a saved quantized model to a TFLM flatbuffer.

    python -m tfq_tiny.export --model q.h5 --output model.tflite [--input_type int8]

The file is what a device stores: names are stripped unless ``--nostrip_strings`` (the Python
``to_tflite`` keeps them by default, for debugging).

``--model`` is a model saved with ``tfq_tiny.save_model`` (h5 or SavedModel directory), loaded
with ``tfq_tiny.load_model``. The flatbuffer is written atomically; a summary (size, operators,
input grid, where the bytes go: ``tfq_tiny.export.size_report``, TFLM's planned arena head) is
printed. ``--device_sources DIR`` also writes the C++ a firmware project compiles
(``tfq_tiny.export.device``): the model as an aligned C array and a header registering exactly
its operators, with the resolver size and arena head.
"""
import os

from absl import app, flags

from tfq_tiny.io import atomic_write

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Quantized model saved with tfq_tiny.save_model (.h5 or SavedModel dir).")
flags.DEFINE_string("output", None, "Path of the .tflite file to write.")
flags.DEFINE_enum("input_type", "int8", ["int8", "float32"],
                  "int8: integer input/output tensors (a sub-8-bit input is packed); float32: "
                  "QUANTIZE/DEQUANTIZE at the ends (8-bit input quantizer only).")
flags.DEFINE_enum("int2_type", "INT8", ["INT8", "INT2"],
                  "Tensor type of 2-bit filters: INT8 holding packed bytes (any TFLM), or INT2 "
                  "(tflm_ext glue built with -DTFQ_ACCEPT_TFLITE_INT2).")
flags.DEFINE_enum("dense_int4", "custom", ["custom", "conv_1x1"],
                  "Dense with 4-bit weights and 8-bit activations: TFQ_FULLY_CONNECTED, or a "
                  "1x1 CONV_2D builtin (no custom operator needed).")
flags.DEFINE_enum("causal_int8", "pad", ["pad", "custom"],
                  "Causal Conv1D with 8-bit input and output: PAD + CONV_2D builtins (stock "
                  "TFLM; a padded input copy in RAM), or TFQ_CONV_2D with explicit padding.")
flags.DEFINE_bool("strip_strings", True, "Leave out tensor/subgraph names and the description "
                  "(no interpreter reads them; ~12 B of FLASH per tensor). --nostrip_strings "
                  "keeps them for debugging (per-layer comparisons need the names).")
flags.DEFINE_bool("litert_compatible", False, "Full per-channel zero point arrays (LiteRT needs "
                  "them; TFLM accepts one zero point per filter, up to 8 B per channel less).")
flags.DEFINE_string("device_sources", None, "Also write <stem>_model_data.h/.cc (the flatbuffer "
                    "as a C array) and <stem>_ops.h (operator registrations, resolver size, arena "
                    "head) into this directory; <stem> is --output's file name without extension.")
flags.mark_flags_as_required(["model", "output"])


def main(argv):
    del argv
    import tfq_tiny
    from tfq_tiny.export import converter, device, size_report
    from tfq_tiny.export.arena import plan_arena
    from tfq_tiny.runtime.interpreter import Interpreter

    if not os.path.exists(FLAGS.model):
        raise app.UsageError(f"--model {FLAGS.model} does not exist.")
    qmodel = tfq_tiny.load_model(FLAGS.model)
    model_bytes = converter.to_tflite(qmodel, input_type=FLAGS.input_type,
                                      int2_type=FLAGS.int2_type, dense_int4=FLAGS.dense_int4,
                                      causal_int8=FLAGS.causal_int8,
                                      litert_compatible=FLAGS.litert_compatible,
                                      strip_strings=FLAGS.strip_strings)
    atomic_write(FLAGS.output, model_bytes)
    meta = converter.read_metadata(model_bytes)
    ops = [name for _, name in Interpreter(model_content=model_bytes).operators]
    print(f"wrote {FLAGS.output}: {len(model_bytes)} bytes, {len(ops)} operators "
          f"({', '.join(sorted(set(ops)))})")
    for grid in meta["inputs"]:
        print(f"input '{grid['name']}': {grid['bits']}-bit grid, scale {grid['scale']:.6g}, "
              f"zero point {grid['zero_point']}, stored {'packed' if grid['storage_bits'] < 8 else 'as int8'}")
    print(f"policy: {meta['policy']}")
    report = size_report(model_bytes)
    print("bytes: " + ", ".join(f"{k} {v}" for k, v in report.items() if v and k != "total"))
    print(f"TFLM arena head (activations + scratch, as TFLM plans it): "
          f"{plan_arena(model_bytes)['head']} bytes")
    if FLAGS.device_sources:
        stem = os.path.splitext(os.path.basename(FLAGS.output))[0]
        for path in device.write_device_sources(model_bytes, FLAGS.device_sources, stem):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from tfq_tiny import cli

    cli.run(main)
