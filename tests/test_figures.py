"""Ablation figures from a synthetic runs.jsonl, and the sweep's resume logic (no TF runs)."""
import json
import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

import ablations  # noqa: E402
import benchmark  # noqa: E402
import figures  # noqa: E402

BITS = {"w8a8": (8, 8), "w4a8": (4, 8), "w4a4": (4, 4), "w3a3": (3, 3), "w2a2": (2, 2),
        "w4a32": (4, 32), "w3a32": (3, 32), "w2a32": (2, 32)}


def fake_runner(cell):
    """A record shaped like benchmark.run_cell's, with made-up accuracy and statistics."""
    w, a = BITS[cell["bits"]]
    accuracy = 90.0 - 40.0 / (w * a) - cell["seed"] + (1.0 if cell["bias_tuning"] else 0.0)
    macs = 1000
    return {**{k: v for k, v in cell.items() if k != "data_dir"}, "key": benchmark.cell_key(cell),
            "float_accuracy": 92.0, "accuracy": accuracy, "drop": 92.0 - accuracy,
            "ptq_seconds": 1.0, "test_samples_used": 100, "units": [],
            "stats": {"float": {"macs": macs, "bops": macs * 32 * 32, "weight_bytes": 4000,
                                "peak_activation_bytes": 3200},
                      "quantized": {"macs": macs, "bops": macs * w * a,
                                    "weight_bytes": 4000 * w // 32,
                                    "peak_activation_bytes": 3200 * a // 32}}}


def test_figures_written_from_synthetic_runs(tmp_path):
    cells, counts = ablations.ablation_cells(list(figures.ABLATIONS), ["cnn1d", "ds_cnn"],
                                             [0, 1], blocks={"cnn1d": False}, preset="fast")
    assert counts["fig6_granularity"] == 2 * 3 * 2   # ds_cnn only: 2 seeds x 3 bits x 2
    runs = tmp_path / "runs.jsonl"
    with open(runs, "w") as f:
        for cell in benchmark.pending(cells, {}):
            f.write(json.dumps(fake_runner(cell)) + "\n")
        f.write('{"torn line')                        # an interrupted append is ignored
    records = figures.load_records(runs)
    paths = figures.write_figures(records, tmp_path / "figs", summary_path=tmp_path / "s.md",
                                  preset="fast")
    names = sorted(pathlib.Path(p).name for p in paths)
    assert names == sorted(f"{n}.png" for n in figures.ABLATIONS)
    for p in paths:
        data = pathlib.Path(p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    summary = (tmp_path / "s.md").read_text()
    assert "fig8_drop_vs_savings" in summary and "+-" in summary     # two seeds -> std
    # W4A4: BOPs 32*32 / (4*4) = 64x, peak activation memory 32 / 4 = 8x
    points = {(m, b): p for m, b, *p in figures.savings_points(records)}
    assert points[("cnn1d", "w4a4")][:2] == [64.0, 8.0]


def test_no_runs_no_figures(tmp_path):
    assert figures.write_figures([], tmp_path) == []
    assert not list(tmp_path.iterdir())
    # one variant alone is no comparison: layer-wise runs without block-wise draw no figure 6
    cells, _ = ablations.ablation_cells(["fig7_bias_tuning"], ["cnn1d"], [0])
    records = [fake_runner(c) for c in cells]
    assert figures.write_figures(records, tmp_path, ["fig6_granularity", "fig7_bias_tuning"]) \
        == [str(tmp_path / "fig7_bias_tuning.png")]


def test_resume_skips_finished_cells(tmp_path):
    cells, _ = ablations.ablation_cells(["fig7_bias_tuning", "fig8_drop_vs_savings"], ["cnn1d"],
                                        [0], preset="fast")
    unique = benchmark.pending(cells, {})
    assert len(unique) == 3 * 4 + 5 - 3      # AdaRound + bias tuning at W4A4..W2A2 is shared
    calls = []

    def runner(cell):
        calls.append(benchmark.cell_key(cell))
        return fake_runner(cell)

    first = unique[:5]
    benchmark.run_sweep(first, str(tmp_path), "test", runner=runner)
    assert len(calls) == 5
    calls.clear()
    done = benchmark.run_sweep(cells, str(tmp_path), "test", runner=runner)
    assert sorted(calls) == sorted(benchmark.cell_key(c) for c in unique[5:])
    assert len(done) == len(unique)
    calls.clear()
    benchmark.run_sweep(cells, str(tmp_path), "test", runner=runner)
    assert calls == []
    assert (tmp_path / "table.md").read_text().count("| cnn1d |") == 4   # 4 recipes, not averaged


def test_table_shows_cells_another_sweep_into_the_same_output_finished(tmp_path):
    """Two sweeps may append to one runs.jsonl; each table rewrite reads the whole file."""
    mine = benchmark.make_cell("cnn1d", "w4a4", "round", seed=0)
    theirs = benchmark.make_cell("res8", "w4a4", "round", seed=0)

    def runner(cell):
        with open(tmp_path / "runs.jsonl", "a") as f:   # the other sweep finishes meanwhile
            f.write(json.dumps({**fake_runner(theirs), "command": "other"}) + "\n")
        return fake_runner(cell)

    benchmark.run_sweep([mine], str(tmp_path), "test", runner=runner)
    table = (tmp_path / "table.md").read_text()
    assert "| cnn1d |" in table and "| res8 |" in table


def threads_runner(cell):
    """``fake_runner``'s record plus the TF thread setting of the process that ran the cell."""
    return {**fake_runner(cell), "threads": benchmark.tf_threads(), "pid": os.getpid()}


def test_workers_run_cells_in_fresh_processes_on_their_share_of_the_cores(tmp_path):
    cells = [benchmark.make_cell("cnn1d", "w4a4", o, seed=0) for o in ("none", "round", "bits")]
    done = benchmark.run_sweep(cells, str(tmp_path), "test", runner=threads_runner, workers=2)
    # a fresh process reports 0 (TF's default) unless the worker set its share
    assert [r["threads"] for r in done.values()] == [max(1, os.cpu_count() // 2)] * 3
    assert os.getpid() not in {r["pid"] for r in done.values()}
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 3


def test_cell_key_separates_sample_counts_and_checkpoints():
    cell = benchmark.make_cell("cnn1d", "w4a4", "none", seed=0)
    assert benchmark.cell_key(cell) == ("cnn1d|w4a4|none|layer|0|paper|True|cle|mse|checkpoint="
                                        + cell["checkpoint"])
    assert benchmark.cell_key({**cell, "checkpoint": "0" * 16}) != benchmark.cell_key(cell)
    subset = benchmark.make_cell("cnn1d", "w4a4", "none", seed=0, test_samples=500)
    assert benchmark.cell_key(subset) == benchmark.cell_key(cell).replace(
        "|checkpoint=", "|test_samples=500|checkpoint=")
    edges = benchmark.make_cell("cnn1d", "w4a4", "none", seed=0, edge_bits=8)
    assert benchmark.cell_key(edges) == benchmark.cell_key(cell) + "|edge_bits=8"
    residual = benchmark.make_cell("cnn1d", "w4a4", "none", seed=0, edge_bits=8,
                                   edges=["residual"])
    assert benchmark.cell_key(residual) == benchmark.cell_key(edges) + "|edges=residual"
    aware = benchmark.make_cell("cnn1d", "w4a4", "none", seed=0, activation_init="loss_aware")
    assert benchmark.cell_key(aware) == benchmark.cell_key(cell) + \
        "|activation_init=loss_aware|refinement_passes=3"
    assert benchmark.make_cell("cnn1d", "w4a4", "none", seed=0, refinement_passes=1) == cell, \
        "passes only matter to loss-aware ranges"


def test_table_keeps_loss_aware_runs_of_one_sweep_apart():
    """Loss-aware records from before ``refinement_passes`` existed ran one sweep."""
    cell = benchmark.make_cell("cnn1d", "w4a4", seed=0, activation_init="loss_aware")
    new = fake_runner(cell)
    old = {k: v for k, v in fake_runner({**cell, "seed": 1}).items() if k != "refinement_passes"}
    table = benchmark.markdown_table([new, old, fake_runner({**new, "seed": 2})], "cmd")
    assert "refinement_passes" in table and table.count("| cnn1d |") == 2
    assert "| layer | 1 |" in table and "| layer | 3 |" in table and "n=2" in table


@pytest.mark.parametrize("short, full", [("fig4", "fig4_init_cle"),
                                         ("fig8", "fig8_drop_vs_savings")])
def test_resolve(short, full):
    assert figures.resolve([short]) == [full]


def test_table_treats_runs_from_before_a_setting_existed_as_its_default():
    """A record made before drop_prob existed ran what drop_prob=0 does: same row, averaged;
    a record without a checkpoint stays apart as 'unrecorded'."""
    cell = benchmark.make_cell("cnn1d", "w4a4", seed=0)
    new = fake_runner(cell)
    old = {k: v for k, v in fake_runner({**cell, "seed": 1}).items()
           if k not in ("drop_prob", "learn_activation_ranges", "edge_bits", "edges")}
    table = benchmark.markdown_table([new, old], "cmd")
    assert "drop_prob" not in table and "88.00 +- 0.50 (-4.00; paper +0.00; n=2)" in table
    unrecorded = {k: v for k, v in old.items() if k != "checkpoint"}
    table = benchmark.markdown_table([new, unrecorded], "cmd")
    assert "unrecorded" in table and "n=2" not in table


def test_table_keeps_calibration_sizes_and_guard_apart():
    """Runs that differ in calibration samples or the bias tuning guard are different recipes,
    never averaged as seeds; a record from before the guard existed counts as guard off."""
    cell = benchmark.make_cell("cnn1d", "w4a4", seed=0)
    runs = [fake_runner(cell), fake_runner({**cell, "seed": 1, "calibration_samples": 4096})]
    table = benchmark.markdown_table(runs, "cmd")
    assert "calibration_samples" in table and "n=2" not in table and table.count("| cnn1d |") == 2
    guarded = fake_runner({**cell, "seed": 1, "bias_tuning_guard": True})
    old = {k: v for k, v in fake_runner({**cell, "seed": 2}).items() if k != "bias_tuning_guard"}
    table = benchmark.markdown_table([runs[0], old, guarded], "cmd")
    assert "bias_tuning_guard" in table and table.count("| cnn1d |") == 2 and "n=2" in table


def test_figure_points_leave_out_runs_of_other_recipes():
    """A sweep file that also holds edges-at-8 and loss-aware runs of the best-pipeline cells
    (results/table2) draws figure 8 from the plain runs alone; a record from before
    ``edge_bits`` existed counts as plain."""
    plain = fake_runner(benchmark.make_cell("cnn1d", "w4a4", seed=0))
    older = {k: v for k, v in fake_runner(benchmark.make_cell("cnn1d", "w4a4", seed=1)).items()
             if k not in ("edge_bits", "activation_init")}
    edges = {**fake_runner(benchmark.make_cell("cnn1d", "w4a4", seed=0, edge_bits=8)),
             "accuracy": 10.0}
    aware = {**fake_runner(benchmark.make_cell("cnn1d", "w4a4", seed=0,
                                               activation_init="loss_aware")), "accuracy": 10.0}
    fig8 = figures.ABLATIONS["fig8_drop_vs_savings"]
    assert [fig8.label_of(r) for r in (plain, older, edges, aware)] == ["best", "best", None, None]
    (point,) = figures.savings_points([plain, edges, aware, older])
    assert point[:2] == ("cnn1d", "w4a4") and point[-1] == 2
    assert point[4] == pytest.approx(92.0 - (plain["accuracy"] + older["accuracy"]) / 2)


def test_each_figure_drawn_from_its_own_runs(tmp_path):
    """``{figure: records}`` draws each figure (and its summary section) from its own list."""
    cells, _ = ablations.ablation_cells(["fig7_bias_tuning"], ["cnn1d"], [0])
    best = fake_runner(benchmark.make_cell("ds_cnn", "w4a4", seed=0))
    records = {"fig7_bias_tuning": [fake_runner(c) for c in cells],
               "fig8_drop_vs_savings": [best]}
    paths = figures.write_figures(records, tmp_path, ["fig7_bias_tuning", "fig8_drop_vs_savings"],
                                  summary_path=tmp_path / "s.md")
    assert sorted(pathlib.Path(p).name for p in paths) == ["fig7_bias_tuning.png",
                                                           "fig8_drop_vs_savings.png"]
    summary = (tmp_path / "s.md").read_text()
    fig8 = summary[summary.index("## fig8"):]
    assert "| ds_cnn | W4A4 |" in fig8 and "cnn1d" not in fig8
    assert f"Runs: `{figures.ABLATIONS['fig8_drop_vs_savings'].runs}`" in fig8
