"""The real TFLM interpreter (pip ``tflite-micro``) behind the shim's ``run`` interface, so
exports can be compared element by element with the reference that runs on devices."""
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
