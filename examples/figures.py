"""The empirical study's ablation figures (4-8) as PNGs, drawn from PTQ sweep ``runs.jsonl`` files.

Each ablation is a grid of PTQ cells (bit widths x variants, every other setting fixed) that
``examples/ablations.py`` runs through ``examples/benchmark.py``'s resumable sweep; this module
defines the grids (``ABLATIONS``), and draws whatever runs a file holds for them:

- fig4_init_cle: range init MinMax vs MSE x cross-layer equalization off/on (init only).
- fig5_opt_variable: the optimised variable, weights-only quantization (activations float):
  none / qparam (LSQ) / weights (AdaQuant) / bits (Bit-Split) / round (AdaRound).
- fig6_granularity: layer-wise vs block-wise (BRECQ) reconstruction with AdaRound.
- fig7_bias_tuning: bias tuning off vs on, after init only and after AdaRound.
- fig8_drop_vs_savings: the best pipeline's accuracy drop vs float against its BOPs saving and
  its peak activation memory saving (``tfq_tiny.analysis.model_statistics`` under the run's
  BitPolicy, float32 model = 1x), one marker per bit width.

Bars and markers are means over seeds; error bars are the standard deviation over seeds when a
point has more than one. ``python examples/figures.py`` redraws the PNGs (and ``summary.md``,
the numbers behind them) without running anything, each from its own sweep (``Ablation.runs``:
figures 4-7 from ``results/ablations``, figure 8 from the Table 2 sweep in ``results/table2``);
``--runs`` draws them all from the files it names.
"""
import io
import os
import textwrap
from dataclasses import dataclass, field

import numpy as np

import benchmark
from tfq_tiny.io import atomic_write


@dataclass(frozen=True)
class Ablation:
    """A grid of PTQ cells: ``bits`` x ``variants`` (label, settings), ``fixed`` settings shared."""

    name: str
    title: str
    bits: tuple
    variants: tuple
    fixed: dict = field(default_factory=dict)
    needs_blocks: bool = False   # only meaningful for models with multi-layer blocks
    runs: str = "results/ablations/runs.jsonl"   # where ``examples/figures.py`` draws it from

    def settings(self):
        """``(bits, label, settings)`` of every cell, settings = fixed + the variant's."""
        for bits in self.bits:
            for label, variant in self.variants:
                yield bits, label, {**self.fixed, **variant}

    def label_of(self, record):
        """The variant ``record`` belongs to, or None if it is not a cell of this ablation.

        Recipe extras the ablation does not set must have their plain values
        (``PLAIN_RECIPE``), so a sweep file that also holds e.g. edges-at-8 or loss-aware runs
        of the same cells (``results/table2``) never mixes them into a point."""
        if record["bits"] not in self.bits:
            return None
        for label, variant in self.variants:
            wanted = {**PLAIN_RECIPE, **self.fixed, **variant}
            if all(benchmark.recipe_value(record, k) == v for k, v in wanted.items()):
                return label
        return None


PLAIN_RECIPE = {k: benchmark.KEY_EXTRAS[k] for k in ("drop_prob", "learn_activation_ranges",
                                                    "edge_bits", "activation_init")}
BEST = dict(optimize="round", granularity="layer", bias_tuning=True, preprocess="cle", init="mse")
LOW_BITS = ("w4a4", "w3a3", "w2a2")
ALL_BITS = ("w8a8", "w4a8", "w4a4", "w3a3", "w2a2")

ABLATIONS = {a.name: a for a in [
    Ablation("fig4_init_cle", "Range init x cross-layer equalization (init only, no bias tuning)",
             ("w4a8", "w4a4", "w3a3", "w2a2"),
             (("MinMax", dict(init="minmax", preprocess="bn_fold")),
              ("MinMax + CLE", dict(init="minmax", preprocess="cle")),
              ("MSE", dict(init="mse", preprocess="bn_fold")),
              ("MSE + CLE", dict(init="mse", preprocess="cle"))),
             dict(optimize="none", granularity="layer", bias_tuning=False)),
    Ablation("fig5_opt_variable", "Optimised variable, weights-only quantization "
             "(MSE + CLE, layer-wise, no bias tuning)",
             ("w4a32", "w3a32", "w2a32"),
             (("none", dict(optimize="none")),
              ("qparam (LSQ)", dict(optimize="qparam")),
              ("weights (AdaQuant)", dict(optimize="weights")),
              ("bits (Bit-Split)", dict(optimize="bits")),
              ("round (AdaRound)", dict(optimize="round"))),
             dict(granularity="layer", bias_tuning=False, preprocess="cle", init="mse")),
    Ablation("fig6_granularity", "Layer-wise vs block-wise reconstruction "
             "(AdaRound, MSE + CLE, no bias tuning)",
             LOW_BITS,
             (("layer-wise", dict(granularity="layer")),
              ("block-wise", dict(granularity="block"))),
             dict(optimize="round", bias_tuning=False, preprocess="cle", init="mse"),
             needs_blocks=True),
    Ablation("fig7_bias_tuning", "Bias tuning off vs on (MSE + CLE, layer-wise)",
             LOW_BITS,
             (("init only", dict(optimize="none", bias_tuning=False)),
              ("init + bias tuning", dict(optimize="none", bias_tuning=True)),
              ("AdaRound", dict(optimize="round", bias_tuning=False)),
              ("AdaRound + bias tuning", dict(optimize="round", bias_tuning=True))),
             dict(granularity="layer", preprocess="cle", init="mse")),
    # Drawn from the Table 2 sweep: its best-pipeline cells cover all four models at every
    # width with 2000 iterations per unit and five seeds at W4A4/W3A3.
    Ablation("fig8_drop_vs_savings", "Accuracy drop vs BOPs and peak-memory saving "
             "(best pipeline: MSE + CLE, AdaRound layer-wise, bias tuning)",
             ALL_BITS, (("best", {}),), BEST, runs="results/table2/runs.jsonl"),
]}


def load_records(paths):
    """Records of one or more runs.jsonl files (later lines of a key win; torn lines skipped)."""
    runs = {}
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        runs.update(benchmark.load_runs(path))
    return list(runs.values())


_STATS_CACHE = {}


def statistics(record):
    """``{"float": ..., "quantized": ...}`` model statistics of a run (computed if not stored)."""
    if "stats" in record:
        return record["stats"]
    key = (record["model"], record["bits"])
    if key not in _STATS_CACHE:
        import tfq_tiny  # noqa: F401
        from tfq_tiny import models
        from tfq_tiny._compat import keras
        from tfq_tiny.analysis import model_statistics
        from tfq_tiny.quantization.policy import BitPolicy

        model = keras.models.load_model(models.checkpoint_path(record["model"]), compile=False)
        pick = ("macs", "bops", "weight_bytes", "peak_activation_bytes")
        policy = BitPolicy.parse(record["bits"])
        _STATS_CACHE[key] = {
            name: {k: getattr(s, k) for k in pick}
            for name, s in (("float", model_statistics(model)),
                            ("quantized", model_statistics(model, policy)))}
    return _STATS_CACHE[key]


def _group(records, ablation, preset=None):
    """``{model: {(bits, label): [record per seed]}}`` of the ablation's cells."""
    groups = {}
    for r in records:
        label = ablation.label_of(r)
        if label is None or (preset is not None and r.get("preset") != preset):
            continue
        by_seed = groups.setdefault(r["model"], {}).setdefault((r["bits"], label), {})
        by_seed[r["seed"]] = r
    groups = {m: {k: [v[s] for s in sorted(v)] for k, v in g.items()} for m, g in groups.items()}
    if len(ablation.variants) > 1:   # a comparison needs at least two of its variants
        groups = {m: g for m, g in groups.items() if len({label for _, label in g}) > 1}
    return groups


def _mean_std(values):
    values = np.asarray(values, float)
    return float(values.mean()), (float(values.std()) if len(values) > 1 else 0.0), len(values)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    _plt().close(fig)
    atomic_write(path, buffer.getvalue())
    return path


def _context(records):
    """One caption line: preset, seeds, calibration and test samples per model."""
    parts = []
    for model in sorted({r["model"] for r in records}):
        rs = [r for r in records if r["model"] == model]
        seeds = sorted({r["seed"] for r in rs})
        tests = sorted({r.get("test_samples_used", 0) for r in rs})
        presets = sorted({r.get("preset", "?") for r in rs})
        calib = sorted({r.get("calibration_samples", 0) for r in rs})
        iterations = sorted({str(r["iterations"]) for r in rs if r.get("iterations")})
        budget = f" ({'/'.join(iterations)} it/unit)" if iterations else ""
        parts.append(f"{model}: preset {'/'.join(presets)}{budget}, seeds {seeds}, "
                     f"{'/'.join(map(str, calib))} calib, "
                     f"{'/'.join(map(str, tests))} test samples")
    return "\n".join(textwrap.wrap("; ".join(parts), 160))


def plot_ablation(ablation, records, path, preset=None):
    """Grouped bars (bit widths x variants) of accuracy, one panel per model; None if no data."""
    groups = _group(records, ablation, preset)
    if not groups:
        return None
    plt = _plt()
    models = sorted(groups)
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models) + 1, 4.2), squeeze=False)
    labels = [label for label, _ in ablation.variants]
    colors = plt.get_cmap("tab10").colors
    width = 0.8 / len(labels)
    used = []
    for ax, model in zip(axes[0], models):
        cells = groups[model]
        bits = [b for b in ablation.bits if any((b, lab) in cells for lab in labels)]
        floats = [r["float_accuracy"] for rs in cells.values() for r in rs]
        lowest = 100.0
        for i, label in enumerate(labels):
            xs, means, stds = [], [], []
            for j, b in enumerate(bits):
                if (b, label) in cells:
                    mean, std, _ = _mean_std([r["accuracy"] for r in cells[(b, label)]])
                    xs.append(j + (i - (len(labels) - 1) / 2) * width)
                    means.append(mean)
                    stds.append(std)
            if not xs:
                continue
            lowest = min(lowest, min(means))
            ax.bar(xs, means, width * 0.95, yerr=stds if any(stds) else None, capsize=3,
                   color=colors[i % len(colors)], label=label)
            if label not in used:
                used.append(label)
        ax.axhline(np.mean(floats), color="k", ls="--", lw=1, label="float")
        ax.set_xticks(range(len(bits)))
        ax.set_xticklabels([b.upper().replace("A32", "A32 (float act.)") for b in bits])
        top = max(np.mean(floats), 0) + 2
        ax.set_ylim(max(0.0, min(lowest, np.mean(floats)) - 5), min(100.0, top))
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(model)
        ax.grid(axis="y", alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6),
               bbox_to_anchor=(0.5, -0.08), frameon=False)
    fig.suptitle(ablation.title, fontsize=10)
    flat = [r for g in groups.values() for rs in g.values() for r in rs]
    fig.text(0.5, -0.11, _context(flat) + "; error bars: std over seeds", ha="center", va="top",
             fontsize=7)
    return _save(fig, path)


_MARKERS = {"w8a8": "o", "w4a8": "s", "w4a4": "^", "w3a3": "D", "w2a2": "v"}


def savings_points(records, ablation=None, preset=None):
    """``[(model, bits, bops_saving, memory_saving, drop mean, drop std, n)]`` for figure 8."""
    ablation = ablation or ABLATIONS["fig8_drop_vs_savings"]
    points = []
    for model, cells in sorted(_group(records, ablation, preset).items()):
        for b in ablation.bits:
            rs = cells.get((b, "best"))
            if not rs:
                continue
            stats = statistics(rs[0])
            bops = stats["float"]["bops"] / stats["quantized"]["bops"]
            memory = (stats["float"]["peak_activation_bytes"]
                      / stats["quantized"]["peak_activation_bytes"])
            mean, std, n = _mean_std([r["float_accuracy"] - r["accuracy"] for r in rs])
            points.append((model, b, bops, memory, mean, std, n))
    return points


def plot_drop_vs_savings(records, path, preset=None):
    """Figure 8: accuracy drop vs BOPs saving and vs peak-memory saving; None if no data."""
    points = savings_points(records, preset=preset)
    if not points:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    models = sorted({p[0] for p in points})
    colors = dict(zip(models, plt.get_cmap("tab10").colors))
    for ax, index, xlabel in ((axes[0], 2, "BOPs saving vs float32 (x, log scale)"),
                              (axes[1], 3, "peak activation memory saving vs float32 (x, log)")):
        for model in models:
            mine = [p for p in points if p[0] == model]
            ax.plot([p[index] for p in mine], [p[4] for p in mine], color=colors[model],
                    lw=0.8, alpha=0.5)
            for p in mine:
                ax.errorbar(p[index], p[4], yerr=p[5] if p[6] > 1 else None, capsize=3,
                            marker=_MARKERS.get(p[1], "x"), ms=8, color=colors[model], ls="none")
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=1.0)   # W4A4's tenths and W2A2's tens both readable
        top = max(p[4] + p[5] for p in points)
        ticks = [t for t in (-1, 0, 0.5, 1, 2, 5, 10, 20, 50, 100) if t <= max(top, 1)]
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_ylim(min(-0.5, min(p[4] for p in points) * 1.5), max(top, 1) * 1.6)
        ax.set_xlabel(xlabel)
        ax.axhline(0, color="k", lw=0.6)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("accuracy drop vs float (points, symlog)")
    handles = [plt.Line2D([], [], color="gray", marker=_MARKERS.get(b, "x"), ls="none",
                          label=b.upper())
               for b in ABLATIONS["fig8_drop_vs_savings"].bits if any(p[1] == b for p in points)]
    handles += [plt.Line2D([], [], color=colors[m], lw=2, label=m) for m in models]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles),
               bbox_to_anchor=(0.5, -0.13), frameon=False)
    fig.suptitle(ABLATIONS["fig8_drop_vs_savings"].title, fontsize=10)
    used = [r for r in records if ABLATIONS["fig8_drop_vs_savings"].label_of(r)]
    fig.text(0.5, -0.15, _context(used) + "; error bars: std over seeds", ha="center", va="top",
             fontsize=7)
    return _save(fig, path)


def _records_of(records, name):
    """The records figure ``name`` is drawn from: ``records`` itself, or its entry when
    ``records`` maps figure names to lists (each figure from its own sweep)."""
    return records.get(name, []) if isinstance(records, dict) else records


def summary_markdown(records, names=None, preset=None):
    """The numbers behind the figures: mean +- std (n seeds) per model, variant and bit width.
    ``records``: one list for every figure, or ``{figure name: list}``."""
    lines = ["# Ablation summary", "",
             "Generated by `examples/figures.py` from the runs; accuracy in %, mean +- std over "
             "seeds (n).", ""]
    every = records
    for name in names or ABLATIONS:
        ablation = ABLATIONS[name]
        records = _records_of(every, name)
        groups = _group(records, ablation, preset)
        if not groups:
            continue
        lines += [f"## {name}: {ablation.title}", ""]
        if isinstance(every, dict):
            lines += [f"Runs: `{ablation.runs}`.", ""]
        if name == "fig8_drop_vs_savings":
            lines += ["| model | bits | BOPs saving | peak-RAM saving | accuracy | drop |",
                      "|---|---|---|---|---|---|"]
            for model, b, bops, memory, mean, std, n in savings_points(records, preset=preset):
                acc = _fmt([r["accuracy"] for r in groups[model][(b, "best")]])
                drop = f"{mean:.2f}" if n == 1 else f"{mean:.2f} +- {std:.2f}"
                lines.append(f"| {model} | {b.upper()} | {bops:.1f}x | {memory:.1f}x | {acc} | "
                             f"{drop} |")
            lines.append("")
            continue
        labels = [label for label, _ in ablation.variants]
        for model, cells in sorted(groups.items()):
            floats = [r["float_accuracy"] for rs in cells.values() for r in rs]
            lines += [f"{model} (float {np.mean(floats):.2f})", "",
                      "| bits | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
            for b in ablation.bits:
                if any((b, label) in cells for label in labels):
                    lines.append(f"| {b.upper()} | " + " | ".join(
                        _fmt([r["accuracy"] for r in cells.get((b, label), [])])
                        for label in labels) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def _fmt(values):
    if not values:
        return ""
    mean, std, n = _mean_std(values)
    return f"{mean:.2f}" if n == 1 else f"{mean:.2f} +- {std:.2f} (n={n})"


def write_figures(records, figure_dir, names=None, summary_path=None, preset=None):
    """Write the PNG of every ablation in ``names`` (default all) that has runs; returns paths.
    ``records``: one list for every figure, or ``{figure name: list}``."""
    written = []
    for name in names or ABLATIONS:
        path = os.path.join(figure_dir, f"{name}.png")
        mine = _records_of(records, name)
        if name == "fig8_drop_vs_savings":
            out = plot_drop_vs_savings(mine, path, preset)
        else:
            out = plot_ablation(ABLATIONS[name], mine, path, preset)
        if out:
            written.append(out)
    if summary_path:
        atomic_write(summary_path, summary_markdown(records, names, preset))
    return written


def resolve(names):
    """Full ablation names from short ones ('fig4' -> 'fig4_init_cle')."""
    full = []
    for name in names:
        matches = [a for a in ABLATIONS if a == name or a.split("_")[0] == name]
        if not matches:
            raise ValueError(f"Unknown figure {name!r}; choose from {sorted(ABLATIONS)}.")
        full.extend(m for m in matches if m not in full)
    return full


def main(argv):
    from absl import flags

    f = flags.FLAGS
    names = resolve(f.figures) if f.figures else list(ABLATIONS)
    if f.runs:
        records, sources = load_records(f.runs), f.runs
    else:
        sources = sorted({ABLATIONS[n].runs for n in names})
        loaded = {path: load_records(path) for path in sources}
        records = {n: loaded[ABLATIONS[n].runs] for n in names}
    paths = write_figures(records, f.figure_dir, names, f.summary or None, f.preset or None)
    print("\n".join(paths) if paths else "no runs of any ablation in " + ", ".join(sources))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_list("runs", [], "runs.jsonl files to draw every figure from (default: each "
                      "figure's own sweep, Ablation.runs: figures 4-7 the ablation runs, figure 8 "
                      "the Table 2 sweep).")
    flags.DEFINE_list("figures", [], "Figures to draw (fig4..fig8 or full names); default all.")
    flags.DEFINE_string("figure_dir", "results/figures", "Where the PNGs go.")
    flags.DEFINE_string("summary", "results/ablations/summary.md",
                        "Markdown with the numbers behind the figures ('' = none).")
    flags.DEFINE_string("preset", "", "Only runs of this iteration preset ('' = any).")
    app.run(main)
