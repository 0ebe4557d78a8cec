"""Non-uniform k-means weight quantization (HAQ's original scheme), simulation only.

Each weight tensor is clustered into ``2**b`` centroids with Lloyd's algorithm in one dimension,
initialised deterministically at ``2**b`` points linearly spaced over ``[min, max]`` of the
tensor (Deep Compression's "linear" initialisation). The centroids are the quantizer's only
variables; the forward pass replaces every weight by its nearest centroid, with a
straight-through gradient to the weight and the summed gradient of its members to each centroid
(as Deep Compression fine-tunes a codebook).

A k-means tensor costs ``b`` bits per weight (the cluster indices, packed) plus the codebook
(``2**b`` float32 values, or float16 with ``centroid_bytes=2``) in FLASH, against ``b`` bits per
weight plus one float32 scale per output channel for the uniform grid; ``kmeans_flash`` gives
the figure for a whole model so the two can be compared at equal memory. Integer kernels cannot
run a codebook (every MAC would need a table lookup of a float), so a k-means model is for
simulation only and ``to_tflite`` refuses it.

    qmodel = kmeans_quantize_model(model, "w4a8", calibration_data)
    kmeans_flash(model, "w4a8")   # bytes, vs tfq_tiny.search.memory(model, "w4a8")[0]
"""
import numpy as np

from tfq_tiny._compat import keras, tf, tfmot
from tfq_tiny.analysis.ops import op_graph
from tfq_tiny.analysis.stats import BIAS_BYTES
from tfq_tiny.graph import check_tf_keras_model
from tfq_tiny.preprocess import preprocess as run_preprocess
from tfq_tiny.quantization.calibration import QuantizeWrapper, calibrate, quantizer_slots
from tfq_tiny.quantization.configs import WeightLayerQuantizeConfig
from tfq_tiny.quantization.grid import check_bits
from tfq_tiny.quantization.policy import BitPolicy
from tfq_tiny.quantization.quantize import build_quantized_model, quantize_scope, strip_annotations
from tfq_tiny.quantization.quantizers import UniformQuantizer

DEFAULT_ITERATIONS = 300


def lloyd_kmeans(values, bits, iterations=DEFAULT_ITERATIONS):
    """Sorted ``2**bits`` centroids of one-dimensional k-means (Lloyd) on ``values``.

    Starts from points linearly spaced over ``[min, max]`` and stops when the centroids no longer
    move or after ``iterations`` rounds. A centroid whose cluster is empty stays where it is.
    Works on sorted values with prefix sums, so a round costs O(2**bits log n).
    """
    x = np.sort(np.asarray(values, np.float64).ravel())
    if x.size == 0:
        raise ValueError("k-means needs at least one value.")
    centroids = np.linspace(x[0], x[-1], 1 << check_bits(bits))
    prefix = np.concatenate([[0.0], np.cumsum(x)])
    for _ in range(int(iterations)):
        cuts = np.searchsorted(x, (centroids[1:] + centroids[:-1]) / 2, side="right")
        bounds = np.concatenate([[0], cuts, [x.size]])
        counts = np.diff(bounds)
        sums = prefix[bounds[1:]] - prefix[bounds[:-1]]
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.array_equal(moved, centroids):
            break
        centroids = moved
    return centroids


def kmeans_weight_bytes(elements, bits, centroid_bytes=4):
    """FLASH bytes of one k-means tensor: packed ``bits``-bit indices plus the codebook."""
    return -(-int(elements) * int(bits) // 8) + (1 << int(bits)) * int(centroid_bytes)


class KMeansQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """Maps every value of a tensor to the nearest of ``2**num_bits`` centroids (per tensor).

    ``build`` creates the ``centroids`` variable (zeros); ``fit`` runs Lloyd's algorithm on the
    tensor's values and writes them (``kmeans_quantize_model`` does this for every kernel).
    """

    def __init__(self, num_bits, iterations=DEFAULT_ITERATIONS):
        self.num_bits = check_bits(num_bits, "num_bits")
        self.iterations = int(iterations)

    @property
    def num_centroids(self):
        return 1 << self.num_bits

    def build(self, tensor_shape, name, layer):
        return {"centroids": layer.add_weight(
            f"{name}_centroids", shape=[self.num_centroids],
            initializer=keras.initializers.Zeros(), trainable=False)}

    def fit(self, values, weights):
        """Cluster ``values`` (the tensor this quantizer quantizes) and store the centroids."""
        centroids = lloyd_kmeans(values, self.num_bits, self.iterations)
        weights["centroids"].assign(centroids.astype(np.float32))
        return centroids

    @staticmethod
    def _sorted(centroids):
        ordered = tf.gather(centroids, tf.argsort(centroids))
        return ordered, (ordered[1:] + ordered[:-1]) / 2.0

    def __call__(self, inputs, training, weights, **kwargs):
        ordered, edges = self._sorted(weights["centroids"])
        flat = tf.reshape(inputs, [-1])
        nearest = tf.gather(ordered, tf.searchsorted(edges, flat, side="right"))
        # Value: the centroid exactly (x - x == 0); gradient: identity to the weight, and the
        # sum over members to each centroid through the gather.
        return tf.reshape(nearest, tf.shape(inputs)) + (inputs - tf.stop_gradient(inputs))

    def indices(self, values, weights):
        """Cluster index (into the sorted centroids) of every value, NumPy."""
        ordered, edges = self._sorted(weights["centroids"])
        flat = tf.reshape(tf.convert_to_tensor(values, tf.float32), [-1])
        return np.asarray(tf.searchsorted(edges, flat, side="right").numpy()).reshape(
            np.shape(values))

    def to_integers(self, values, weights):
        from tfq_tiny.export.converter import ExportError

        raise ExportError(
            "k-means weight quantization is simulation only: a codebook of float centroids is not "
            "a uniform integer grid, so TFLite/TFLM kernels cannot run it. Export a model from "
            "tfq_tiny.quantize_model (uniform weights) instead; compare the two with kmeans_flash.")

    def get_config(self):
        return {"num_bits": self.num_bits, "iterations": self.iterations}

    # from_config is TFMOT's (cls(**config)); equality by config, as the uniform quantizers.
    __eq__ = UniformQuantizer.__eq__
    __ne__ = UniformQuantizer.__ne__


class KMeansWeightQuantizeConfig(WeightLayerQuantizeConfig):
    """``WeightLayerQuantizeConfig`` with a k-means kernel quantizer; the output stays uniform."""

    def __init__(self, weight_attr, channel_axes, weight_bits, activation_bits=None,
                 activation_init="mse", quantize_output=True, iterations=DEFAULT_ITERATIONS):
        super().__init__(weight_attr, channel_axes, weight_bits, activation_bits,
                         activation_init=activation_init, quantize_output=quantize_output)
        self.weight_quantizer = KMeansQuantizer(weight_bits, iterations)

    @classmethod
    def like(cls, config, iterations=DEFAULT_ITERATIONS):
        """The k-means twin of a uniform ``WeightLayerQuantizeConfig`` (same bits and output)."""
        return cls(config.weight_attr, config.channel_axes, config.weight_bits,
                   config.activation_bits, config.activation_init, config.quantize_output,
                   iterations)

    def get_config(self):
        return {"weight_attr": self.weight_attr, "channel_axes": list(self.channel_axes),
                "weight_bits": self.weight_bits, "activation_bits": self.activation_bits,
                "activation_init": self.activation_init, "quantize_output": self.quantize_output,
                "iterations": self.weight_quantizer.iterations}


KMEANS_OBJECTS = {"KMeansQuantizer": KMeansQuantizer,
                  "KMeansWeightQuantizeConfig": KMeansWeightQuantizeConfig}


def kmeans_scope():
    """``quantize_scope`` with the k-means objects, for saving/loading k-means models."""
    return quantize_scope(KMEANS_OBJECTS)


def kmeans_quantize_model(model, policy, calibration_data, init="mse",
                          preprocess=("bn_fold", "cle"), batch_size=128, seed=0,
                          iterations=DEFAULT_ITERATIONS):
    """A float model with k-means weights and uniform activations under ``policy``.

    The model is preprocessed as ``quantize_model`` does; every weight layer gets the k-means
    twin of the config ``build_quantized_model`` gives it (same weight bits, same output
    quantizer), its kernel is clustered, and the activation ranges are those ``calibrate`` sets
    on the uniform model (they depend only on the float activations and ``init``).
    """
    check_tf_keras_model(model)
    policy = BitPolicy.parse(policy)
    plain, configs = strip_annotations(model)
    float_model = run_preprocess(plain, preprocess)
    uniform = calibrate(build_quantized_model(float_model, policy, init, configs), float_model,
                        calibration_data, batch_size, seed)
    kmeans_configs = dict(configs)
    for layer in uniform.layers:
        if isinstance(layer, QuantizeWrapper) and \
                isinstance(layer.quantize_config, WeightLayerQuantizeConfig):
            kmeans_configs[layer.layer.name] = KMeansWeightQuantizeConfig.like(
                layer.quantize_config, iterations)
    qmodel = build_quantized_model(float_model, policy, init, kmeans_configs)
    ranges = {(s.kind, s.layer_name): s.variables for s in quantizer_slots(uniform)
              if s.kind != "weight"}
    for slot in quantizer_slots(qmodel):
        if isinstance(slot.quantizer, KMeansQuantizer):
            slot.quantizer.fit(slot.weight.numpy(), slot.variables)
        elif slot.kind != "weight":
            for name, variable in ranges[(slot.kind, slot.layer_name)].items():
                slot.variables[name].assign(variable)
    return qmodel


def kmeans_flash(model, policy=None, centroid_bytes=4):
    """FLASH bytes for the weights with every kernel k-means quantized.

    Per weight layer: packed ``b``-bit indices + ``2**b`` centroids of ``centroid_bytes`` + an
    int32 bias, the counterpart of ``analysis.model_statistics(...).weight_bytes`` (which counts
    a float32 scale per output channel instead of the codebook). ``model`` is a float model with
    ``policy``, or a quantized model (uniform or k-means) with ``policy=None``.
    """
    from tfq_tiny.preprocess import as_deployed

    if not any(isinstance(layer, QuantizeWrapper) for layer in model.layers):
        if policy is None:
            raise ValueError("kmeans_flash of a float model needs a policy (e.g. 'w4a8').")
        model = build_quantized_model(as_deployed(model), BitPolicy.parse(policy))
    total = 0
    for op in op_graph(model)[0]:
        if op.kernel_shape is not None:
            total += kmeans_weight_bytes(np.prod(op.kernel_shape), op.weight_bits, centroid_bytes)
            total += op.bias_size * BIAS_BYTES
    return total
