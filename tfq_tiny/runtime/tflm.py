"""The real interpreters behind the shim's ``run`` interface: TFLM (pip ``tflite-micro``, the
reference that runs on devices) and LiteRT (``tf.lite.Interpreter`` with its reference kernels),
so exports can be compared with them element by element."""
import numpy as np


def _run(invoke, xs, n_outputs, all_outputs):
    """Stack ``invoke(x) -> [output arrays]`` over samples: output 0, or a list of every output."""
    per_sample = [invoke(np.asarray(x)[None]) for x in xs]
    stacked = [np.concatenate(outs) for outs in zip(*per_sample)] if per_sample else \
        [np.empty((0,))] * n_outputs
    return stacked if all_outputs else stacked[0]


def run_tflm(model_bytes, xs, arena_size=None, all_outputs=False):
    """Outputs of output 0 (every output with ``all_outputs``) for each sample of ``xs``
    (already quantized/packed model input)."""
    import tflite_micro

    micro = tflite_micro.runtime.Interpreter.from_bytes(model_bytes, arena_size=arena_size)
    n_outputs = _output_count(model_bytes) if all_outputs else 1

    def invoke(x):
        micro.set_input(x, 0)
        micro.invoke()
        return [micro.get_output(i).copy() for i in range(n_outputs)]

    return _run(invoke, xs, n_outputs, all_outputs)


def _output_count(model_bytes):
    """The model's output count (TFLM's Python interpreter does not tell), read by the shim."""
    from tfq_tiny.runtime.interpreter import Interpreter

    return len(Interpreter(model_content=model_bytes).get_output_details())


def run_litert(model_bytes, xs, all_outputs=False):
    """As ``run_tflm`` on LiteRT's reference kernels (``BUILTIN_REF``, TFLM's arithmetic). LiteRT
    needs one zero point per channel: export with ``litert_compatible=True``."""
    import warnings

    from tfq_tiny._compat import tf

    with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
        warnings.simplefilter("ignore")
        lite = tf.lite.Interpreter(model_content=model_bytes,
                                   experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    lite.allocate_tensors()
    inp, outs = lite.get_input_details()[0]["index"], lite.get_output_details()

    def invoke(x):
        lite.set_tensor(inp, x)
        lite.invoke()
        return [lite.get_tensor(d["index"]) for d in outs]

    return _run(invoke, xs, len(outs), all_outputs)
