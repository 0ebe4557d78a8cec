"""The deployed operator graph of a model: what TFLM will run, tensor by tensor.

Fused ReLU/ReLU6 layers merge into the operator before them, Flatten/Reshape/Dropout and
the input quantizer alias their input tensor, and every other layer is one operator. Each
tensor carries the bit width it is stored at (32 = float). This view is shared by the
statistics (MACs, BOPs, FLASH, peak RAM) and the mixed-precision memory model.
"""
from dataclasses import dataclass, field

import numpy as np

from tfq_tiny._compat import QuantizeLayer, keras
from tfq_tiny.graph import Graph
from tfq_tiny.quantization.calibration import QuantizeWrapper
from tfq_tiny.quantization.configs import activation_name, is_relu, weight_attr

FLOAT_BITS = 32
ALIAS_LAYERS = (keras.layers.Flatten, keras.layers.Reshape, keras.layers.Dropout)


@dataclass
class Tensor:
    name: str
    shape: tuple
    bits: int = FLOAT_BITS

    @property
    def elements(self):
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def bytes(self):
        return -(-self.elements * self.bits // 8)


@dataclass
class Op:
    """One deployed operator: its layer, input/output tensors and weight description."""

    name: str
    layer: object
    inputs: list
    output: str
    weight_bits: int | None = None
    kernel_shape: tuple | None = None
    bias_size: int = 0
    channels: int = 0
    fused: list = field(default_factory=list)

    @property
    def type(self):
        return type(self.layer).__name__


def _bits_of_wrapper(wrapper):
    config = wrapper.quantize_config
    weight_bits = getattr(config, "weight_bits", None)
    out_bits = config.activation_bits if config.get_output_quantizers(wrapper.layer) else None
    return weight_bits, out_bits


def op_graph(model):
    """(ops in execution order, {tensor name: Tensor}) for a float or quantized tf_keras model."""
    graph = Graph(model)
    tensors = {}
    alias = {}
    ops = []
    producer_op = {}
    for node in graph:
        layer = node.layer
        if node.name in graph.input_names:
            tensors[node.name] = Tensor(node.name, tuple(layer.output_shape[0][1:]
                                                         if isinstance(layer.output_shape, list)
                                                         else layer.output_shape[1:]))
            alias[node.name] = node.name
            continue
        sources = [alias[p] for p in node.inputs]
        if isinstance(layer, QuantizeLayer):
            alias[node.name] = sources[0]
            tensors[sources[0]].bits = layer.quantizer.num_bits
            continue
        inner, weight_bits, out_bits = layer, None, FLOAT_BITS
        if isinstance(layer, QuantizeWrapper):
            inner = layer.layer
            weight_bits, out_bits = _bits_of_wrapper(layer)
        if isinstance(inner, ALIAS_LAYERS):
            alias[node.name] = sources[0]
            continue
        src_op = producer_op.get(sources[0])
        fusable = (is_relu(inner) and src_op is not None
                   and not src_op.fused and activation_name(src_op.layer) == "linear"
                   and len(graph.consumers(src_op.output)) == 1
                   and src_op.output not in graph.output_names)
        if fusable:
            src_op.fused.append(inner.name)
            alias[node.name] = sources[0]
            tensors[sources[0]].bits = out_bits if out_bits is not None else FLOAT_BITS
            continue
        if isinstance(inner, (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D,
                              keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D)):
            out_bits = tensors[sources[0]].bits
        shape = layer.output_shape
        tensors[node.name] = Tensor(node.name, tuple(shape[1:]),
                                    FLOAT_BITS if out_bits is None else out_bits)
        alias[node.name] = node.name
        op = Op(inner.name, inner, sources, node.name)
        attr = weight_attr(inner)
        if attr is not None:
            kernel = getattr(inner, attr[0])
            op.kernel_shape = tuple(int(d) for d in kernel.shape)
            op.weight_bits = FLOAT_BITS if weight_bits is None else weight_bits
            op.channels = int(np.prod(op.kernel_shape[-2:] if attr[1] == (-2, -1)
                                      else op.kernel_shape[-1:]))
            op.bias_size = op.channels if inner.use_bias else 0
        producer_op[node.name] = op
        ops.append(op)
    outputs = [alias[n] for n in graph.output_names]
    return ops, tensors, outputs
