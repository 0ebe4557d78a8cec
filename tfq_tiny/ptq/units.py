"""Reconstruction units: the pieces of a quantized model optimised one at a time.

Layer granularity: each weight layer, with the ReLU fused after it. Block granularity
(BRECQ): residual blocks (from the branch point to the Add and its ReLU) and
depthwise-separable pairs (depthwise + pointwise, with their ReLUs); weight layers in
neither form single-layer units.
"""
from dataclasses import dataclass

from tfq_tiny._compat import QuantizeLayer, keras
from tfq_tiny.graph import Graph
from tfq_tiny.quantization.calibration import QuantizeWrapper
from tfq_tiny.quantization.configs import fused_relu, is_depthwise, unwrap, weight_attr


@dataclass
class Unit:
    """Nodes (in execution order) of the quantized graph, their outside inputs, one output."""

    name: str
    nodes: list
    inputs: list
    output: str

    @property
    def weight_layers(self):
        return [n.layer for n in self.nodes
                if isinstance(n.layer, QuantizeWrapper) and weight_attr(n.layer.layer) is not None]


def float_name(graph, name):
    """Name of the float-model tensor that node ``name`` of the quantized graph computes."""
    layer = graph[name].layer
    if isinstance(layer, QuantizeLayer):
        return graph[name].inputs[0]
    return unwrap(layer).name


def _with_fused_relu(graph, name):
    relu = fused_relu(graph, name)
    return [name] if relu is None else [name, relu.name]


def _make_unit(graph, names):
    order = [n.name for n in graph]
    names = sorted(set(names), key=order.index)
    inside = set(names)
    inputs = []
    for name in names:
        for producer in graph[name].inputs:
            if producer not in inside and producer not in inputs:
                inputs.append(producer)
    return Unit(unwrap(graph[names[0]].layer).name if len(names) <= 2 else
                f"block_{unwrap(graph[names[-1]].layer).name}",
                [graph[n] for n in names], inputs, names[-1])


def _ancestors(graph, name, stop):
    seen, stack = set(), [name]
    while stack:
        current = stack.pop()
        if current in seen or current == stop:
            continue
        seen.add(current)
        stack.extend(graph[current].inputs)
    return seen


def _residual_blocks(graph):
    order = [n.name for n in graph]
    blocks = []
    for node in graph:
        if not isinstance(unwrap(node.layer), keras.layers.Add) or len(node.inputs) != 2:
            continue
        common = _ancestors(graph, node.inputs[0], None) & _ancestors(graph, node.inputs[1], None)
        if not common:
            continue
        branch = max(common, key=order.index)
        members = _ancestors(graph, node.name, branch)
        tail = _with_fused_relu(graph, node.name)
        blocks.append(sorted(members | set(tail), key=order.index))
    return blocks


def find_units(qmodel, granularity="layer"):
    """Units of ``qmodel`` in execution order for ``granularity`` 'layer' or 'block'."""
    graph = Graph(qmodel)
    weight_nodes = [n.name for n in graph if isinstance(n.layer, QuantizeWrapper)
                    and weight_attr(n.layer.layer) is not None]
    groups = []
    if granularity == "block":
        taken = set()
        for block in _residual_blocks(graph):
            if taken.isdisjoint(block):
                groups.append(block)
                taken.update(block)
        for name in weight_nodes:
            if name in taken:
                continue
            layer = unwrap(graph[name].layer)
            if is_depthwise(layer):
                first = _with_fused_relu(graph, name)
                nxt = graph.sole_consumer(first[-1])
                if nxt is not None and nxt.name not in taken and \
                        type(unwrap(nxt.layer)) in (keras.layers.Conv1D, keras.layers.Conv2D):
                    group = first + _with_fused_relu(graph, nxt.name)
                    groups.append(group)
                    taken.update(group)
        groups += [_with_fused_relu(graph, n) for n in weight_nodes if n not in taken]
    elif granularity == "layer":
        groups = [_with_fused_relu(graph, n) for n in weight_nodes]
    else:
        raise ValueError(f"granularity must be 'layer' or 'block', got {granularity!r}.")
    order = [n.name for n in graph]
    groups.sort(key=lambda g: max(order.index(n) for n in g))
    return graph, [_make_unit(graph, g) for g in groups]
