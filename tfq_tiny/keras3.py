"""Bring Keras 3 models in: rebuild them as tf_keras models with the same layers and weights.

TensorFlow 2.16+ makes Keras 3 the default ``tf.keras``, so most float models users bring are
Keras 3 models or ``.keras`` files, while tfq_tiny (like TFMOT) works on tf_keras graphs.
``as_tf_keras`` replays a Keras 3 functional or Sequential model's serialized graph with the
tf_keras layer of the same class and configuration, then copies every layer's weights; the
result's outputs equal the original's. Initializers, regularizers and constraints are not
carried over (they do not change inference; QAT fine-tuning then runs without regularizers).
``load_float_model`` opens a float model file of either kind.
"""
import inspect
import os

from tfq_tiny._compat import keras
from tfq_tiny.errors import ModelFileError, ModelFormatError

_DROPPED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
_BASE_KEYS = {"name", "trainable", "dtype"}
_RENAMED = {("LeakyReLU", "negative_slope"): "alpha"}
"""(tf_keras class, Keras 3 setting) -> the tf_keras name of the same setting."""


def is_keras3_model(model):
    """Whether ``model`` is a Keras 3 model (or a subclass of one defined elsewhere)."""
    return not isinstance(model, keras.Model) and any(
        klass.__module__.startswith("keras.") and klass.__name__ == "Model"
        for klass in type(model).__mro__)


def _accepted_keys(cls):
    keys = set()
    for klass in cls.__mro__:
        if klass is object:
            break
        try:
            params = inspect.signature(klass.__init__).parameters.values()
        except (TypeError, ValueError):
            continue
        keys |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return keys


def _layer_config(layer_name, cls, config):
    """``config`` (Keras 3) as ``cls`` (tf_keras) takes it; ModelFormatError for a setting that
    has no tf_keras equivalent."""
    accepted = _accepted_keys(cls) | _BASE_KEYS
    out = {}
    for key, value in config.items():
        if key.endswith(_DROPPED_SUFFIXES):
            continue
        if key == "dtype" and isinstance(value, dict):
            value = value.get("config", {}).get("name", "float32")
        key = _RENAMED.get((cls.__name__, key), key)
        if key in accepted:
            out[key] = value
        elif value not in (None, False, 0, {}, [], "", "channels_last"):
            raise ModelFormatError(
                f"Layer '{layer_name}' ({cls.__name__}) sets {key}={value!r}, which tf_keras has "
                "no equivalent for. Rebuild the model without it, or with tf_keras.")
    return out


def _tf_keras_layer(spec):
    name = spec["config"].get("name", spec.get("name"))
    cls = getattr(keras.layers, spec["class_name"], None)
    if cls is None:
        raise ModelFormatError(
            f"Layer '{name}' is a {spec['class_name']} (module {spec.get('module')}), which "
            "tf_keras does not have; tfq_tiny cannot rebuild it. Use built-in Keras layers.")
    return cls(**_layer_config(name, cls, spec["config"]))


def _history_names(args):
    """Producer layer names in a Keras 3 node's serialized call arguments, in order."""
    if isinstance(args, dict):
        if args.get("class_name") == "__keras_tensor__":
            return [args["config"]["keras_history"][0]]
        return [n for v in args.values() for n in _history_names(v)]
    if isinstance(args, (list, tuple)):
        return [n for v in args for n in _history_names(v)]
    return []


def _names(entries):
    """Layer names of ``input_layers``/``output_layers`` (one [name, 0, 0] or a list of them)."""
    if entries and isinstance(entries[0], str):
        entries = [entries]
    return [e[0] for e in entries]


def _input(spec):
    config = spec["config"]
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    return keras.Input(batch_shape=tuple(shape), name=config["name"],
                       dtype=config.get("dtype") or "float32")


def _replay(model):
    """A tf_keras functional model from a Keras 3 model's config (weights not yet copied)."""
    try:
        config = model.get_config()
    except Exception:  # noqa: BLE001 - Keras raises NotImplementedError or TypeError here
        config = {}
    if "layers" not in config:
        raise ModelFormatError(
            f"Keras 3 model '{model.name}' ({type(model).__name__}) is not a functional or "
            "Sequential model; tfq_tiny needs the layer graph. Rebuild it as one.")
    tensors = {}
    if "input_layers" not in config:                                      # Sequential
        specs = config["layers"]
        if not specs or specs[0]["class_name"] != "InputLayer":
            raise ModelFormatError(f"Sequential model '{model.name}' has no input shape; build "
                                   "it (keras.Input first) before converting.")
        x = model_input = _input(specs[0])
        for spec in specs[1:]:
            x = _tf_keras_layer(spec)(x)
        return keras.Model(model_input, x, name=config.get("name", model.name))
    for spec in config["layers"]:
        if spec["class_name"] == "InputLayer":
            tensors[spec["name"]] = _input(spec)
            continue
        nodes = spec.get("inbound_nodes", [])
        if len(nodes) != 1:
            raise ModelFormatError(
                f"Layer '{spec['name']}' is called {len(nodes)} times; tfq_tiny needs each layer "
                "called once (no shared layers).")
        kwargs = {k: v for k, v in nodes[0].get("kwargs", {}).items() if v not in (None, False)}
        if kwargs:
            raise ModelFormatError(
                f"Layer '{spec['name']}' is called with {kwargs}; tfq_tiny rebuilds layers called "
                "on tensors alone.")
        producers = _history_names(nodes[0]["args"])
        layer = _tf_keras_layer(spec)
        args = [tensors[p] for p in producers]
        tensors[spec["name"]] = layer(args if len(args) > 1 else args[0])
    inputs = [tensors[n] for n in _names(config["input_layers"])]
    outputs = [tensors[n] for n in _names(config["output_layers"])]
    return keras.Model(inputs if len(inputs) > 1 else inputs[0],
                       outputs if len(outputs) > 1 else outputs[0], name=config["name"])


def as_tf_keras(model):
    """``model`` as a tf_keras model: itself if it already is one, else a Keras 3 functional or
    Sequential model rebuilt layer by layer with equal weights."""
    if not is_keras3_model(model):
        return model
    rebuilt = _replay(model)
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        target = rebuilt.get_layer(layer.name)
        weights = layer.get_weights()
        shapes = [w.shape for w in target.get_weights()]
        if [w.shape for w in weights] != shapes:
            raise ModelFormatError(
                f"Layer '{layer.name}' keeps its weights as {[w.shape for w in weights]} in Keras "
                f"3 and {shapes} in tf_keras; tfq_tiny cannot carry them over.")
        target.set_weights(weights)
    return rebuilt


def load_float_model(path):
    """A float model file (tf_keras .h5/.keras/SavedModel, or a Keras 3 .keras file) as a
    tf_keras model."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"Model file {path} not found.")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as tf_keras_error:  # noqa: BLE001 - try Keras 3 before reporting
        try:
            import keras as keras3
            model = keras3.saving.load_model(path, compile=False)
        except Exception:  # noqa: BLE001
            raise ModelFileError(
                f"Cannot load {path} as a tf_keras or Keras 3 model: {tf_keras_error}") from None
        return as_tf_keras(model)
