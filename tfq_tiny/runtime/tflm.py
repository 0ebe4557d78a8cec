"""The real interpreters behind the shim's ``run`` interface: TFLM (pip ``tflite-micro``, the
reference that runs on devices) and LiteRT (``tf.lite.Interpreter`` with its reference kernels),
so exports can be compared with them element by element."""
import numpy as np


def run_tflm(model_bytes, xs, arena_size=None):
    """Outputs of output 0 for each sample of ``xs`` (already quantized/packed model input)."""
    import tflite_micro

    micro = tflite_micro.runtime.Interpreter.from_bytes(model_bytes, arena_size=arena_size)
    outputs = []
    for x in xs:
        micro.set_input(np.asarray(x)[None], 0)
        micro.invoke()
        outputs.append(micro.get_output(0).copy())
    return np.concatenate(outputs)


def run_litert(model_bytes, xs):
    """As ``run_tflm`` on LiteRT's reference kernels (``BUILTIN_REF``, TFLM's arithmetic). LiteRT
    needs one zero point per channel: export with ``litert_compatible=True``."""
    import warnings

    from tfq_tiny._compat import tf

    with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
        warnings.simplefilter("ignore")
        lite = tf.lite.Interpreter(model_content=model_bytes,
                                   experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    lite.allocate_tensors()
    inp, out = lite.get_input_details()[0]["index"], lite.get_output_details()[0]["index"]
    outputs = []
    for x in xs:
        lite.set_tensor(inp, np.asarray(x)[None])
        lite.invoke()
        outputs.append(lite.get_tensor(out))
    return np.concatenate(outputs)
