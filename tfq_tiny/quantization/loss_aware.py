"""Loss-aware activation ranges: clip each activation where the model's output suffers least.

MSE initialisation picks every activation range for its own tensor. That range is not the one
best for the network: a tighter clip of a 4-bit ReLU output loses a few large values but gives
the many small ones finer steps, and the layers after it sum those steps up. As LAPQ (Nahshan et
al. 2019) does with the task loss, ``refine_activation_ranges`` chooses the ranges for the model
output instead, without labels: coordinate descent over the activation quantizers in graph
order, each trying its current scale times ``SCALE_FACTORS`` (zero point kept, so a ReLU range
keeps 0 and moves its top) and keeping the factor with the smallest divergence between the
float and the quantized model's outputs on calibration samples (mean KL of the class
probabilities for a classifier, mean squared error otherwise). A range chosen early is chosen
for the later ranges' MSE values, so the sweep repeats until one changes nothing (at most
``MAX_PASSES``).

The quantizers of the model's own outputs keep their MSE range: clipping the logits lowers the
KL (a softmax saturates anyway) but moves them away from the float logits, which reconstruction
and bias tuning then try to match by the MSE.

Used by ``calibrate`` for activation quantizers whose ``init`` is ``"loss_aware"`` (their MSE
range is the starting point).
"""
import numpy as np

from tfq_tiny._compat import tf
from tfq_tiny.quantization.calibration import quantizer_slots, tie_activation_ranges

SCALE_FACTORS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.1, 1.25)
MAX_SAMPLES = 512
MAX_PASSES = 3


def _probabilities(outputs):
    """Rows of class probabilities: the outputs themselves if they already are, else softmax."""
    outputs = np.asarray(outputs, np.float64)
    if outputs.min() >= 0 and np.allclose(outputs.sum(-1), 1.0, atol=1e-3):
        return outputs
    shifted = outputs - outputs.max(-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(-1, keepdims=True)


def output_divergence(reference, outputs):
    """Mean KL(reference || outputs) of class probabilities for (batch, classes) outputs with
    more than one class, else the mean squared error."""
    reference, outputs = np.asarray(reference), np.asarray(outputs)
    if reference.ndim == 2 and reference.shape[1] > 1:
        p, q = _probabilities(reference), _probabilities(outputs)
        eps = 1e-12
        return float(np.mean(np.sum(p * (np.log(p + eps) - np.log(q + eps)), -1)))
    return float(np.mean((reference.astype(np.float64) - outputs) ** 2))


def refine_activation_ranges(qmodel, float_model, samples, slots, factors=SCALE_FACTORS,
                             batch_size=128, max_passes=MAX_PASSES):
    """Scale each of ``slots``' activation ranges by the factor (or 1) that minimises
    ``output_divergence`` of ``qmodel`` from ``float_model`` on ``samples`` (the first
    ``MAX_SAMPLES`` are used), sweeping the slots until a sweep keeps every range or
    ``max_passes`` sweeps ran; quantizers of the model's outputs are skipped. Returns one record
    per slot and sweep: layer, pass, chosen factor, divergence before and after."""
    output_layers = {id(t._keras_history.layer) for t in qmodel.outputs}
    slots = [s for s in slots if not (s.kind == "output" and id(s.layer) in output_layers)]
    x = np.asarray(samples, np.float32)[:MAX_SAMPLES]
    reference = float_model.predict(x, batch_size=batch_size, verbose=0)
    every_slot = quantizer_slots(qmodel)
    forward = tf.function(lambda batch: qmodel(batch, training=False))

    def divergence():
        outputs = np.concatenate([forward(tf.constant(x[i:i + batch_size])).numpy()
                                  for i in range(0, len(x), batch_size)])
        return output_divergence(reference, outputs)

    current = divergence()
    records = []
    for sweep in range(max_passes):
        changed = False
        for slot in slots:
            scale = slot.variables["scale"]
            start = scale.numpy()
            before, best = current, (current, 1.0)
            for factor in factors:
                scale.assign(start * factor)
                tie_activation_ranges(qmodel, every_slot)
                best = min(best, (divergence(), factor))
            current, factor = best
            changed = changed or factor != 1.0
            scale.assign(start * factor)
            tie_activation_ranges(qmodel, every_slot)
            records.append({"layer": slot.layer_name, "kind": slot.kind, "pass": sweep,
                            "factor": factor, "divergence_before": before,
                            "divergence_after": current})
        if not changed:
            break
    return records
