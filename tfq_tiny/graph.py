"""A tf_keras model as a DAG of layers, and one routine to rebuild it with changed layers.

Every pipeline stage that changes a model's structure (BN folding, wrapping layers with
quantizers, the converter's view of the graph) walks the same ``Graph`` and rebuilds through
``rebuild``, so graph surgery is written once.
"""
from dataclasses import dataclass, field

from tfq_tiny._compat import keras
from tfq_tiny.errors import ModelFormatError
from tfq_tiny.keras3 import is_keras3_model


@dataclass
class Node:
    """One layer call: the layer and the names of the layers whose outputs it consumes."""

    layer: object
    inputs: list = field(default_factory=list)

    @property
    def name(self):
        return self.layer.name


def check_tf_keras_model(model):
    """Raise ModelFormatError unless ``model`` is a built tf_keras functional/Sequential model."""
    if not isinstance(model, keras.Model):
        module = type(model).__module__
        if is_keras3_model(model):
            raise ModelFormatError(
                f"Got a Keras 3 model ({type(model).__name__} from '{module}'). tfq_tiny works on "
                "Keras 2 models (tf_keras), as TFMOT does: convert it with "
                "`tfq_tiny.as_tf_keras(model)` (quantize_model does so itself), load a saved "
                "file with `tfq_tiny.load_float_model(path)`, or build it with "
                "`import tf_keras as keras`.")
        raise ModelFormatError(
            f"Expected a tf_keras Model, got {type(model).__name__}. Pass a functional or "
            "Sequential tf_keras model.")
    if not model.built or not getattr(model, "_is_graph_network", False):
        if isinstance(model, keras.Sequential) and not model.built:
            raise ModelFormatError(
                f"Sequential model '{model.name}' has no input shape yet. Give its first layer an "
                "`input_shape=` or call `model.build(input_shape)` before quantizing.")
        if not isinstance(model, keras.Sequential):
            raise ModelFormatError(
                f"Model '{model.name}' is a subclassed model; tfq_tiny needs the layer graph. "
                "Rebuild it as a functional or Sequential tf_keras model.")


class Graph:
    """Layers of a functional or Sequential model in topological order with their producers."""

    def __init__(self, model):
        check_tf_keras_model(model)
        self.model = model
        self.nodes = []
        self.input_names = [layer.name for layer in model._input_layers]
        self.output_names = [t._keras_history.layer.name for t in model.outputs]
        inputs = list(model._input_layers)
        for layer in inputs + [l for l in model.layers if l not in inputs]:
            if isinstance(layer, keras.Model):
                raise ModelFormatError(
                    f"Layer '{layer.name}' is a nested model. Flatten it into one functional model "
                    "(call its layers directly) before quantizing.")
            self.nodes.append(Node(layer, self._producers(model, layer)))
        self._by_name = {n.name: n for n in self.nodes}
        self._consumers = {n.name: [] for n in self.nodes}
        for node in self.nodes:
            for producer in node.inputs:
                self._consumers[producer].append(node.name)

    @staticmethod
    def _producers(model, layer):
        for index, node in enumerate(layer._inbound_nodes):
            if f"{layer.name}_ib-{index}" in model._network_nodes:
                tensors = node.keras_inputs
                return [t._keras_history.layer.name for t in tensors]
        return []

    def __getitem__(self, name):
        return self._by_name[name]

    def __iter__(self):
        return iter(self.nodes)

    def consumers(self, name):
        return list(self._consumers[name])

    def producers(self, name):
        return list(self._by_name[name].inputs)

    def sole_consumer(self, name):
        """The only consumer of ``name``'s output, or None (several, none, or a model output)."""
        consumers = self._consumers[name]
        if len(consumers) == 1 and name not in self.output_names:
            return self._by_name[consumers[0]]
        return None


def clone_layer(layer, **config_overrides):
    """A fresh layer with the same config (and overrides), not yet built."""
    config = layer.get_config()
    config.update(config_overrides)
    return type(layer).from_config(config)


def rebuild(graph, transform, name=None):
    """A new functional model from ``graph``, calling ``transform(node, inputs)`` per layer.

    ``transform`` returns the output tensor for the node (call a cloned/wrapped layer on
    ``inputs``, or return ``inputs[0]`` to drop a layer). Input layers are recreated as
    ``keras.Input`` and then passed to ``transform`` too, so it may insert input quantizers.
    """
    tensors = {}
    model_inputs = []
    for node in graph:
        if node.name in graph.input_names:
            shape = node.layer.get_config()["batch_input_shape"]
            x = keras.Input(batch_shape=shape, name=node.name, dtype=node.layer.dtype)
            model_inputs.append(x)
            tensors[node.name] = transform(node, [x])
            continue
        args = [tensors[p] for p in node.inputs]
        tensors[node.name] = transform(node, args)
    outputs = [tensors[n] for n in graph.output_names]
    return keras.Model(model_inputs, outputs if len(outputs) > 1 else outputs[0],
                       name=name or graph.model.name)


def call_layer(layer, inputs, **kwargs):
    """Call ``layer`` the way Keras expects: merge layers take a list, others one tensor."""
    return layer(inputs if len(inputs) > 1 else inputs[0], **kwargs)


def clone_call(node, inputs, weights=None, **config_overrides):
    """Clone ``node.layer`` (with config overrides), call it on ``inputs``, set its weights.

    ``weights`` defaults to the original layer's weights.
    """
    layer = clone_layer(node.layer, **config_overrides)
    out = call_layer(layer, inputs)
    layer.set_weights(node.layer.get_weights() if weights is None else weights)
    return out


def copy_model(model):
    """An independent copy of ``model`` with equal weights (same layer names)."""
    graph = Graph(model)
    return rebuild(graph, lambda node, inputs: inputs[0] if node.name in graph.input_names
                   else clone_call(node, inputs))
