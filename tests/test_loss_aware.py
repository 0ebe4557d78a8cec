"""Loss-aware activation ranges: chosen for the model output, never worse than the MSE start."""
import itertools

import numpy as np
import pytest

import tfq_tiny
from tfq_tiny.ptq import PTQConfig, PTQPipeline
from tfq_tiny.quantization.calibration import quantizer_slots
from tfq_tiny.quantization.loss_aware import MAX_PASSES, SCALE_FACTORS, output_divergence


def test_output_divergence_is_kl_for_classes_and_mse_otherwise():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    assert output_divergence(logits, logits) == pytest.approx(0.0, abs=1e-12)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    other = logits + np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert output_divergence(logits, other) > 0
    assert output_divergence(probabilities, other) == pytest.approx(
        output_divergence(logits, other)), "probabilities are recognised and not re-softmaxed"
    assert output_divergence(np.ones((4, 1)), np.zeros((4, 1))) == pytest.approx(1.0)


def _divergence(qmodel, float_model, x):
    return output_divergence(float_model.predict(x, verbose=0), qmodel.predict(x, verbose=0))


def test_loss_aware_ranges_lower_the_output_divergence_and_stay_exportable(small_cnn, images):
    from tfq_tiny.export import to_tflite
    from tfq_tiny.preprocess import preprocess

    mse = tfq_tiny.quantize_model(small_cnn, "w8a4", images)
    aware = tfq_tiny.quantize_model(small_cnn, "w8a4", images,
                                    init={"weights": "mse", "activations": "loss_aware"})
    float_model = preprocess(small_cnn, ("bn_fold", "cle"))
    assert _divergence(aware, float_model, images) < _divergence(mse, float_model, images)
    scales = {s.layer_name: (s.variables["scale"].numpy(), t.variables["scale"].numpy())
              for s, t in zip(quantizer_slots(mse), quantizer_slots(aware)) if s.kind != "weight"}
    ratios = [float(b / a) for a, b in scales.values()]
    assert any(r != 1.0 for r in ratios)
    products = [np.prod(c) for c in itertools.product(SCALE_FACTORS + (1.0,), repeat=MAX_PASSES)]
    assert all(min(abs(r - p) for p in products) < 1e-5 for r in ratios)
    assert len(to_tflite(aware)) > 0


def test_the_pipeline_records_the_factors_and_weights_cannot_be_loss_aware(small_cnn, images):
    pipeline = PTQPipeline(PTQConfig(activation_init="loss_aware", optimize="none",
                                     bias_tuning=False), progress=False)
    pipeline.run(small_cnn, images, "w8a4")
    assert pipeline.range_refinement
    for record in pipeline.range_refinement:
        assert record["factor"] in SCALE_FACTORS + (1.0,)
        assert record["divergence_after"] <= record["divergence_before"]
    assert any(r["factor"] != 1.0 for r in pipeline.range_refinement)
    sweeps = [r["pass"] for r in pipeline.range_refinement]
    last = [r for r in pipeline.range_refinement if r["pass"] == max(sweeps)]
    assert max(sweeps) == MAX_PASSES - 1 or all(r["factor"] == 1.0 for r in last), \
        "sweeps repeat until one keeps every range"
    assert PTQConfig.from_config(PTQConfig(activation_init="loss_aware").get_config()) \
        .activation_init == "loss_aware"
    with pytest.raises(ValueError, match="weight_init"):
        PTQConfig(weight_init="loss_aware")
    with pytest.raises(ValueError, match="'activations'"):
        tfq_tiny.quantize_model(small_cnn, "w4a4", images, init="loss_aware")


def test_the_model_output_quantizer_keeps_its_mse_range(small_cnn, images):
    pipeline = PTQPipeline(PTQConfig(activation_init="loss_aware", optimize="none",
                                     bias_tuning=False), progress=False)
    pipeline.run(small_cnn, images, "w8a4")
    refined = {r["layer"] for r in pipeline.range_refinement}
    assert "fc" not in refined and "r1" in refined
