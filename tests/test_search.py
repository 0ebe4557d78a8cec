"""Mixed-precision search: memory model, constraint rule, ILP, RL state and resume."""
import json

import numpy as np
import pytest

from tfq_tiny import BitPolicy
from tfq_tiny._compat import keras
from tfq_tiny.errors import TfqError
from tfq_tiny.search import (ACTIVATION, WEIGHT, InfeasibleBudgetError, MemoryModel,
                             check_feasible, memory)
from tfq_tiny.search import knapsack
from tfq_tiny.search.knapsack import brute_force, fast_search, solve
from tfq_tiny.search.proxy import ProxyEvaluator, QATProxyEvaluator
from tfq_tiny.search.rl import RLConfig, RLSearch
from tfq_tiny.search.sensitivity import Sensitivity, anchor_width, measure_sensitivity

W, A = WEIGHT, ACTIVATION


@pytest.fixture(scope="module")
def hand_model():
    """Input (8, 2) -> Conv1D(4, k=3) + ReLU -> Flatten -> Dense(3): numbers countable by hand."""
    keras.utils.set_random_seed(4)
    x = keras.Input((8, 2), name="x")
    y = keras.layers.Conv1D(4, 3, name="conv")(x)
    y = keras.layers.ReLU(name="relu")(y)
    y = keras.layers.Flatten(name="flat")(y)
    y = keras.layers.Dense(3, name="fc")(y)
    return keras.Model(x, y)


@pytest.fixture(scope="module")
def hand_mm(hand_model):
    return MemoryModel(hand_model)


@pytest.fixture(scope="module")
def tiny_task(hand_model):
    x = np.random.default_rng(5).normal(size=(48, 8, 2)).astype("float32")
    y = np.argmax(hand_model.predict(x, verbose=0), -1)
    return x, y


def test_memory_model_by_hand(hand_model, hand_mm):
    # conv: 24 kernel values, 4 int32 biases, 4 float32 scales; fc: 72 values, 3 + 3.
    # W8: 24+16+16 + 72+12+12 = 152; W4: 12+32 + 36+24 = 104; W2: 6+32 + 18+24 = 80.
    # RAM: conv op holds input 16 values and output 24 values; fc holds 24 in + 3 logits (int8).
    assert memory(hand_model, "w8a8") == (152, 40)
    assert memory(hand_model, "w4a4") == (104, 8 + 12)
    assert memory(hand_model, "w2a2") == (80, 4 + 6)
    assert [str(v) for v in hand_mm.variables] == ["x:A", "conv:W", "relu:A", "fc:W"]
    for spec in ("w8a8", "w4a4", "w2a2", "w2a8"):
        assert hand_mm.memory(hand_mm.assignment(BitPolicy.parse(spec))) == memory(hand_model, spec)
    mixed = {(A, "x"): 2, (W, "conv"): 8, (A, "relu"): 4, (W, "fc"): 2}
    assert hand_mm.op_live_bytes(mixed) == [4 + 12, 12 + 3]
    assert hand_mm.memory(mixed) == memory(hand_model, hand_mm.policy(mixed))


def test_memory_model_matches_analysis_with_skip_connections(small_cnn):
    mm = MemoryModel(small_cnn)
    rng = np.random.default_rng(0)
    for _ in range(3):
        assignment = {v.key: int(rng.choice([2, 4, 8])) for v in mm.variables}
        assert mm.memory(assignment) == memory(small_cnn, mm.policy(assignment))
    residual = MemoryModel(small_cnn, keep_residual_8bit=True)
    assert set(residual.fixed) == {(A, "r1"), (A, "pw"), (A, "r3")}
    assert all(v.key not in residual.fixed for v in residual.searchable())


def test_memory_model_fixes_the_softmax_input_and_splits_separable_convs():
    L = keras.layers
    i = keras.Input((8, 8, 3))
    x = L.SeparableConv2D(6, 3, activation="relu", name="sep")(i)
    x = L.Dense(4, activation="softmax", name="head")(L.Flatten(name="flat")(x))
    mm = MemoryModel(keras.Model(i, x))
    assert {(W, "sep_depthwise"), (W, "sep_pointwise"), (W, "head")} <= {v.key for v in mm.variables}
    assert (A, "head") not in {v.key for v in mm.variables}     # TFLM's SOFTMAX reads int8 only
    assert (A, "sep_pointwise") in {v.key for v in mm.variables}
    assert mm.memory(mm.assignment()) == memory(keras.Model(i, x), mm.policy(mm.assignment()))


def test_memory_model_fixes_a_tanh_and_its_input_at_8_bits():
    L = keras.layers
    i = keras.Input((40, 3))
    y = L.Conv1D(8, 3, activation="relu", name="c2")(L.Conv1D(8, 5, activation="tanh", name="t1")(i))
    model = keras.Model(i, L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="gap")(y)))
    mm = MemoryModel(model)
    keys = {v.key for v in mm.variables}
    assert (A, "t1") not in keys and (A, "t1_tanh") not in keys   # TFLM's TANH is int8 only
    assert {(A, "c2"), (W, "t1"), (W, "c2")} <= keys
    assignment = {v.key: 2 for v in mm.variables}
    assert mm.memory(assignment) == memory(model, mm.policy(assignment))


def test_memory_model_fixes_the_tensors_a_concatenate_joins_at_8_bits():
    L = keras.layers
    i = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(i)
    b = L.Conv2D(4, 1, name="b")(i)
    x = L.Conv2D(4, 3, activation="relu", name="c")(L.Concatenate(name="cat")([a, b]))
    model = keras.Model(i, L.Dense(3, name="head")(L.Flatten(name="flat")(x)))
    mm = MemoryModel(model)
    keys = {v.key for v in mm.variables}
    assert not {(A, "a"), (A, "b"), (A, "cat")} & keys   # TFLM's CONCATENATION is int8 only
    assert {(A, "c"), (W, "a"), (W, "b"), (W, "c")} <= keys
    assignment = {v.key: 4 for v in mm.variables}
    assert mm.memory(assignment) == memory(model, mm.policy(assignment))


def test_constraint_rule_lowers_largest_weight_first(hand_mm):
    start = hand_mm.assignment()
    one = hand_mm.enforce(start, flash=151)
    assert one[(W, "fc")] == 4 and one[(W, "conv")] == 8
    two = hand_mm.enforce(start, flash=100)
    assert (two[(W, "fc")], two[(W, "conv")]) == (2, 8) and hand_mm.flash(two) == 98
    ram = hand_mm.enforce(start, ram=30)
    assert ram[(A, "relu")] == 4 and ram[(A, "x")] == 8 and hand_mm.ram(ram) == 28
    both = hand_mm.enforce(start, flash=104, ram=20)
    assert hand_mm.flash(both) <= 104 and hand_mm.ram(both) <= 20


def test_infeasible_budget_reports_the_minimum(hand_model, hand_mm):
    with pytest.raises(InfeasibleBudgetError) as err:
        check_feasible(hand_model, flash=50, ram=100)
    assert (err.value.min_flash, err.value.min_ram) == (80, 10)
    assert "80" in str(err.value) and "10" in str(err.value)
    assert isinstance(err.value, TfqError)
    with pytest.raises(InfeasibleBudgetError):
        hand_mm.enforce(hand_mm.assignment(), ram=9)
    assert hand_mm.check_feasible(80, 10) == (80, 10)


def test_ilp_finds_the_brute_force_optimum(small_conv1d):
    mm = MemoryModel(small_conv1d)
    rng = np.random.default_rng(1)
    low = mm.minimum()
    high = mm.memory(mm.assignment())
    for trial in range(4):
        costs = {v.key: {8: 0.0, 4: float(rng.uniform(0, 1)), 2: float(rng.uniform(1, 3))}
                 for v in mm.searchable()}
        flash = int(rng.uniform(low[0], high[0]))
        ram = int(rng.uniform(low[1], high[1]))
        solution = solve(mm, costs, flash, ram)
        best_assignment, best_value = brute_force(mm, costs, flash, ram)
        assert solution.objective == pytest.approx(best_value, abs=1e-9)
        assert solution.flash <= flash and solution.ram <= ram
        assert sum(costs[k][solution.assignment[k]] for k in costs) == pytest.approx(best_value)
    with pytest.raises(InfeasibleBudgetError):
        solve(mm, costs, low[0] - 1, ram)


def test_fast_search_returns_a_fitting_policy(hand_model, hand_mm, tiny_task):
    x, y = tiny_task
    evaluator = ProxyEvaluator(hand_model, x, x, y)
    flash, ram = memory(hand_model, "w4a4")
    solution, sens = fast_search(hand_mm, evaluator, flash, ram, progress=False)
    assert set(sens.losses) == {v.key for v in hand_mm.searchable()} and sens.anchor in (4, 8)
    tried = sorted((c["anchor"], c["gain_weight"]) for c in solution.candidates
                   if not c.get("uniform"))
    assert tried == sorted([(4, w) for w in knapsack.GAIN_WEIGHTS] + [(8, 1.0)])
    assert [c["anchor"] for c in solution.candidates if c.get("uniform")] == [4], \
        "uniform W4A4 fits its own budgets; uniform 8-bit does not"

    best = [c for c in solution.candidates if c["proxy_accuracy"] == solution.proxy_accuracy]
    assert sens.anchor in {c["anchor"] for c in best}
    assert solution.sensitivity_seconds >= sens.seconds
    assert solution.proxy_accuracy == max(c["proxy_accuracy"] for c in solution.candidates)
    assert solution.proxy_accuracy == evaluator.accuracy(solution.policy)
    assert solution.flash <= flash and solution.ram <= ram
    assert memory(hand_model, solution.policy) == (solution.flash, solution.ram)
    again = BitPolicy.from_json(solution.policy.to_json())
    assert again == solution.policy
    assert json.loads(solution.policy.to_json())["output_bits"] == 8


def test_fast_search_lets_a_separate_selector_judge_the_candidates(hand_model, hand_mm, tiny_task):
    """The selector alone decides among the ILP candidates; the sensitivities stay the
    evaluator's."""
    x, y = tiny_task
    evaluator = ProxyEvaluator(hand_model, x, x, y)
    flash, ram = memory(hand_model, "w4a4")

    def fewest_8_bit_tensors(policy):
        return -sum(b == 8 for b in hand_mm.assignment(policy).values())

    class Selector:
        judged = []

        def accuracy(self, policy):
            self.judged.append(policy)
            return fewest_8_bit_tensors(policy)

    selector = Selector()
    solution, sens = fast_search(hand_mm, evaluator, flash, ram, progress=False,
                                 selector=selector)
    distinct = {json.dumps(p.get_config(), sort_keys=True) for p in selector.judged}
    assert len(selector.judged) == len(distinct) >= 1
    assert solution.proxy_accuracy == max(map(fewest_8_bit_tensors, selector.judged))
    assert set(sens.losses) == {v.key for v in hand_mm.searchable()}


def test_fast_search_returns_the_uniform_policy_when_its_judge_prefers_it(hand_model, hand_mm,
                                                                        tiny_task):
    x, y = tiny_task
    evaluator = ProxyEvaluator(hand_model, x, x, y)
    flash, ram = memory(hand_model, "w4a4")
    uniform = hand_mm.assignment()
    uniform.update({v.key: 4 for v in hand_mm.searchable()})

    class PrefersUniform:
        def accuracy(self, policy):
            return float(hand_mm.assignment(policy) == uniform)

    solution, _ = fast_search(hand_mm, evaluator, flash, ram, progress=False,
                              selector=PrefersUniform())
    assert solution.assignment == uniform and solution.proxy_accuracy == 1.0
    assert (solution.flash, solution.ram) == hand_mm.memory(uniform)


def test_sensitivity_around_an_anchor_keeps_gains_and_stays_monotone():
    """Around 4 bits, raising a tensor to 8 may gain (negative cost) and the solver must see
    it; around 8 bits the costs are the old non-negative increases."""
    sens = Sensitivity(1.0, {"a": {8: 0.7, 4: 1.0, 2: 3.0}, "b": {8: 1.2, 4: 1.0, 2: 0.9}},
                       anchor=4)
    assert sens.costs() == {"a": {8: pytest.approx(-0.3), 4: 0.0, 2: 2.0},
                            "b": {8: pytest.approx(0.2), 4: pytest.approx(0.2),
                                  2: pytest.approx(0.2)}}
    assert sens.costs(gain_weight=0.5)["a"] == {8: pytest.approx(-0.15), 4: 0.0, 2: 2.0}
    assert sens.costs(gain_weight=0.0)["a"] == {8: 0.0, 4: 0.0, 2: 2.0}
    clean = Sensitivity(1.0, {"a": {8: 1.0, 4: 1.5, 2: 1.2}}).costs()
    assert clean == {"a": {8: 0.0, 4: 0.5, 2: 0.5}}


def test_anchor_is_the_widest_uniform_width_that_fits(hand_model, hand_mm):
    assert anchor_width(hand_mm, *memory(hand_model, "w8a8")) == 8
    assert anchor_width(hand_mm, *memory(hand_model, "w4a4")) == 4
    assert anchor_width(hand_mm, *memory(hand_model, "w2a2")) == 2
    assert anchor_width(hand_mm, 1, 1) == 2
    weights_only = memory(hand_model, "w4a8")[0]
    assert anchor_width(hand_mm, weights_only, None, kinds=(W,)) == 4


def test_fast_search_measures_around_the_budget_anchor(hand_model, hand_mm):
    """At W4A4 budgets every tensor is measured at 8 and 2 with the rest at 4."""
    seen = []

    def loss(policy):
        seen.append(hand_mm.assignment(policy))
        return float(len(seen))

    sens = measure_sensitivity(hand_mm, loss, anchor=4, progress=False)
    assert sens.anchor == 4 and all(set(by) == {8, 4, 2} for by in sens.losses.values())
    searched = [v.key for v in hand_mm.searchable()]
    for trial in seen[1:]:
        assert sorted(trial[k] for k in searched).count(4) == len(searched) - 1
    with pytest.raises(ValueError, match="anchor=3"):
        measure_sensitivity(hand_mm, loss, anchor=3, progress=False)


def _comparable(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def test_rl_search_resumes_exactly(hand_model, hand_mm, tiny_task, tmp_path):
    x, y = tiny_task
    evaluator = ProxyEvaluator(hand_model, x, x, y)
    flash, ram = memory(hand_model, "w4a4")
    config = RLConfig(episodes=3, warmup=1, hidden=(16, 16), batch_size=8, seed=3)
    full = RLSearch(hand_mm, evaluator.accuracy, flash, ram, config,
                    str(tmp_path / "full.pkl")).run(progress=False)
    assert full.episodes == 3 and len(full.history) == 3
    assert full.flash <= flash and full.ram <= ram
    assert all(r["flash"] <= flash and r["ram"] <= ram for r in full.history)

    path = str(tmp_path / "cut.pkl")
    holder = {}

    def interrupting(policy):
        if holder["search"].episode == 2:
            raise KeyboardInterrupt
        return evaluator.accuracy(policy)

    holder["search"] = RLSearch(hand_mm, interrupting, flash, ram, config, path)
    cut = holder["search"].run(progress=False)
    assert cut.interrupted and cut.episodes == 2
    resumed = RLSearch(hand_mm, evaluator.accuracy, flash, ram, config, path, resume=True)
    assert resumed.episode == 2
    done = resumed.run(progress=False)
    assert _comparable(done.history) == _comparable(full.history)
    assert done.policy == full.policy
    full_state = RLSearch(hand_mm, evaluator.accuracy, flash, ram, config,
                          str(tmp_path / "full.pkl"), resume=True)
    for a, b in zip(resumed.agent.actor.get_weights() + resumed.agent.critic.get_weights(),
                    full_state.agent.actor.get_weights() + full_state.agent.critic.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = RLConfig(episodes=3, warmup=1, hidden=(16, 16), batch_size=8, seed=4)
    with pytest.raises(TfqError):
        RLSearch(hand_mm, evaluator.accuracy, flash, ram, other, path, resume=True)


def test_rl_state_from_another_proxy_split_is_not_resumed(hand_model, hand_mm, tiny_task,
                                                          tmp_path):
    """Cached rewards belong to a model + calibration + proxy split: a state written with
    another proxy split is refused instead of silently reusing its scores."""
    x, y = tiny_task
    first = ProxyEvaluator(hand_model, x, x, y)
    other = ProxyEvaluator(hand_model, x, x[::-1], y[::-1])
    assert first.fingerprint == ProxyEvaluator(hand_model, x, x, y).fingerprint
    assert first.fingerprint != other.fingerprint
    flash, ram = memory(hand_model, "w4a4")
    config = RLConfig(episodes=1, warmup=1, hidden=(8,), batch_size=4, seed=0)
    path = str(tmp_path / "state.pkl")
    RLSearch(hand_mm, first.accuracy, flash, ram, config, path,
             reward_identity=first.fingerprint).run(progress=False)
    resumed = RLSearch(hand_mm, first.accuracy, flash, ram, config, path, resume=True,
                       reward_identity=first.fingerprint)
    assert resumed.episode == 1
    with pytest.raises(TfqError, match="proxy data"):
        RLSearch(hand_mm, other.accuracy, flash, ram, config, path, resume=True,
                 reward_identity=other.fingerprint)


@pytest.mark.parametrize("mode", ["weights", "independent"])
def test_rl_modes_respect_their_budgets(hand_mm, mode):
    flash, ram = 104, 20
    rewards = iter(np.linspace(50, 60, 10))
    config = RLConfig(episodes=2, warmup=1, hidden=(8,), batch_size=4, mode=mode, seed=0)
    result = RLSearch(hand_mm, lambda policy: next(rewards), flash, ram, config).run(
        progress=False)
    for record in result.history:
        assert record["flash"] <= flash
        if mode == "weights":
            assert record["bits"]["x:A"] == 8 and record["bits"]["relu:A"] == 8
    if mode == "independent":
        first, second = result.history
        assert first["bits"]["relu:A"] == 8 and second["ram"] <= ram
        assert second["bits"]["conv:W"] == first["bits"]["conv:W"]
        assert result.ram <= ram


def test_qat_reward_runs_and_is_part_of_the_resume_identity(hand_model, hand_mm, tiny_task,
                                                             tmp_path):
    x, y = tiny_task
    evaluator = QATProxyEvaluator(hand_model, x, x, y, finetune_batch_size=16)
    flash, ram = memory(hand_model, "w4a4")
    config = RLConfig(episodes=1, warmup=1, hidden=(8,), batch_size=4, reward="qat", seed=0)
    path = str(tmp_path / "qat.pkl")
    result = RLSearch(hand_mm, evaluator.accuracy, flash, ram, config, path).run(progress=False)
    assert 0.0 <= result.accuracy <= 100.0
    with pytest.raises(TfqError, match="different search"):
        RLSearch(hand_mm, evaluator.accuracy, flash, ram,
                 RLConfig(episodes=1, warmup=1, hidden=(8,), batch_size=4, seed=0), path,
                 resume=True)
    with pytest.raises(TfqError, match="reward"):
        RLConfig(reward="kl")


def test_m2_against_tflm_arena_for_int8_export(hand_model, tiny_task):
    import tfq_tiny
    from tfq_tiny.export import to_tflite
    from tfq_tiny.search.memory import tflm_arena_usage

    qmodel = tfq_tiny.quantize_model(hand_model, "w8a8", tiny_task[0])
    usage = tflm_arena_usage(to_tflite(qmodel))
    m2 = memory(qmodel, None)[1]
    assert m2 == 40
    # TFLM plans the same live tensors in its non-persistent (head) area, but rounds every
    # buffer up to 16 bytes and gives each RESHAPE (Conv1D's expand-dims, Flatten) its own
    # output buffer where our count aliases it: the FC-side reshape holds 24 -> 32 in and
    # 24 -> 32 out = 64 bytes, versus M2 = 16 + 24 at the conv. Its persistent tail (tensor
    # structs, quantization parameters, op data) is not activation memory and not in M2.
    assert m2 <= usage["head"] <= 64
    assert usage["total"] == usage["head"] + usage["tail"]


def test_tflm_arena_usage_default_arena_fits_large_activations():
    """The default arena is sized from our plan, so a 128 kB activation needs no arena_size."""
    import tfq_tiny
    from tfq_tiny._compat import keras
    from tfq_tiny.export import to_tflite
    from tfq_tiny.search.memory import tflm_arena_usage

    inputs = keras.Input((128, 128, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))
    data = np.random.default_rng(0).uniform(size=(16, 128, 128, 1)).astype("float32")
    usage = tflm_arena_usage(to_tflite(tfq_tiny.quantize_model(model, "w8a8", data)))
    assert usage["head"] >= 128 * 128 * 8
