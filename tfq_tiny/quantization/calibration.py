"""Calibration data handling and range initialisation of a quantized model's quantizers.

``quantizer_slots`` is the one place that knows where TFMOT keeps quantizer state inside
``QuantizeWrapperV2`` / ``QuantizeLayer``; PTQ, analysis and export read quantizers
through it.
"""
from dataclasses import dataclass

import numpy as np

from tfq_tiny._compat import QuantizeLayer, keras, tf, tfmot
from tfq_tiny.errors import CalibrationDataError
from tfq_tiny.quantization.configs import is_concatenate
from tfq_tiny.quantization.grid import round_half_away
from tfq_tiny.quantization.range_init import (ActivationObserver, asymmetric_qparams,
                                              starting_init, weight_qparams)

QuantizeWrapper = tfmot.quantization.keras.QuantizeWrapperV2


@dataclass
class QuantizerSlot:
    """One quantizer in a quantized model: what it quantizes and its variables."""

    layer: object
    kind: str
    quantizer: object
    variables: dict
    weight: object = None

    @property
    def layer_name(self):
        """Name of the original (unwrapped) layer, or of the model input for input quantizers."""
        if self.kind == "input":
            return self.layer.input._keras_history.layer.name
        return self.layer.layer.name


def layer_slots(layer):
    """The quantizers of one layer of a quantized model (empty for plain layers)."""
    if isinstance(layer, QuantizeLayer) and layer.quantizer is not None:
        return [QuantizerSlot(layer, "input", layer.quantizer, layer.quantizer_vars)]
    slots = []
    if isinstance(layer, QuantizeWrapper):
        for weight, quantizer, variables in layer._weight_vars:
            slots.append(QuantizerSlot(layer, "weight", quantizer, variables, weight))
        for quantizer in layer._output_quantizers:
            slots.append(QuantizerSlot(layer, "output", quantizer, layer._output_quantizer_vars))
    return slots


def quantizer_slots(model):
    """Every quantizer of ``model`` in layer order: kind is 'input', 'weight' or 'output'."""
    return [slot for layer in model.layers for slot in layer_slots(layer)]


def set_qparams(slot, scale, zero_point):
    slot.variables["scale"].assign(np.asarray(scale, np.float32).reshape(
        slot.variables["scale"].shape))
    slot.variables["zero_point"].assign(np.asarray(zero_point, np.float32).reshape(
        slot.variables["zero_point"].shape))


def as_batches(data, batch_size=128, input_shape=None):
    """Yield float32 NumPy batches of model inputs from an array, list or ``tf.data.Dataset``.

    Labels in ``(x, y)`` elements are dropped. Raises CalibrationDataError on empty or
    non-finite data or a shape that does not match ``input_shape``.
    """
    if data is None:
        raise CalibrationDataError(
            "calibration_data is required to set activation ranges: pass ~1024 unlabeled "
            "training samples (a NumPy array or a tf.data.Dataset), or quantize weights only "
            "with activation_bits=None (e.g. policy='w4a32').")
    if isinstance(data, tf.data.Dataset):
        def batches():
            for element in data.unbatch().batch(batch_size) if _is_batched(data) else \
                    data.batch(batch_size):
                if isinstance(element, (tuple, list)):
                    element = element[0]
                if isinstance(element, dict):
                    raise CalibrationDataError("Calibration datasets of dicts are not supported; "
                                               "map them to the model's input tensor first.")
                yield np.asarray(element, np.float32)
        source = batches()
    else:
        if isinstance(data, (tuple, list)) and len(data) == 2 and not np.isscalar(data[1]) and \
                np.ndim(data[0]) > np.ndim(data[1]):
            data = data[0]
        array = np.asarray(data, np.float32)
        source = (array[i:i + batch_size] for i in range(0, len(array), batch_size)) \
            if array.ndim > 0 else iter(())
    seen = 0
    for batch in source:
        if input_shape is not None:
            expected = tuple(input_shape[1:])
            if tuple(batch.shape[1:]) != expected:
                raise CalibrationDataError(
                    f"Calibration samples have shape {tuple(batch.shape[1:])} but the model "
                    f"expects {expected} (batch dimension first). Reshape the data to match.")
        if not np.all(np.isfinite(batch)):
            raise CalibrationDataError(
                "Calibration data contains NaN or Inf values. Clean or re-normalise the samples "
                "(the quantization ranges would be meaningless).")
        seen += len(batch)
        yield batch
    if seen == 0:
        raise CalibrationDataError(
            "Calibration data is empty. Pass at least one sample (1024 is the usual amount).")


def _is_batched(dataset):
    spec = dataset.element_spec
    spec = spec[0] if isinstance(spec, tuple) else spec
    return getattr(spec, "shape", None) is not None and spec.shape.rank is not None and \
        spec.shape.rank > 0 and spec.shape[0] is None


def observed_activation_slots(slots):
    """The activation quantizers whose range comes from data: not tied to their input (average
    pooling) or consumer (Concatenate inputs) and without a fixed range (softmax)."""
    return [s for s in slots if s.kind in ("input", "output") and not s.quantizer.tie_to_input
            and not s.quantizer.tie_to_consumer and s.quantizer.fixed_range is None]


def calibrate(qmodel, float_model, calibration_data, batch_size=128, seed=0):
    """Initialise every quantizer of ``qmodel`` from weights and float activations.

    Weight ranges come from the kernels; activation ranges from ``float_model`` (the
    preprocessed float model with the same layer names) run on ``calibration_data``, which
    may be None only when no activation needs observing (weights-only policies). Activation
    quantizers with ``init="loss_aware"`` start from their MSE range, which
    ``loss_aware.refine_activation_ranges`` then rescales for the model output (the PTQ
    pipeline instead refines the finished model).
    """
    slots = quantizer_slots(qmodel)
    for slot in slots:
        if slot.kind == "weight":
            scale, zp = weight_qparams(slot.weight.numpy(), slot.quantizer.num_bits,
                                       slot.quantizer.init, slot.quantizer.channel_axes)
            set_qparams(slot, scale, zp)
    act_slots = [s for s in slots if s.kind in ("input", "output")]
    observed = observed_activation_slots(slots)
    if observed:
        names = [s.layer_name for s in observed]
        probe = keras.Model(float_model.inputs, [float_model.get_layer(n).output for n in names])
        observers = [ActivationObserver(seed=seed + i) for i in range(len(names))]
        for batch in as_batches(calibration_data, batch_size, float_model.input_shape):
            outputs = probe(batch, training=False)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            for observer, out in zip(observers, outputs):
                observer.update(out.numpy())
        for slot, observer in zip(observed, observers):
            set_qparams(slot, *observer.qparams(slot.quantizer.num_bits,
                                                starting_init(slot.quantizer.init)))
    for slot in act_slots:
        if slot.quantizer.fixed_range is not None:
            set_qparams(slot, *asymmetric_qparams(*slot.quantizer.fixed_range,
                                                  slot.quantizer.num_bits))
    tie_activation_ranges(qmodel, slots)
    from tfq_tiny.quantization.requantization import link_requantization
    link_requantization(qmodel, slots)
    refined = [s for s in observed if s.quantizer.init == "loss_aware"]
    if refined:
        from tfq_tiny.quantization.loss_aware import MAX_SAMPLES, refine_activation_ranges
        samples, kept = [], 0
        for batch in as_batches(calibration_data, batch_size, float_model.input_shape):
            samples.append(np.asarray(batch))
            kept += len(samples[-1])
            if kept >= MAX_SAMPLES:
                break
        refine_activation_ranges(qmodel, float_model, np.concatenate(samples), refined,
                                 batch_size=batch_size)
    snap_biases(qmodel, slots)
    return qmodel


def input_activation_slots(layer, slots):
    """For each input of ``layer``: the activation quantizer whose grid it lies on, or None.

    Walks back through pass-through layers (Flatten, MaxPooling, ...).
    """
    by_layer = {id(s.layer): s for s in slots if s.kind in ("input", "output")}
    inputs = layer.input if isinstance(layer.input, list) else [layer.input]
    found = []
    for tensor in inputs:
        producer = tensor._keras_history.layer
        while producer is not None:
            if id(producer) in by_layer:
                break
            if isinstance(producer, (QuantizeWrapper, keras.layers.InputLayer)):
                producer = None
                break
            inbound = producer.input
            producer = (inbound[0] if isinstance(inbound, list) else inbound)._keras_history.layer
        found.append(by_layer[id(producer)] if producer is not None else None)
    return found


def input_activation_slot(layer, slots):
    """The activation quantizer whose grid the (first) input of ``layer`` lies on, or None."""
    return input_activation_slots(layer, slots)[0]


def grid_ties(slots):
    """(source slot, tied slot) pairs, in the order to copy them: each Concatenate's grid to the
    quantizers of its inputs (``tie_to_consumer``), then each tied average pool's input grid to
    its output (``tie_to_input``), which may itself follow a Concatenate."""
    ties = []
    for slot in slots:
        if slot.kind == "output" and is_concatenate(slot.layer):
            ties += [(slot, source) for source in input_activation_slots(slot.layer, slots)
                     if source is not None and source.quantizer.tie_to_consumer]
    for slot in slots:
        if slot.kind == "output" and slot.quantizer.tie_to_input:
            source = input_activation_slot(slot.layer, slots)
            if source is not None:
                ties.append((source, slot))
    return ties


FUNCTION_INPUT_MIN_SCALE = 2.0 ** -25
"""Smallest input scale given to a softmax/sigmoid/tanh: TFLM's int8 SOFTMAX needs its multiplier
beta * scale * 2**26 above 1 (LOGISTIC and TANH need scale >= 2**-28). Logits that vary by less
than 255 such steps (an untrained model's) give equal probabilities either way."""


def tie_activation_ranges(qmodel, slots=None):
    """Copy tied qparams (Concatenate grids to their inputs, average pool inputs to outputs) and
    keep the input scale of every softmax/sigmoid/tanh at least ``FUNCTION_INPUT_MIN_SCALE``."""
    slots = quantizer_slots(qmodel) if slots is None else slots
    for source, target in grid_ties(slots):
        target.variables["scale"].assign(source.variables["scale"])
        target.variables["zero_point"].assign(source.variables["zero_point"])
    for slot in slots:
        if slot.kind == "output" and slot.quantizer.fixed_range is not None:
            source = input_activation_slot(slot.layer, slots)
            if source is not None and float(source.variables["scale"].numpy()) < FUNCTION_INPUT_MIN_SCALE:
                source.variables["scale"].assign(
                    np.full(source.variables["scale"].shape, FUNCTION_INPUT_MIN_SCALE, np.float32))


def snap_biases(qmodel, slots=None):
    """Put every float bias on the integer grid it deploys on (scale input_scale x weight_scale).

    The converter stores ``round(b / (s_in * s_w))`` as int32; snapping the simulated bias to
    the same value removes a per-channel offset of up to half an accumulator step, which at 4
    bits is enough to move about 1 % of outputs by one step. Call it whenever ranges changed
    (``calibrate`` and the PTQ pipeline do). Biases of layers with float inputs, and biases too
    large for int32 on that grid (the converter widens those channels' scales), stay as they are.
    """
    slots = quantizer_slots(qmodel) if slots is None else slots
    for slot in slots:
        layer = getattr(slot.layer, "layer", None)
        if slot.kind != "weight" or not getattr(layer, "use_bias", False):
            continue
        source = input_activation_slot(slot.layer, slots)
        if source is None:
            continue
        bias = layer.bias.numpy().astype(np.float64)
        grid = np.float64(np.float32(source.variables["scale"].numpy().reshape(-1)[0])) * \
            np.asarray(slot.variables["scale"].numpy(), np.float32).astype(np.float64).reshape(-1)
        codes = round_half_away(bias / grid)
        ok = np.isfinite(codes) & (np.abs(codes) < 2.0 ** 30)
        layer.bias.assign(np.where(ok, codes * grid, bias).astype(np.float32).reshape(layer.bias.shape))
