"""``quantize_model``: a float tf_keras model in, a calibrated fake-quant tf_keras model out.

The quantized model mirrors what the integer kernels will compute: kernels quantized per
output channel, every tensor that flows between TFLite operators quantized per tensor
(the model input by a ``QuantizeLayer``, each layer's output by its wrapper), with a fused
ReLU/ReLU6 quantized once after the operator it follows, as TFLite fuses it.
"""
from tfq_tiny._compat import QuantizeAnnotate, QuantizeLayer, keras, tfmot
from tfq_tiny.errors import TfqError, UnsupportedLayerError
from tfq_tiny.graph import Graph, call_layer, check_tf_keras_model, clone_call, clone_layer, rebuild
from tfq_tiny.keras3 import as_tf_keras
from tfq_tiny.preprocess import preprocess as run_preprocess
from tfq_tiny.quantization import configs as cfg
from tfq_tiny.quantization.calibration import QuantizeWrapper, calibrate
from tfq_tiny.quantization.policy import BitPolicy
from tfq_tiny.quantization.quantizers import (ActivationQuantizer, UniformQuantizer,
                                              WeightQuantizer)
from tfq_tiny.quantization.range_init import ACTIVATION_INIT_METHODS, INIT_METHODS

quantize_annotate_layer = tfmot.quantization.keras.quantize_annotate_layer

CUSTOM_OBJECTS = {
    "UniformQuantizer": UniformQuantizer,
    "WeightQuantizer": WeightQuantizer,
    "ActivationQuantizer": ActivationQuantizer,
    "WeightLayerQuantizeConfig": cfg.WeightLayerQuantizeConfig,
    "OutputQuantizeConfig": cfg.OutputQuantizeConfig,
}


def quantize_scope(*args):
    """Scope for loading/saving quantized models (TFMOT's scope plus tfq_tiny's objects)."""
    objects = dict(CUSTOM_OBJECTS)
    for extra in args:
        objects.update(extra)
    return tfmot.quantization.keras.quantize_scope(objects)


def _split_init(init):
    if isinstance(init, dict):
        unknown = set(init) - {"weights", "activations"}
        if unknown:
            raise ValueError(f"init dict keys must be 'weights'/'activations', got {sorted(unknown)}.")
        w_init, a_init = init.get("weights", "mse"), init.get("activations", "mse")
    else:
        w_init = a_init = init
    if w_init not in INIT_METHODS or a_init not in ACTIVATION_INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, or a dict with 'weights' (one of "
                         f"{INIT_METHODS}) and 'activations' (one of {ACTIVATION_INIT_METHODS}); "
                         f"got {init!r}.")
    return w_init, a_init


def strip_annotations(model):
    """(plain model, {layer name: QuantizeConfig}) from a model with TFMOT annotations."""
    graph = Graph(model)
    configs = {}

    def transform(node, inputs):
        if node.name in graph.input_names:
            return inputs[0]
        if isinstance(node.layer, QuantizeAnnotate):
            inner = node.layer.layer
            if node.layer.quantize_config is not None:
                configs[inner.name] = node.layer.quantize_config
            layer = clone_layer(inner)
            out = call_layer(layer, inputs)
            layer.set_weights(inner.get_weights())
            return out
        return clone_call(node, inputs)

    if not any(isinstance(n.layer, QuantizeAnnotate) for n in graph):
        return model, {}
    return rebuild(graph, transform), configs


def takes_output_bits(graph, name):
    """True when ``name``'s output is held at ``BitPolicy.output_bits``: a model output, or the
    input (through pass-through layers) or output of a layer TFLM runs in int8 only: softmax,
    sigmoid, tanh (SOFTMAX, LOGISTIC, TANH) and Concatenate (CONCATENATION)."""
    if name in graph.output_names or cfg.int8_only(graph[name].layer):
        return True
    return any(cfg.int8_only(graph[c].layer) or (cfg.is_pass_through(graph[c].layer) and
                                                 takes_output_bits(graph, c))
               for c in graph.consumers(name))


def concatenations_fed(graph, name):
    """Names of the Concatenate layers ``name``'s output reaches through pass-through layers."""
    found = []
    for c in graph.consumers(name):
        if cfg.is_concatenate(graph[c].layer):
            found.append(c)
        elif cfg.is_pass_through(graph[c].layer):
            found += concatenations_fed(graph, c)
    return sorted(set(found))


def _concatenation_sources(graph):
    """The layers whose output grid follows the Concatenate they feed (TFLM's CONCATENATION
    copies integers, so every input must already be on the output's grid). Raises for an input
    whose grid cannot follow: a model input, a softmax/sigmoid/tanh (fixed grid), another
    Concatenate, or a layer feeding two Concatenates."""
    sources = set()
    for node in graph:
        joins = concatenations_fed(graph, node.name)
        if not joins or cfg.is_pass_through(node.layer) and node.name not in graph.input_names:
            continue
        fixed = cfg.fixed_grid_function(node.layer) is not None or cfg.is_concatenate(node.layer)
        if node.name in graph.input_names or len(joins) > 1 or fixed:
            why = ("is a model input" if node.name in graph.input_names else
                   f"feeds {len(joins)} Concatenates {joins}" if len(joins) > 1 else
                   "has a grid of its own kind (softmax/sigmoid/tanh or a Concatenate)")
            raise UnsupportedLayerError(
                f"Concatenate {joins} reads '{node.name}', which {why}: TFLM's CONCATENATION copies "
                "integers, so each input must be written on the concatenation's own grid, by a "
                "layer that can take any grid. Put a Conv/Dense/ReLU/Add/pooling layer between.")
        sources.add(node.name)
    return sources


def build_quantized_model(float_model, policy, init="mse", configs=None, check_overrides=True):
    """Wrap every layer of a preprocessed float model with its QuantizeConfig (uncalibrated).

    An override naming a layer the model lacks, or setting a width the layer has no tensor for
    (weight bits of a ReLU, activation bits of a pass-through layer or of a layer whose fused
    ReLU holds the output grid), raises TfqError unless ``check_overrides`` is False (the
    memory model's probes, which set both widths on every layer on purpose)."""
    policy = BitPolicy.parse(policy)
    w_init, a_init = _split_init(init)
    configs = dict(configs or {})
    graph = Graph(float_model)
    names = {node.name for node in graph}
    as_deployed = (f"Its layers, as deployed: {[node.name for node in graph]} (BatchNormalization "
                   "folds into the layer before it, SeparableConv1D/2D 'x' becomes 'x_depthwise' and "
                   "'x_pointwise', a softmax/sigmoid/tanh activation 'x' becomes 'x' and "
                   "'x_<function>', ZeroPadding folds into the convolution after it, "
                   "Rescaling/Normalization into the layers after it).")
    unknown = sorted(set(policy.overrides) - names)
    if unknown and check_overrides:
        raise TfqError(f"The policy overrides layers the model does not have: {unknown}. "
                       f"{as_deployed} Key overrides by those names.")
    rewritten = sorted(set(configs) - names)
    if rewritten:
        raise TfqError(
            f"QuantizeConfigs were annotated on layers that preprocessing rewrites away: "
            f"{rewritten}, so they would not apply. {as_deployed} Build the model with the "
            "deployed layers and annotate those, or leave the layers unannotated and set "
            "their widths with BitPolicy overrides keyed by the deployed names.")
    tensor_bits = {}
    applied = {}
    concatenated = _concatenation_sources(graph)

    def transform(node, inputs):
        layer = node.layer
        if node.name in graph.input_names:
            bits = policy.activation_bits_for(node.name)
            tensor_bits[node.name] = bits
            applied[node.name] = {"activation_bits"}
            if bits is None:
                return inputs[0]
            quantizer = ActivationQuantizer(bits, a_init)
            return QuantizeLayer(quantizer, name=f"{node.name}_quantize")(inputs[0])
        in_bits = tensor_bits.get(node.inputs[0]) if node.inputs else None
        if node.name in configs:
            config = configs[node.name]
            applied[node.name] = {"weight_bits", "activation_bits"}  # the config decides
        elif cfg.is_pass_through(layer):
            tensor_bits[node.name] = in_bits
            return clone_call(node, inputs)
        else:
            owns_output = cfg.fused_relu(graph, node.name) is None
            act_bits = policy.activation_bits_for(node.name, takes_output_bits(graph, node.name))
            config = cfg.default_config(layer, policy.weight_bits_for(node.name), act_bits,
                                        w_init, a_init, owns_output, input_bits=in_bits,
                                        tie_to_consumer=node.name in concatenated)
            applied[node.name] = ({"weight_bits"} if config.get_weights_and_quantizers(layer)
                                  else set()) | ({"activation_bits"} if owns_output else set())
        tensor_bits[node.name] = getattr(config, "activation_bits", None) \
            if config.get_output_quantizers(layer) else None
        inner = clone_layer(layer)
        inner.build(layer.input_shape)
        inner.set_weights(layer.get_weights())
        return call_layer(QuantizeWrapper(inner, config), inputs)

    qmodel = rebuild(graph, transform, name=f"{float_model.name}_quantized")
    if check_overrides:
        _check_overrides_apply(graph, policy, applied)
    return qmodel


def _check_overrides_apply(graph, policy, applied):
    """Raise when an override sets a width the layer has no tensor for (it would do nothing)."""
    problems = []
    for name, spec in sorted(policy.overrides.items()):
        for key in sorted(set(spec) - applied.get(name, set())):
            if key == "weight_bits":
                problems.append(f"'{name}' has no weights, so its weight_bits does nothing")
            elif (relu := cfg.fused_relu(graph, name)) is not None:
                problems.append(f"'{name}' deploys with '{relu.name}' fused, whose output is "
                                f"the tensor: set activation_bits on '{relu.name}'")
            else:
                problems.append(f"'{name}' passes its input's values through (no grid of its "
                                "own): set activation_bits on the layer that produces its input")
    if problems:
        raise TfqError("The policy sets widths that no tensor takes: " + "; ".join(problems) + ".")


def quantize_model(model, policy="w8a8", calibration_data=None, init="mse",
                   preprocess=("bn_fold", "cle"), batch_size=128, seed=0):
    """Quantize a float tf_keras model and calibrate its ranges.

    Args:
      model: a functional or Sequential tf_keras model (may carry
        ``quantize_annotate_layer`` annotations with hand-picked QuantizeConfigs), or a Keras 3
        one, rebuilt first with ``as_tf_keras``.
      policy: a ``BitPolicy`` or a shorthand such as "w8a8", "w4a4", "w4a32".
      calibration_data: ~1024 unlabeled samples (array or tf.data.Dataset); required when
        activations are quantized.
      init: "mse" or "minmax", or {"weights": ..., "activations": ...}; activations may also
        be "loss_aware" (MSE ranges rescaled for the model output, ``quantization.loss_aware``).
      preprocess: float transforms to apply first, any of ("bn_fold", "cle"). The rewrites
        that make the graph deployable (``preprocess.as_deployed``: padding, input scaling and
        BatchNorm folds, two-operator layer splits) always run, so () means just those.

    Returns:
      A calibrated fake-quant tf_keras model (save/load it inside ``quantize_scope()``).
    """
    model = as_tf_keras(model)
    check_tf_keras_model(model)
    policy = BitPolicy.parse(policy)
    _split_init(init)
    plain, configs = strip_annotations(model)
    float_model = run_preprocess(plain, preprocess)
    qmodel = build_quantized_model(float_model, policy, init, configs)
    return calibrate(qmodel, float_model, calibration_data, batch_size, seed)


def save_model(model, path):
    """Save a quantized model as HDF5 (``.h5``) or a SavedModel directory.

    TFMOT's quantize layers do not round-trip through the native ``.keras`` format (their
    variables are created twice on load), so that format is refused with this advice.
    """
    path = str(path)
    if path.endswith(".keras"):
        raise ValueError(f"Cannot save a quantized model to '{path}': TFMOT quantize layers do not "
                         "load back from the .keras format. Use a '.h5' file or a SavedModel "
                         "directory (any other path).")
    model.save(path, save_format="h5" if path.endswith(".h5") else "tf")


def load_model(path):
    """Load a model saved by ``save_model`` (or ``model.save``) inside ``quantize_scope``, with
    the simulated rounding of TFLM builtins re-linked (``requantization``)."""
    from tfq_tiny.quantization.requantization import link_requantization

    with quantize_scope():
        model = keras.models.load_model(str(path))
    link_requantization(model)
    return model
