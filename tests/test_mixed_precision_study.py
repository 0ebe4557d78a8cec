"""The mixed-precision study's bookkeeping: which recorded cells still count (no TF runs)."""
import pathlib
import sys
import types

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

import mixed_precision_study as study  # noqa: E402
from tfq_tiny.search.knapsack import FAST_SEARCH_VERSION  # noqa: E402


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.setattr(study, "FLAGS", types.SimpleNamespace(
        finetune_epochs=1, finetune_lr=1e-4, finetune_batch_size=64, finetune_seeds=["0"],
        seed=0, select_with="proxy", finetune_restore_best=False, finetune_dropout=False))
    monkeypatch.setattr(study, "checkpoint_sha256", lambda name: "abc")
    monkeypatch.setattr(study, "_has_dropout", lambda name: name == "ds_cnn")
    return study.FLAGS


def _ft(**extra):
    return {"epochs": 1, "lr": 1e-4, "batch_size": 64, "test_accuracy_after": 80.0, **extra}


def _row(method, **extra):
    base = {"model": "ds_cnn", "method": method, "proxy_split": study.PROXY_SPLIT,
            "checkpoint_sha256": "abc"}
    if method == "uniform":
        base["finetune"] = {"W4A4": _ft()}
    else:
        base["finetune"] = _ft()
    return {**base, **extra}


def test_a_cell_counts_only_when_made_as_todays_study_would_make_it(settings):
    assert study._current(_row("uniform"))
    assert study._current(_row("rl"))
    assert not study._current(_row("fast")), "made before the anchored sensitivity search"
    assert not study._current(_row("fast", sensitivity_anchor=4)), "before candidate selection"
    assert study._current(_row("fast", sensitivity_anchor=4,
                               fast_search_version=FAST_SEARCH_VERSION))
    settings.select_with = "qat"
    assert not study._current(_row("fast", sensitivity_anchor=4,
                                   fast_search_version=FAST_SEARCH_VERSION)), "judged on the proxy"
    assert study._current(_row("fast", sensitivity_anchor=4, selector="qat",
                               fast_search_version=FAST_SEARCH_VERSION))
    settings.select_with = "proxy"
    assert not study._current(_row("rl", checkpoint_sha256="old"))
    assert not study._current(_row("rl", proxy_split="train"))
    settings.finetune_epochs = 3
    assert not study._current(_row("uniform")) and not study._current(_row("rl"))
    settings.finetune_epochs = 1
    settings.finetune_seeds = ["0", "1", "2"]
    assert not study._current(_row("rl"))
    assert study._current(_row("rl", finetune=_ft(seeds=[0, 1, 2])))


def test_dropout_makes_old_rows_stale_only_for_models_that_have_dropout(settings):
    settings.finetune_dropout = True
    assert not study._current(_row("rl")), "ds_cnn has Dropout; the row ran in inference mode"
    assert study._current(_row("rl", finetune=_ft(dropout_layers=2)))
    assert not study._current(_row("uniform"))
    assert study._current(_row("uniform", finetune={"W4A4": _ft(dropout_layers=2)}))
    assert study._current(_row("rl", model="res8")), "no Dropout: training mode changes nothing"
    settings.finetune_dropout = False
    assert not study._current(_row("rl", finetune=_ft(dropout_layers=2)))


def test_a_ceiling_counts_only_while_built_from_the_current_fast_policy(settings):
    fast = _row("fast", sensitivity_anchor=4, fast_search_version=FAST_SEARCH_VERSION,
                policy={"weight_bits": 4})
    ceiling = _row("ceiling", fast_policy={"weight_bits": 4})
    assert ("ds_cnn", "ceiling") in study.done_cells([fast, ceiling])
    assert ("ds_cnn", "ceiling") not in study.done_cells(
        [{**fast, "policy": {"weight_bits": 2}}, ceiling]), "the fast policy changed"
    assert ("ds_cnn", "ceiling") not in study.done_cells([ceiling]), "no fast row"


def test_qat_cells_show_the_spread_over_seeds_and_untimed_rows_say_so():
    one = _ft()
    three = _ft(test_accuracy_after_each=[79.0, 80.0, 81.0], test_accuracy_after_std=0.8165)
    assert study._qat_cell(one) == "80.00" and study._qat_cell(None) == ""
    assert study._qat_cell(three) == "80.00 +- 0.82 (n=3)"
    assert study._qat_times([("W4A4", {**one, "seconds": 20.4}), ("fast", one)]) == \
        "W4A4 20 s, fast not timed"
