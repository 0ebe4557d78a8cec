"""The empirical study's ablations (its Figures 4-8) as PTQ sweep cells, then the figures.

Each ablation in ``examples/figures.py``'s ``ABLATIONS`` is a grid of bit widths x variants; every
grid point, for every model and seed, is one cell of ``examples/benchmark.py``'s sweep, recorded
in ``<output>/runs.jsonl``. Cells shared between ablations (e.g. AdaRound + bias tuning at W4A4 in
figures 7 and 8) run once. Finished cells are skipped on a re-run, so an interrupted run resumes;
``table.md`` is rewritten atomically after every cell; it, the figures (``--figure_dir``) and
``summary.md`` (their numbers) every two minutes and at the end, all atomically.

    python examples/ablations.py --models=cnn1d --seeds=0,1 --preset=fast
    python examples/ablations.py --models=ds_cnn --test_samples=1000 --figures=fig6,fig8

Block-wise reconstruction (figure 6) is skipped for a model whose blocks are single layers
(e.g. cnn1d: no residual or depthwise-separable pairs, so both granularities are the same run).
"""
import collections
import os
import sys
import time

from absl import flags

import benchmark
import figures
from tfq_tiny import cli
from tfq_tiny.io import atomic_write

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_list("models", ["cnn1d"], "Benchmark models (shipped checkpoints).")
    flags.DEFINE_list("seeds", ["0"], "Seeds (calibration draw and optimisation).")
    flags.DEFINE_integer("test_samples", 0, "Evaluate on the first N test samples (0 = all).")
    flags.DEFINE_integer("calibration_samples", 1024, "Calibration samples.")
    flags.DEFINE_enum("preset", "fast", ["paper", "fast"], "Iteration preset of every cell.")
    benchmark.define_parallel_flags()
    flags.DEFINE_string("output", "results/ablations", "Directory of runs.jsonl, table.md, "
                        "summary.md.")
    flags.DEFINE_list("figures", [n for n, a in figures.ABLATIONS.items()
                                  if a.runs == figures.Ablation.runs],
                      "Ablations to run and draw: fig4, fig5, fig6, fig7, fig8 (or full names). "
                      "The default leaves out fig8, which is drawn from the Table 2 sweep.")
    flags.DEFINE_string("figure_dir", "results/figures", "Where the PNGs go.")
    flags.DEFINE_string("data_dir", None, "Data directory (default: TFQ_DATA_DIR).")
    flags.DEFINE_bool("plot_only", False, "Only redraw the figures from the runs recorded.")
    from tfq_tiny.models import MODELS

    cli.check_choices("models", MODELS)
    cli.check_ints("seeds")


def has_blocks(model_name):
    """True if block-wise reconstruction groups some layers of ``model_name`` differently."""
    import tfq_tiny  # noqa: F401
    from tfq_tiny import models
    from tfq_tiny._compat import keras
    from tfq_tiny.preprocess import preprocess
    from tfq_tiny.ptq.units import find_units
    from tfq_tiny.quantization.quantize import build_quantized_model

    model = keras.models.load_model(models.checkpoint_path(model_name), compile=False)
    qmodel = build_quantized_model(preprocess(model, ("bn_fold",)), "w8a8")
    return len(find_units(qmodel, "block")[1]) < len(find_units(qmodel, "layer")[1])


def ablation_cells(names, models, seeds, blocks=None, **common):
    """``(cells, {ablation: cell count})``: every cell of ``names`` for ``models`` x ``seeds``.

    ``blocks`` maps a model to whether it has multi-layer blocks (default: assume it does);
    ablations that need blocks are skipped for models without. ``common`` goes to
    ``benchmark.make_cell`` (preset, calibration_samples, test_samples, data_dir, ...).
    """
    cells, counts = [], collections.Counter()
    blocks = blocks or {}
    for name in names:
        ablation = figures.ABLATIONS[name]
        for model in models:
            if ablation.needs_blocks and not blocks.get(model, True):
                continue
            for seed in seeds:
                for bits, _, settings in ablation.settings():
                    cells.append(benchmark.make_cell(model, bits, seed=int(seed), **settings,
                                                     **common))
                    counts[name] += 1
    return cells, counts


def main(argv):
    del argv
    names = figures.resolve(FLAGS.figures)
    runs_path = os.path.join(FLAGS.output, "runs.jsonl")
    summary_path = os.path.join(FLAGS.output, "summary.md")

    command = "python " + " ".join(sys.argv)

    def draw():
        records = figures.load_records(runs_path)
        if records:
            atomic_write(os.path.join(FLAGS.output, "table.md"),
                         benchmark.markdown_table(records, command))
        return figures.write_figures(records, FLAGS.figure_dir, names, summary_path,
                                     FLAGS.preset)

    last_draw = [time.time()]

    def draw_now_and_then(record, done):
        """Redraw at most every two minutes while the sweep runs (drawing takes seconds)."""
        del record, done
        if time.time() - last_draw[0] > 120:
            draw()
            last_draw[0] = time.time()

    if not FLAGS.plot_only:
        blocks = {}
        if any(figures.ABLATIONS[n].needs_blocks for n in names):
            blocks = {m: has_blocks(m) for m in FLAGS.models}
            for model, has in blocks.items():
                if not has:
                    print(f"{model}: no multi-layer blocks, block-wise cells skipped "
                          "(they would repeat the layer-wise runs)")
        cells, counts = ablation_cells(
            names, FLAGS.models, FLAGS.seeds, blocks, preset=FLAGS.preset,
            calibration_samples=FLAGS.calibration_samples, test_samples=FLAGS.test_samples,
            data_dir=FLAGS.data_dir)
        print("cells per ablation (before sharing): "
              + ", ".join(f"{n} {c}" for n, c in counts.items()))
        benchmark.run_sweep(cells, FLAGS.output, command,
                            workers=FLAGS.workers, threads=FLAGS.threads,
                            on_record=draw_now_and_then)
    for path in draw():
        print("wrote", path)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
