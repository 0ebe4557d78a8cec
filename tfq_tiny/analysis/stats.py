"""Model statistics: MACs, parameters, BOPs, FLASH for weights and peak activation RAM.

Definitions (per inference, batch 1):
- MACs of Conv/DepthwiseConv/Dense as usual; other operators count 0.
- BOPs = MACs x weight bits x input bits (the empirical study's definition).
- Weight memory = kernel at its bits (packed) + int32 bias + one float32 scale per output
  channel (the per-channel parameters a TFLite flatbuffer stores).
- Peak activation memory = max over operators of the bytes of every tensor live while it
  runs: its inputs, its output, and tensors produced earlier that are still needed later
  (skip connections), each at its bit width, sub-byte tensors packed (HAQ-for-MCU's M2).
"""
from dataclasses import asdict, dataclass

import numpy as np

from tfq_tiny._compat import keras
from tfq_tiny.analysis.ops import FLOAT_BITS, op_graph
from tfq_tiny.quantization.calibration import QuantizeWrapper
from tfq_tiny.quantization.configs import is_depthwise

BIAS_BYTES = 4
SCALE_BYTES = 4


@dataclass
class OpStatistics:
    name: str
    type: str
    macs: int
    params: int
    weight_bits: int | None
    input_bits: int
    output_bits: int
    bops: int
    weight_bytes: int
    live_activation_bytes: int
    output_shape: tuple


@dataclass
class ModelStatistics:
    ops: list
    macs: int
    params: int
    bops: int
    weight_bytes: int
    peak_activation_bytes: int
    peak_op: str

    def to_dict(self):
        return asdict(self)

    def table(self):
        """A per-operator table with totals, for printing."""
        head = (f"{'op':<22}{'type':<24}{'out shape':<16}{'W/A bits':>9}{'MACs':>12}"
                f"{'params':>9}{'BOPs (M)':>11}{'weights B':>11}{'live act B':>12}")
        lines = [head, "-" * len(head)]
        for s in self.ops:
            bits = f"{s.weight_bits if s.weight_bits else '-'}/{s.output_bits}"
            lines.append(f"{s.name[:21]:<22}{s.type[:23]:<24}{str(s.output_shape)[:15]:<16}"
                         f"{bits:>9}{s.macs:>12,}{s.params:>9,}{s.bops / 1e6:>11.2f}"
                         f"{s.weight_bytes:>11,}{s.live_activation_bytes:>12,}")
        lines.append("-" * len(head))
        lines.append(f"{'total':<62}{self.macs:>12,}{self.params:>9,}{self.bops / 1e6:>11.2f}"
                     f"{self.weight_bytes:>11,}{self.peak_activation_bytes:>12,}")
        lines.append(f"FLASH (weights) {self.weight_bytes / 1024:.1f} kB, peak RAM (activations) "
                     f"{self.peak_activation_bytes / 1024:.1f} kB at '{self.peak_op}'")
        return "\n".join(lines)


def _macs(op, tensors):
    if op.kernel_shape is None:
        return 0
    out = tensors[op.output]
    layer = op.layer
    k = op.kernel_shape
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(out.shape[:-1] or (1,))) * k[0] * k[1]
    if is_depthwise(layer):
        return out.elements * int(np.prod(k[:-2]))   # the window: [*window, C, multiplier]
    return out.elements * int(np.prod(k[:-1]))


def model_statistics(model, policy=None):
    """Statistics of a quantized model, or of a float model (optionally under ``policy``).

    A float model is taken as deployed first (``preprocess.as_deployed``); with a policy
    its tensors take the policy's bit widths, without one everything counts as float32.
    """
    from tfq_tiny.preprocess import as_deployed
    from tfq_tiny.quantization.quantize import build_quantized_model

    if not any(isinstance(layer, QuantizeWrapper) for layer in model.layers):
        model = as_deployed(model)
        if policy is not None:
            model = build_quantized_model(model, policy)
    ops, tensors, outputs = op_graph(model)
    first_use = {name: -1 for name, t in tensors.items() if not any(o.output == name for o in ops)}
    last_use = {name: len(ops) for name in outputs}
    for i, op in enumerate(ops):
        first_use.setdefault(op.output, i)
        for name in op.inputs:
            last_use[name] = max(last_use.get(name, i), i)
    stats = []
    peak, peak_op = 0, ""
    for i, op in enumerate(ops):
        live = sum(t.bytes for name, t in tensors.items()
                   if first_use.get(name, len(ops)) <= i <= last_use.get(name, -1))
        if live > peak:
            peak, peak_op = live, op.name
        macs = _macs(op, tensors)
        in_bits = tensors[op.inputs[0]].bits
        params = (int(np.prod(op.kernel_shape)) if op.kernel_shape else 0) + op.bias_size
        weight_bytes = 0
        if op.kernel_shape is not None:
            weight_bytes = (-(-int(np.prod(op.kernel_shape)) * op.weight_bits // 8)
                            + op.bias_size * (BIAS_BYTES if op.weight_bits < FLOAT_BITS else 4))
            if op.weight_bits < FLOAT_BITS:
                weight_bytes += op.channels * SCALE_BYTES
        stats.append(OpStatistics(
            op.name, op.type + ("+" + "+".join(op.fused) if op.fused else ""), macs, params,
            op.weight_bits, in_bits, tensors[op.output].bits,
            macs * (op.weight_bits or 0) * in_bits, weight_bytes, live,
            tuple(tensors[op.output].shape)))
    return ModelStatistics(stats, sum(s.macs for s in stats), sum(s.params for s in stats),
                           sum(s.bops for s in stats), sum(s.weight_bytes for s in stats),
                           peak, peak_op)
