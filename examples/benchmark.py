"""Benchmark sweep of the PTQ pipeline: models x bit widths x optimisers x seeds.

Every cell is one PTQ run (``PTQPipeline`` with the study's best pipeline unless flags say
otherwise) recorded as a JSON line in ``<output>/runs.jsonl`` (config, seed, accuracy, wall
time, model statistics of float and quantized model, machine). Finished cells are skipped when
re-run, so an interrupted sweep resumes; ``--workers`` runs cells in parallel processes, each
on ``cores // workers`` TF threads unless ``--threads`` says otherwise (on 2 cores,
``--workers=2`` does 1.4x the work of one process on both cores; two sweeps side by side, each
on every core, do less than one). The
Markdown table (the paper's Table 2 layout, mean +- std over seeds) is rewritten atomically
after every cell.

    python examples/benchmark.py --models=cnn1d,res8 --bits=w4a4 \
        --optimize=none,qparam,weights,bits,round --seeds=0 --output=results/ptq_w4a4

The pieces (``make_cell``, ``run_cell``, ``run_sweep``, ``load_runs``, ``markdown_table``) are
importable; ``examples/ablations.py`` runs its ablation grids through them.
"""
import functools
import json
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from absl import flags

from tfq_tiny import cli
from tfq_tiny.io import atomic_write

FLAGS = flags.FLAGS

KEY_FIELDS = ("model", "bits", "optimize", "granularity", "seed", "preset", "bias_tuning",
              "preprocess", "init")
# Settings that enter a cell's key only when they differ from these defaults, so the keys of
# runs recorded before they were part of the key stay valid.
KEY_EXTRAS = {"calibration_samples": 1024, "test_samples": 0, "iterations": None,
              "checkpoint": None, "drop_prob": 0.0, "learn_activation_ranges": False,
              "bias_tuning_guard": False, "edge_bits": 0, "edges": "input,first_last,residual",
              "activation_init": None, "refinement_passes": None}
# Settings added after runs were recorded: what a record without them ran (their default, except
# that loss-aware ranges were refined in one sweep before ``refinement_passes`` existed).
BEFORE_FIELD_EXISTED = {**{k: KEY_EXTRAS[k] for k in ("drop_prob", "learn_activation_ranges",
                                                     "bias_tuning_guard", "edge_bits", "edges",
                                                     "activation_init")},
                        "refinement_passes": 1}
# The study's (Zhuo et al. 2022, arXiv:2203.05492) W4A4 opt_round results we have offline
# (quoted in issue 4); the rest of its Table 2 was not available here.
# (model, bits, optimize) -> (float, quantized).
PAPER = {("res8", "w4a4", "round"): (86.75, 85.34), ("cnn1d", "w4a4", "round"): (90.36, 90.36)}
RECIPE_FIELDS = ("preset", "iterations", "calibration_samples", "test_samples", "preprocess", "init",
                 "bias_tuning", "drop_prob", "learn_activation_ranges", "bias_tuning_guard",
                 "edge_bits", "edges", "activation_init", "refinement_passes", "checkpoint")


def define_flags():
    """The sweep's command-line flags (defined only when this file runs as a script)."""
    flags.DEFINE_list("models", ["cnn1d"], "Benchmark models (shipped checkpoints).")
    flags.DEFINE_list("bits", ["w8a8", "w4a8", "w4a4", "w3a3", "w2a2"],
                      "Bit policies (shorthands).")
    flags.DEFINE_list("optimize", ["round"],
                      "Step 3 optimisers: none, qparam, weights, bits, round.")
    flags.DEFINE_list("granularity", ["layer"], "layer and/or block.")
    flags.DEFINE_list("seeds", ["0"], "Seeds (calibration draw and optimisation).")
    flags.DEFINE_enum("preset", "paper", ["paper", "fast"], "Iteration preset.")
    flags.DEFINE_integer("iterations", None, "Override iterations per unit.")
    flags.DEFINE_bool("bias_tuning", True, "Step 4 bias tuning.")
    flags.DEFINE_enum("preprocess", "cle", ["none", "bn_fold", "cle"], "Step 1.")
    flags.DEFINE_enum("init", "mse", ["minmax", "mse"], "Step 2 (weights and activations).")
    flags.DEFINE_enum("activation_init", None, ["minmax", "mse", "loss_aware"],
                      "Step 2 for activations only (default: --init); loss_aware = MSE ranges "
                      "rescaled for the model output (tfq_tiny.quantization.loss_aware).")
    flags.DEFINE_integer("refinement_passes", 3, "At most this many sweeps of the loss-aware "
                         "range refinement (PTQConfig.range_refinement_passes).")
    flags.DEFINE_float("drop_prob", 0.0, "QDrop probability of a float input element.")
    flags.DEFINE_bool("learn_activation_ranges", False, "LSQ on activation ranges as well.")
    flags.DEFINE_bool("bias_tuning_guard", False, "Revert bias tuning that lowers the top-1 "
                      "agreement with the float model on the calibration data.")
    flags.DEFINE_integer("edge_bits", 0, "Hold the model input, first and last weight layers "
                         "and residual-Add inputs at this width (the papers' W4A4 convention, "
                         "tfq_tiny.quantization.with_edge_bits); 0 = every tensor at --bits.")
    flags.DEFINE_list("edges", ["input", "first_last", "residual"],
                      "Which edge tensors --edge_bits holds (tfq_tiny.quantization.EDGES).")
    flags.DEFINE_integer("calibration_samples", 1024, "Calibration samples.")
    flags.DEFINE_integer("test_samples", 0, "Evaluate on the first N test samples (0 = all).")
    flags.DEFINE_string("data_dir", None, "Data directory.")
    define_parallel_flags()
    flags.DEFINE_string("output", "results/benchmark", "Output directory.")
    from tfq_tiny.models import MODELS
    from tfq_tiny.ptq.config import GRANULARITIES, OPTIMIZERS
    from tfq_tiny.quantization.edges import EDGES

    cli.check_choices("models", MODELS)
    cli.check_policies("bits")
    cli.check_choices("optimize", OPTIMIZERS)
    cli.check_choices("granularity", GRANULARITIES)
    cli.check_ints("seeds")
    cli.check_bits("edge_bits", off=(0,), meaning="edges follow the policy")
    cli.check_choices("edges", EDGES)


def define_parallel_flags():
    """``--workers`` and ``--threads``, shared with ``examples/ablations.py``."""
    flags.DEFINE_integer("workers", 1, "Parallel worker processes (each runs whole cells).",
                         lower_bound=1)
    flags.DEFINE_integer("threads", 0, "TF threads (intra- and inter-op) per cell process; "
                         "0 = cores // workers with several workers, TF's default (every core) "
                         "with one. Run one sweep with --workers rather than sweeps side by side.",
                         lower_bound=0)


def make_cell(model, bits, optimize="round", granularity="layer", seed=0, preset="paper",
              bias_tuning=True, preprocess="cle", init="mse", iterations=None,
              calibration_samples=1024, test_samples=0, data_dir=None, drop_prob=0.0,
              learn_activation_ranges=False, bias_tuning_guard=False, edge_bits=0,
              edges=KEY_EXTRAS["edges"], activation_init=None, refinement_passes=3):
    """One sweep cell: everything ``run_cell`` needs, as a plain (picklable) dict.

    ``checkpoint`` (SHA-256 prefix of the shipped float model) is part of the cell's key, so
    a retrained checkpoint never reuses results recorded on the old one. ``refinement_passes``
    is kept only for loss-aware activation ranges (the only recipe it changes)."""
    from tfq_tiny import models
    from tfq_tiny.io import file_sha256

    return dict(model=model, bits=bits, optimize=optimize, granularity=granularity,
                seed=int(seed), preset=preset, bias_tuning=bool(bias_tuning),
                preprocess=preprocess, init=init, iterations=iterations,
                calibration_samples=calibration_samples, test_samples=test_samples,
                data_dir=data_dir, checkpoint=file_sha256(models.checkpoint_path(model)),
                drop_prob=float(drop_prob), learn_activation_ranges=bool(learn_activation_ranges),
                bias_tuning_guard=bool(bias_tuning_guard), edge_bits=int(edge_bits),
                edges=edges if isinstance(edges, str) else ",".join(edges),
                activation_init=None if activation_init in (None, init) else activation_init,
                refinement_passes=int(refinement_passes) if activation_init == "loss_aware"
                else None)


def cell_key(cell):
    """The identity of a cell in ``runs.jsonl`` (what a re-run matches to skip it)."""
    key = "|".join(str(cell[k]) for k in KEY_FIELDS)
    extras = [f"{k}={cell.get(k, d)}" for k, d in KEY_EXTRAS.items() if cell.get(k, d) != d]
    return "|".join([key] + extras)


_cell_key = cell_key  # the name earlier revisions used


@functools.lru_cache(maxsize=4)
def _dataset(name, data_dir, seed):
    from tfq_tiny import data

    return data.load(name, data_dir=data_dir, seed=seed)


def _statistics(model, policy=None):
    from tfq_tiny.analysis import model_statistics

    s = model_statistics(model, policy)
    return {"macs": s.macs, "bops": s.bops, "weight_bytes": s.weight_bytes,
            "peak_activation_bytes": s.peak_activation_bytes}


@functools.lru_cache(maxsize=1)
def code_version():
    """The library code a run used: git HEAD, and whether/how ``tfq_tiny/`` differed from it.

    Other work may edit the tree or commit while a sweep runs; ``diff`` (a hash of
    ``git diff HEAD`` over ``tfq_tiny/`` and its untracked files) tells records made with
    different edits apart. Read once per process, when the sweep starts (``run_sweep``) and
    the code it runs is imported, not when its first cell ends. None outside a git checkout.
    """
    import hashlib
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=True).stdout

    try:
        head = git("rev-parse", "HEAD").strip()
        status = git("status", "--porcelain", "--", "tfq_tiny")
        diff = git("diff", "HEAD", "--", "tfq_tiny") + status
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": head, "tfq_tiny_modified": bool(status.strip()),
            "diff": hashlib.sha256(diff.encode()).hexdigest()[:12] if status.strip() else None}


def run_cell(cell):
    """One PTQ run (in this process): returns the JSON record."""
    import tfq_tiny  # noqa: F401
    from tfq_tiny import models
    from tfq_tiny._compat import keras
    from tfq_tiny.evaluate import accuracy
    from tfq_tiny.ptq import PTQConfig, PTQPipeline
    from tfq_tiny.quantization import BitPolicy, with_edge_bits

    model = keras.models.load_model(models.checkpoint_path(cell["model"]), compile=False)
    dataset = _dataset(models.DATASET_OF[cell["model"]], cell["data_dir"], cell["seed"])
    x_test, y_test = dataset.x_test, dataset.y_test
    if cell["test_samples"]:
        x_test, y_test = x_test[:cell["test_samples"]], y_test[:cell["test_samples"]]
    overrides = dict(optimize=cell["optimize"], granularity=cell["granularity"],
                     bias_tuning=cell["bias_tuning"], preprocess=cell["preprocess"],
                     weight_init=cell["init"],
                     activation_init=cell.get("activation_init") or cell["init"], seed=cell["seed"],
                     drop_prob=cell["drop_prob"],
                     learn_activation_ranges=cell["learn_activation_ranges"],
                     bias_tuning_guard=cell["bias_tuning_guard"])
    if cell["iterations"] is not None:
        overrides["iterations"] = cell["iterations"]
    if cell.get("refinement_passes"):
        overrides["range_refinement_passes"] = cell["refinement_passes"]
    config = PTQConfig.preset(cell["preset"], **overrides)
    policy = BitPolicy.parse(cell["bits"])
    if cell["edge_bits"]:
        policy = with_edge_bits(policy, model, cell["edge_bits"], cell["edges"].split(","))
    calib = dataset.calibration(cell["calibration_samples"], seed=cell["seed"])
    float_acc = accuracy(model, x_test, y_test)
    start = time.time()
    pipeline = PTQPipeline(config, progress=False)
    qmodel = pipeline.run(model, calib, policy)
    seconds = time.time() - start
    quant_acc = accuracy(qmodel, x_test, y_test)
    stats = {"float": _statistics(model),
             "quantized": _statistics(model, policy)}
    return {**{k: v for k, v in cell.items() if k != "data_dir"}, "key": cell_key(cell),
            "dataset": dataset.name, "config": config.get_config(),
            "policy": policy.get_config(),
            "float_accuracy": float_acc, "accuracy": quant_acc, "drop": float_acc - quant_acc,
            "ptq_seconds": seconds, "test_samples_used": len(y_test),
            "units": pipeline.history, "range_refinement": pipeline.range_refinement,
            "stats": stats, "code": code_version(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "tf_threads": tf_threads()}}


def load_runs(path):
    """``{key: record}`` of the finished cells in a runs.jsonl (torn last lines ignored)."""
    runs = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                runs[record["key"]] = record
    return runs


def recipe_value(record, field, unrecorded=None):
    """``record[field]``, or for a run recorded before the field existed what it ran
    (``BEFORE_FIELD_EXISTED``), else ``unrecorded``."""
    if field in record:
        return record[field]
    return BEFORE_FIELD_EXISTED.get(field, unrecorded)


def markdown_table(runs, command):
    """Table-2 layout: one row per (model, optimiser, granularity), one column per bit policy.

    Recipe settings (preset, iterations, calibration and test samples, preprocess, init, bias
    tuning and its guard, QDrop, learned activation ranges, float checkpoint) that differ
    between the runs get their own columns and split the rows, so runs of different recipes or
    checkpoints are never averaged ("unrecorded": a run from before checkpoints were recorded).
    """
    import numpy as np

    def value(record, field):
        if field == "edges" and not record.get("edge_bits"):
            return "-"
        if field == "refinement_passes" and record.get("activation_init") != "loss_aware":
            return "-"
        return str(recipe_value(record, field, "unrecorded"))

    varying = [f for f in RECIPE_FIELDS if len({value(r, f) for r in runs}) > 1]
    cells = {}
    for r in runs:
        row_key = (r["model"], r["optimize"], r["granularity"]) + tuple(
            value(r, f) for f in varying)
        cells.setdefault(row_key, {}).setdefault(r["bits"], []).append(r)
    bits = sorted({r["bits"] for r in runs}, key=_bits_order)
    commands = list(dict.fromkeys([r["command"] for r in runs if r.get("command")]))
    header = (f"Command: `{command}`" if commands in ([], [command]) else
              "Commands (each run records its own):\n\n" + "\n".join(f"- `{c}`" for c in commands))
    lines = [header, "",
             "| model | float | optimize | granularity | "
             + "".join(f"{f} | " for f in varying)
             + " | ".join(b.upper() for b in bits) + " |",
             "|---" * (4 + len(varying) + len(bits)) + "|"]
    for row_key, by_bits in sorted(cells.items()):
        model, optimize, gran = row_key[:3]
        first = next(iter(by_bits.values()))[0]
        row = [model, f"{first['float_accuracy']:.2f}", optimize, gran, *row_key[3:]]
        for b in bits:
            accs = [r["accuracy"] for r in by_bits.get(b, [])]
            secs = [r["ptq_seconds"] for r in by_bits.get(b, [])]
            paper = PAPER.get((model, b, optimize))
            paper = f"; paper {paper[1] - paper[0]:+.2f}" if paper else ""
            if not accs:
                row.append("")
                continue
            change = round(float(np.mean(accs) - first["float_accuracy"]), 2) + 0.0  # no -0.00
            if len(accs) == 1:
                row.append(f"{accs[0]:.2f} ({change:+.2f}{paper}; {secs[0]:.0f}s)")
            else:
                row.append(f"{np.mean(accs):.2f} +- {np.std(accs):.2f} ({change:+.2f}{paper}; "
                           f"n={len(accs)})")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Accuracy in % on the full test split unless test_samples says otherwise; in "
              "brackets the change from the float model (mean over seeds), the study's change "
              "where we have it (" + ", ".join(
                  f"{m} {b.upper()} {o}: {f:.2f} -> {q:.2f}" for (m, b, o), (f, q) in
                  PAPER.items()) + "; the rest of its Table 2 was not available offline), and "
              "the PTQ wall time of a single run on this machine (s) or the number of seeds."]
    return "\n".join(lines) + "\n"


def _bits_order(bits):
    """w8a8 before w4a8 before w4a4 ...; float activations ('a32'/'af') first per weight width."""
    w, a = bits.lower()[1:].split("a")
    return (-int(w), -(32 if a in ("32", "f") else int(a)), bits)


def pending(cells, done):
    """The cells of ``cells`` whose key is not in ``done`` (duplicates dropped, order kept)."""
    seen, todo = set(done), []
    for cell in cells:
        key = cell_key(cell)
        if key not in seen:
            seen.add(key)
            todo.append(cell)
    return todo


def limit_threads(threads):
    """Run this process's TF ops on ``threads`` threads (intra- and inter-op; 0 = TF's default).

    Must come before the process's first TF op. Processes that each use every core
    oversubscribe it: on 2 cores, Res8 bias tuning made 12 steps/s in one default process, 9.8
    in two default processes together and 16.7 in two single-threaded ones.
    """
    if not threads:
        return
    from tfq_tiny._compat import tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as error:
        raise RuntimeError(f"Cannot limit TF to {threads} thread(s): this process already ran "
                           "TF ops. Set threads before anything else runs, or use workers "
                           "(fresh processes).") from error


def _start_worker(threads):
    limit_threads(threads)
    code_version()


def _release_cell_memory():
    """Drop what Keras and TF keep of a finished in-process cell (models, graphs, traces)."""
    import gc

    if "tensorflow" in sys.modules:
        from tfq_tiny._compat import keras
        keras.backend.clear_session()
    gc.collect()


def tf_threads():
    """TF's intra-op thread setting of this process (0 = its default, every core)."""
    from tfq_tiny._compat import tf
    return tf.config.threading.get_intra_op_parallelism_threads()


def run_sweep(cells, output, command, runner=run_cell, workers=1, on_record=None, table=True,
              threads=0):
    """Run the unfinished ``cells``, appending each record to ``<output>/runs.jsonl``.

    With ``workers`` > 1 the cells run in that many spawned processes, each on ``threads`` TF
    threads (0: ``cores // workers``), a fresh process for every cell (TF and Keras keep graphs
    and models alive across cells: long sweeps in reused processes grew to 15 GB), and are
    recorded as they finish; with one they run here on ``threads`` (0: TF's default), the Keras
    session cleared after each.

    After every cell ``table.md`` is rewritten atomically from all runs in the file (so it
    also shows cells that another sweep into the same ``output`` finished meanwhile) and
    ``on_record(record, done)`` is called; with nothing left to run the table is rewritten
    once, so a re-run renders it afresh. Returns ``{key: record}`` of every run this sweep
    knows finished (the file when it started, and its own).
    """
    os.makedirs(output, exist_ok=True)
    runs_path = os.path.join(output, "runs.jsonl")
    done = load_runs(runs_path)
    todo = pending(cells, done)
    total = len({cell_key(c) for c in cells})
    print(f"{total} cells, {total - len(todo)} already done, {len(todo)} to run", flush=True)
    code_version()
    start = time.time()

    def write_table():
        atomic_write(os.path.join(output, "table.md"),
                     markdown_table(list(load_runs(runs_path).values()), command))

    def record(result, index):
        result = {**result, "command": command}
        done[result["key"]] = result
        with open(runs_path, "a") as f:
            f.write(json.dumps(result) + "\n")
        if table:
            write_table()
        elapsed = time.time() - start
        eta = elapsed / index * (len(todo) - index)
        recipe = f"{result['preprocess']}+{result['init']}" + (
            "+bias tuning" if result["bias_tuning"] else "")
        print(f"[{index}/{len(todo)}] {result['model']} {result['bits']} "
              f"{result['optimize']}/{result['granularity']} {recipe} seed {result['seed']}: "
              f"{result['accuracy']:.2f}% (float {result['float_accuracy']:.2f}) "
              f"in {result['ptq_seconds']:.0f}s; elapsed {elapsed / 60:.1f} min, "
              f"~{eta / 60:.1f} min left", flush=True)
        if on_record is not None:
            on_record(result, done)

    if workers > 1 and len(todo) > 1:
        threads = threads or max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker, initargs=(threads,),
                                 max_tasks_per_child=1) as pool:
            futures = [pool.submit(runner, cell) for cell in todo]
            for index, future in enumerate(as_completed(futures), 1):
                record(future.result(), index)
    else:
        limit_threads(threads)
        for index, cell in enumerate(todo, 1):
            record(runner(cell), index)
            _release_cell_memory()
    if table and not todo and done:
        write_table()
    return done


def main(argv):
    del argv
    cells = [make_cell(m, b, o, g, int(s), FLAGS.preset, FLAGS.bias_tuning, FLAGS.preprocess,
                       FLAGS.init, FLAGS.iterations, FLAGS.calibration_samples,
                       FLAGS.test_samples, FLAGS.data_dir, FLAGS.drop_prob,
                       FLAGS.learn_activation_ranges, FLAGS.bias_tuning_guard, FLAGS.edge_bits,
                       FLAGS.edges, FLAGS.activation_init, FLAGS.refinement_passes)
             for m in FLAGS.models for b in FLAGS.bits for o in FLAGS.optimize
             for g in FLAGS.granularity for s in FLAGS.seeds
             if not (o == "bits" and g == "block")]
    run_sweep(cells, FLAGS.output, "python " + " ".join(sys.argv), workers=FLAGS.workers,
              threads=FLAGS.threads)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
