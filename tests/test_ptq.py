"""The PTQ pipeline: optimisers beat nearest rounding, AdaRound/BitSplit end on the grid,
bias tuning helps, configs round-trip, runs are reproducible."""
import numpy as np
import pytest

from tfq_tiny._compat import keras
from tfq_tiny.ptq import PTQConfig, PTQPipeline, find_units
from tfq_tiny.ptq.adaround import AdaRound
from tfq_tiny.ptq.bitsplit import BitSplit
from tfq_tiny.ptq import reconstruction
from tfq_tiny.ptq.reconstruction import (ReconstructionModel, StepCounter, StepSchedule, fit,
                                         reconstruction_mse, tensor_values, unit_forward)
from tfq_tiny.ptq.units import float_name
from tfq_tiny.quantization import build_quantized_model, calibrate
from tfq_tiny.preprocess import fold_batch_norm


@pytest.fixture(scope="module")
def trained():
    """A small conv net fitted to a random teacher, so its weights are not i.i.d. noise."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    i = keras.Input((10, 10, 3), name="x")
    x = layers.Conv2D(8, 3, name="c1")(i)
    x = layers.ReLU(name="r1")(x)
    x = layers.DepthwiseConv2D(3, name="dw")(x)
    x = layers.ReLU(name="r2")(x)
    x = layers.Conv2D(8, 1, name="pw")(x)
    x = layers.Flatten(name="flat")(x)
    model = keras.Model(i, layers.Dense(4, name="fc")(x))
    rng = np.random.default_rng(0)
    data = rng.normal(size=(256, 10, 10, 3)).astype("float32")
    labels = np.argmax(data[:, :4, :4, :].reshape(256, -1)[:, :4], axis=1)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data, labels, epochs=3, verbose=0)
    return model, data


def _layer_unit(model, data, policy="w4a8", name="pw"):
    float_model = fold_batch_norm(model)
    qmodel = build_quantized_model(float_model, policy)
    calibrate(qmodel, float_model, data)
    graph, units = find_units(qmodel, "layer")
    unit = next(u for u in units if u.name == name)
    inputs = tensor_values(qmodel, unit.inputs, data)[0]
    target = tensor_values(float_model, [float_name(graph, unit.output)], data)[0]
    return qmodel, unit, inputs, target


@pytest.mark.parametrize("optimize", ["qparam", "weights", "bits", "round"])
def test_each_optimiser_beats_nearest_rounding_on_a_layer(trained, optimize):
    model, data = trained
    _, unit, inputs, target = _layer_unit(model, data)
    forward = unit_forward(unit)
    nearest = reconstruction_mse(forward, inputs, target)
    config = PTQConfig(optimize=optimize, iterations=400, revert_if_worse=False)
    from tfq_tiny.ptq.optimiser import OPTIMISERS

    optimiser = OPTIMISERS[optimize](config)
    if optimize == "bits":
        optimiser.solve(unit, inputs)
    else:
        recon = ReconstructionModel(forward, optimiser.prepare(unit), optimiser.regularizer())
        fit(recon, inputs, target, config.iterations, 32, optimiser.callbacks())
    optimiser.finalize(unit)
    assert reconstruction_mse(forward, inputs, target) < nearest


def test_grouped_steps_keep_schedules_on_the_true_step_count(trained, monkeypatch):
    """Steps run in groups per graph call; schedules and counters still see every step."""
    model, data = trained
    _, unit, inputs, target = _layer_unit(model, data)
    monkeypatch.setattr(reconstruction, "SCHEDULE_POINTS", 10)

    class Record(StepSchedule):
        steps = []

        def update(self, step):
            self.steps.append((step, self.total))

    class Count(StepCounter):
        done = 0

        def advance(self, steps, logs):
            Count.done += steps

    optimiser = AdaRound(PTQConfig(optimize="round"))
    recon = ReconstructionModel(unit_forward(unit), optimiser.prepare(unit),
                                optimiser.regularizer())
    assert reconstruction.group_size(256 // 32, 320) == 8
    fit(recon, inputs, target, 320, 32, [Record(), Count()] + optimiser.callbacks())
    assert Record.steps == [(s, 320) for s in range(0, 320, 8)]
    assert Count.done == 320
    assert float(optimiser.beta.numpy()) < 3.0


def _codes_on_grid(unit):
    from tfq_tiny.ptq.optimiser import weight_slots

    for slot in weight_slots(unit):
        scale = slot.quantizer._broadcast(slot.variables["scale"], len(slot.weight.shape))
        codes = (slot.weight / scale).numpy()
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
        qmin, qmax = slot.quantizer.int_range
        assert codes.min() >= qmin - 1e-4 and codes.max() <= qmax + 1e-4


def test_adaround_converges_to_hard_rounding_on_the_grid(trained):
    model, data = trained
    _, unit, inputs, target = _layer_unit(model, data, name="c1")
    config = PTQConfig(optimize="round", iterations=4000, learning_rate=1e-2)
    optimiser = AdaRound(config)
    recon = ReconstructionModel(unit_forward(unit), optimiser.prepare(unit),
                                optimiser.regularizer())
    fit(recon, inputs, target, config.iterations, 32, optimiser.callbacks())
    for h in optimiser.soft_values():
        assert np.all(np.minimum(np.abs(h), np.abs(1 - h)) <= 0.01)
    optimiser.finalize(unit)
    _codes_on_grid(unit)


def test_bitsplit_result_on_grid(trained):
    model, data = trained
    _, unit, inputs, target = _layer_unit(model, data, policy="w2a8", name="pw")
    before = reconstruction_mse(unit_forward(unit), inputs, target)
    optimiser = BitSplit(PTQConfig(optimize="bits"))
    optimiser.solve(unit, inputs)
    optimiser.finalize(unit)
    _codes_on_grid(unit)
    assert reconstruction_mse(unit_forward(unit), inputs, target) < before


def test_bias_tuning_lowers_output_mse(trained):
    model, data = trained
    pipeline = PTQPipeline(PTQConfig(optimize="none", bias_tuning_iterations=300,
                                     revert_if_worse=False), progress=False)
    pipeline.run(model, data, "w4a4")
    record = pipeline.history[-1]
    assert record["unit"] == "bias_tuning" and record["mse_optimised"] < record["mse_before"]


def test_top1_agreement_counts_equal_decisions():
    target = np.array([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0]], np.float32)
    identity = lambda x, training: x  # noqa: E731
    assert reconstruction.top1_agreement(identity, target, target) == 1.0
    swapped = lambda x, training: x[:, ::-1]  # noqa: E731
    assert reconstruction.top1_agreement(swapped, target, target) == 0.0
    assert reconstruction.top1_agreement(swapped, target[:, :1], target[:, :1]) is None


@pytest.mark.parametrize("agreements,reverted", [((0.9, 0.8), True), ((0.8, 0.8), False)])
def test_bias_tuning_guard_reverts_when_fewer_decisions_agree(trained, monkeypatch, agreements, reverted):
    from tfq_tiny.ptq import pipeline as pipeline_module

    model, data = trained
    config = dict(optimize="none", bias_tuning_iterations=100, revert_if_worse=False, seed=2)
    untuned = PTQPipeline(PTQConfig(bias_tuning=False, **config), progress=False).run(model, data, "w4a4")
    values = iter(agreements)
    monkeypatch.setattr(pipeline_module, "top1_agreement", lambda *args: next(values))
    pipeline = PTQPipeline(PTQConfig(bias_tuning_guard=True, **config), progress=False)
    tuned = pipeline.run(model, data, "w4a4")
    record = pipeline.history[-1]
    assert record["reverted"] is reverted
    assert (record["agreement_before"], record["agreement_after"]) == agreements
    biases = [[v.numpy() for v in m.weights if "bias" in v.name] for m in (untuned, tuned)]
    assert all(np.array_equal(a, b) for a, b in zip(*biases)) is reverted


def test_block_units_follow_structure(small_cnn, images):
    qmodel = build_quantized_model(fold_batch_norm(small_cnn), "w4a4")
    _, blocks = find_units(qmodel, "block")
    _, layers = find_units(qmodel, "layer")
    assert [u.name for u in layers] == ["c1", "dw", "pw", "fc"]
    residual = next(u for u in blocks if len(u.weight_layers) == 2)
    assert {l.layer.name for l in residual.weight_layers} == {"dw", "pw"}
    assert residual.inputs == ["quant_r1"] and residual.output == "quant_r3"


def test_block_reconstruction_runs_and_improves(small_cnn):
    images = np.random.default_rng(2).normal(size=(256, 16, 16, 3)).astype("float32")
    pipeline = PTQPipeline(PTQConfig(optimize="weights", granularity="block", iterations=300,
                                     bias_tuning=False), progress=False)
    pipeline.run(small_cnn, images, "w4a8")
    blocks = [r for r in pipeline.history if r["unit"].startswith("block_")]
    assert blocks and all(r["mse_optimised"] < r["mse_before"] for r in blocks)
    assert all(r["mse_after"] <= r["mse_before"] for r in pipeline.history)


def test_qdrop_feeds_float_input_elements_with_its_probability(trained):
    model, data = trained
    _, unit, inputs, target = _layer_unit(model, data)
    recon = ReconstructionModel(unit_forward(unit), [], drop_prob=0.3)
    quantized, full = np.zeros((64, 100), np.float32), np.ones((64, 100), np.float32)
    mixed = recon._mix((quantized, full)).numpy()
    assert set(np.unique(mixed)) == {0.0, 1.0} and 0.25 < mixed.mean() < 0.35
    groups = AdaRound(PTQConfig()).prepare(unit)
    with pytest.raises(ValueError, match="float_inputs"):
        fit(ReconstructionModel(unit_forward(unit), groups, drop_prob=0.5), inputs, target, 10, 32)


def test_activation_ranges_learned_beside_rounding_with_qdrop(trained):
    """learn_activation_ranges moves the activation scales; with QDrop every unit still ends
    no worse than its init on the quantized calibration inputs."""
    from tfq_tiny.quantization.calibration import quantizer_slots

    model, data = trained
    scales = {}
    for learn in (False, True):
        config = PTQConfig(optimize="round", iterations=200, bias_tuning=False,
                           learn_activation_ranges=learn, drop_prob=0.5 if learn else 0.0)
        pipeline = PTQPipeline(config, progress=False)
        q = pipeline.run(model, data, "w4a4")
        scales[learn] = {s.layer_name: s.variables["scale"].numpy().copy()
                         for s in quantizer_slots(q) if s.kind == "output"}
        assert all(r["mse_after"] <= r["mse_before"] for r in pipeline.history)
    moved = [n for n in scales[True] if not np.allclose(scales[True][n], scales[False][n])]
    assert moved


def test_config_json_round_trip_and_validation():
    config = PTQConfig(optimize="qparam", granularity="block", iterations=7, preprocess="none")
    assert PTQConfig.from_json(config.to_json()) == config
    assert PTQConfig.preset("fast").iterations < PTQConfig().iterations
    with pytest.raises(ValueError, match="layer-wise only"):
        PTQConfig(optimize="bits", granularity="block")
    with pytest.raises(ValueError, match="optimize"):
        PTQConfig(optimize="magic")
    with pytest.raises(ValueError, match="drop_prob"):
        PTQConfig(drop_prob=1.0)
    with pytest.raises(ValueError, match="Unknown PTQConfig fields"):
        PTQConfig.from_config({"iters": 3})


def test_config_written_before_the_guard_existed_runs_without_it():
    old = PTQConfig().get_config()
    del old["bias_tuning_guard"]
    assert PTQConfig().bias_tuning_guard
    assert not PTQConfig.from_config(old).bias_tuning_guard
    assert PTQConfig.from_config({**old, "bias_tuning_guard": True}).bias_tuning_guard
    del old["range_refinement_passes"]
    assert PTQConfig.from_config(old).range_refinement_passes == 1
    with pytest.raises(ValueError, match="range_refinement_passes"):
        PTQConfig(range_refinement_passes=0)


def test_same_seed_same_result(trained):
    model, data = trained
    outs = []
    for _ in range(2):
        config = PTQConfig(optimize="round", iterations=60, bias_tuning_iterations=30, seed=3)
        q = PTQPipeline(config, progress=False).run(model, data[:128], "w4a4")
        outs.append(q.predict(data[:32], verbose=0))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_interrupted_run_resumes_to_the_same_result(trained, tmp_path):
    model, data = trained
    config = PTQConfig(optimize="weights", iterations=40, bias_tuning_iterations=20, seed=5)
    reference = PTQPipeline(config, progress=False).run(model, data[:128], "w4a4")

    class Interrupt(Exception):
        pass

    class StopInSecondUnit(keras.callbacks.Callback):
        fits = 0

        def on_train_end(self, logs=None):
            StopInSecondUnit.fits += 1
            if StopInSecondUnit.fits == 2:
                raise Interrupt()

    first = PTQPipeline(config, callbacks=[StopInSecondUnit()], progress=False,
                        checkpoint_dir=tmp_path)
    with pytest.raises(Interrupt):
        first.run(model, data[:128], "w4a4")
    assert [r["unit"] for r in first.history] == ["c1"]
    resumed = PTQPipeline(config, progress=False, checkpoint_dir=tmp_path)
    out = resumed.run(model, data[:128], "w4a4")
    assert resumed.history[0] == first.history[0]
    np.testing.assert_allclose(out.predict(data[:32], verbose=0),
                               reference.predict(data[:32], verbose=0), atol=1e-6)
