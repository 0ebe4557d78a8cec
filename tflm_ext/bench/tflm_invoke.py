"""Invoke a .tflite model N times with the pip `tflite-micro` interpreter (for callgrind).

    valgrind --tool=callgrind --collect-atstart=no \
        --toggle-collect='tflite::micro::(anonymous namespace)::ConvEval(*' \
        python tflm_ext/bench/tflm_invoke.py model.tflite N

examples/bench_kernels.py runs this under callgrind so that only the operator's Eval (and the
reference kernel under it) is counted. It imports only numpy and tflite_micro (no TensorFlow), so
that the run under valgrind stays short. Prints "ops=<builtin codes> filter_scales=<number of
scales of the first operator's filter> checksum=<sum of the output>".
"""
import sys

import numpy as np
from tflite_micro.python.tflite_micro import runtime


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: tflm_invoke.py MODEL.tflite N_INVOKES")
    with open(argv[1], "rb") as f:
        model = f.read()
    n = int(argv[2])
    model_t = runtime.convert_bytearray_to_object(bytearray(model))
    ops = [runtime.get_builtin_code_from_operator_code(model_t.operatorCodes[op.opcodeIndex])
           for op in model_t.subgraphs[0].operators]
    op0 = model_t.subgraphs[0].operators[0]
    filter_q = model_t.subgraphs[0].tensors[op0.inputs[1]].quantization
    filter_scales = 0 if filter_q is None or filter_q.scale is None else len(filter_q.scale)
    interpreter = runtime.Interpreter.from_bytes(model)
    details = interpreter.get_input_details(0)
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=details["shape"], dtype=np.int8)
    interpreter.set_input(x, 0)
    for _ in range(n):
        interpreter.invoke()
    checksum = int(interpreter.get_output(0).astype(np.int64).sum())
    print(f"ops={','.join(str(o) for o in ops)} filter_scales={filter_scales} "
          f"checksum={checksum}")


if __name__ == "__main__":
    main(sys.argv)
