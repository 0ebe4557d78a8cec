"""Mixed-precision search under FLASH/RAM budgets: HAQ-for-MCU RL (DDPG) or the fast
sensitivity + integer-linear-program search.

Writes to --output: policy.json (BitPolicy JSON the converter consumes), search.png (bits per
layer over episodes for the current and best policy, and their memory against the budgets,
as the paper's Figure 3), summary.json and summary.md (budgets, policies, M1/M2, accuracies,
wall time, command, machine) and, for RL, state.pkl (the resumable search state).

Budgets default to the model's uniform W4A4 FLASH and RAM. The labelled proxy split (reward and
sensitivity) is a seeded draw from the validation split (the float model has fitted its
training samples, so they would flatter every policy); calibration samples come from the
training split; reported accuracies are on the test split.

--reward=qat scores every policy after one epoch of quantization-aware fine-tuning (the paper's
reward) on --qat_samples further training samples, disjoint from the calibration and proxy
draws. --finetune_epochs=N fine-tunes the chosen policy with QAT on the whole training split
afterwards (resumable from <output>/finetune; the model is saved there as model.h5) and reports
test accuracy before and after.

    python examples/search.py --model=cnn1d --method=fast --output=/tmp/search_fast
    python examples/search.py --model=cnn1d --method=rl --episodes=60 --output=/tmp/search_rl
    python examples/search.py ... --resume      # continue an interrupted RL search exactly
    python examples/search.py --method=rl --reward=qat --finetune_epochs=2 --output=/tmp/qat
"""
import json
import os
import platform
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
def define_flags():
    """The command-line flags (defined only when this file runs as a script, so other scripts
    can import its functions)."""
    flags.DEFINE_string("model", "cnn1d", "Shipped model: cnn1d, res8, ds_cnn or mobilenet_v1.")
    flags.DEFINE_string("data_dir", None, "Data directory (default: $TFQ_DATA_DIR or ../shared/data).")
    flags.DEFINE_enum("method", "rl", ["rl", "fast"], "RL (DDPG) search or the fast ILP search.")
    flags.DEFINE_float("flash_kb", None, "FLASH budget in kB (1024 B); default: uniform W4A4 M1.")
    flags.DEFINE_float("ram_kb", None, "RAM budget in kB (1024 B); default: uniform W4A4 M2.")
    flags.DEFINE_integer("episodes", 60, "RL episodes.")
    flags.DEFINE_integer("warmup", None, "RL random warm-up episodes (default: episodes // 5).")
    flags.DEFINE_enum("mode", "concurrent", ["weights", "concurrent", "independent"],
                      "weights only (activations at 8), or weights and activations together "
                      "(concurrent) or one after the other (independent).")
    flags.DEFINE_boolean("keep_residual_8bit", False, "Fix residual-branch activations at 8 bits.")
    flags.DEFINE_integer("calibration_samples", 512, "Unlabeled training samples for calibration.")
    flags.DEFINE_integer("proxy_samples", 1000, "Labelled validation samples of the proxy split "
                         "(scores candidate policies).")
    flags.DEFINE_integer("test_samples", 0, "Evaluate on the first N test samples (0 = all).")
    flags.DEFINE_string("output", "/tmp/tfq_search", "Output directory.")
    flags.DEFINE_integer("seed", 0, "Seed of the data draws and of the RL agent.")
    flags.DEFINE_boolean("resume", False, "Resume the RL search from <output>/state.pkl.")
    flags.DEFINE_boolean("progress", True, "Show tqdm progress bars.")
    flags.DEFINE_enum("select_with", "val", list(SELECTORS),
                      "Fast search: how its few ILP candidates are judged: " + "; ".join(
                          f"'{k}' = {v}" for k, v in SELECTORS.items()) + " (here: max(1, "
                      "--finetune_epochs) epochs on the training split).")
    flags.DEFINE_enum("reward", "ptq", ["ptq", "qat"],
                      "Score of a policy: proxy accuracy after PTQ, or after one epoch of QAT.")
    flags.DEFINE_integer("qat_samples", 2000, "Labelled training samples the QAT reward fine-tunes on "
                         "(disjoint from the calibration and proxy draws).")
    flags.DEFINE_integer("finetune_epochs", 0, "After the search, QAT epochs of the chosen policy on "
                         "the training split (0 = none).")
    flags.DEFINE_float("finetune_lr", 1e-4, "Adam learning rate of the QAT fine-tuning (HAQ: 1e-4).")
    flags.DEFINE_integer("finetune_batch_size", 64, "Batch size of the QAT fine-tuning.")
    flags.DEFINE_boolean("finetune_restore_best", True, "Keep the fine-tuning epoch (0 = the PTQ "
                         "model) with the best accuracy on the validation split.")
    flags.DEFINE_boolean("finetune_dropout", True, "QAT (fine-tuning, QAT reward and judge) in "
                         "training mode, the model's Dropout layers active (FineTuner dropout).")


def _machine():
    import tensorflow as tf
    return {"hostname": platform.node(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "load_average_at_start": list(os.getloadavg())}


def _write_json(obj, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def uniform_candidates(mm, flash, ram, choices):
    """Uniform (W, A) policies with their M1/M2 and whether they fit."""
    from tfq_tiny import BitPolicy
    rows = []
    for w in choices:
        for a in choices:
            policy = BitPolicy.uniform(w, a)
            m1, m2 = mm.memory(mm.assignment(policy))
            rows.append({"policy": f"W{w}A{a}", "flash": m1, "ram": m2,
                         "fits": m1 <= flash and m2 <= ram})
    return rows


def plot_rl(history, variables, flash, ram, path, title, reward="ptq"):
    """Figure-3-like: bits per tensor over episodes (current, best) and M1/M2 vs budgets."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap, BoundaryNorm
    import numpy as np

    episodes = [h["episode"] for h in history]
    cmap = ListedColormap(["#d7301f", "#fdae61", "#1a9850"])
    norm = BoundaryNorm([0, 3, 6, 9], cmap.N)
    fig, axes = plt.subplots(3, 2, figsize=(13, 11), gridspec_kw={"height_ratios": [3, 2, 2]},
                             layout="constrained")
    for ax, key, label in ((axes[0, 0], "bits", "current policy"),
                           (axes[0, 1], "best_bits", "best policy")):
        grid = np.full((len(variables), len(history)), np.nan)
        for j, h in enumerate(history):
            if h[key]:
                grid[:, j] = [h[key][v] for v in variables]
        image = ax.imshow(grid, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest",
                          extent=(episodes[0] - 0.5, episodes[-1] + 0.5, len(variables) - 0.5,
                                  -0.5))
        ax.set_yticks(range(len(variables)))
        ax.set_yticklabels(variables, fontsize=8)
        ax.set_xlabel("episode")
        ax.set_title(f"bits per tensor: {label}")
    bar = fig.colorbar(image, ax=axes[0, :].tolist(), ticks=[1.5, 4.5, 7.5], fraction=0.03)
    bar.ax.set_yticklabels(["2", "4", "8"])
    bar.set_label("bits")
    for ax, key, budget, label in ((axes[1, 0], "flash", flash, "M1 FLASH (weights)"),
                                   (axes[1, 1], "ram", ram, "M2 RAM (peak activations)")):
        ax.plot(episodes, [h[key] / 1024 for h in history], ".", color="0.6", label="current")
        ax.step(episodes, [(h[f"best_{key}"] or np.nan) / 1024 for h in history], where="post",
                color="C0", label="best")
        ax.axhline(budget / 1024, color="C3", ls="--", label="budget")
        ax.set_ylabel("kB")
        ax.set_xlabel("episode")
        ax.set_title(label)
        ax.legend(loc="lower right", fontsize=8)
    ax = axes[2, 0]
    ax.plot(episodes, [h["accuracy"] for h in history], ".", color="0.6", label="current")
    ax.step(episodes, [h["best_accuracy"] if h["best_accuracy"] is not None else np.nan
                       for h in history], where="post", color="C0", label="best")
    warm = [h["episode"] for h in history if h["warmup"]]
    if warm:
        ax.axvspan(warm[0] - 0.5, warm[-1] + 0.5, color="0.9", label="random warm-up")
    ax.set_xlabel("episode")
    ax.set_ylabel("proxy accuracy (%)")
    ax.set_title(f"reward: proxy accuracy after {'one epoch of QAT' if reward == 'qat' else 'PTQ'}")
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[2, 1]
    ax.plot(episodes, [h["sigma"] for h in history], color="C2")
    ax.set_xlabel("episode")
    ax.set_ylabel("noise sigma")
    ax.set_title("exploration noise (truncated normal)")
    fig.suptitle(f"{title}\n(:W = weight tensor, :A = activation tensor)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fast(mm, assignment, sensitivity, flash, ram, path, title):
    """Bits per tensor, measured sensitivity and memory vs budgets for the fast search."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [str(v) for v in mm.variables]
    bits = [assignment[v.key] for v in mm.variables]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), layout="constrained",
                             gridspec_kw={"width_ratios": [3, 3, 1.4]})
    colors = ["C0" if v.kind == "weight" else "C1" for v in mm.variables]
    axes[0].barh(range(len(names)), bits, color=colors)
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels(names, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xticks([2, 4, 8])
    axes[0].set_xlabel("bits (blue: weights, orange: activations)")
    axes[0].set_title("chosen bits per tensor")
    losses = sensitivity.losses
    anchor = sensitivity.anchor
    others = [b for b in sorted(mm.choices, reverse=True) if b != anchor]
    for k, b in enumerate(others):
        vals = [losses.get(v.key, {}).get(b, np.nan) - sensitivity.reference_loss
                for v in mm.variables]
        axes[1].barh(np.arange(len(names)) + (k - 0.5) * 0.4, vals, height=0.4,
                     color=("0.45", "0.75")[k % 2], label=f"{b} bits")
    axes[1].set_yticks(range(len(names)))
    axes[1].set_yticklabels(names, fontsize=8)
    axes[1].invert_yaxis()
    axes[1].set_xscale("symlog", linthresh=1e-4)
    axes[1].set_xlabel(f"KL change vs all-{anchor}-bit (proxy split)")
    axes[1].set_title(f"sensitivity: each tensor changed alone from {anchor} bits")
    axes[1].legend(fontsize=8)
    m1, m2 = mm.memory(assignment)
    axes[2].bar([0, 1], [m1 / 1024, m2 / 1024], color=["C0", "C1"])
    axes[2].plot([-0.4, 0.4], [flash / 1024] * 2, "C3--")
    axes[2].plot([0.6, 1.4], [ram / 1024] * 2, "C3--", label="budget")
    axes[2].set_xticks([0, 1])
    axes[2].set_xticklabels(["M1 FLASH", "M2 RAM"])
    axes[2].set_ylabel("kB")
    axes[2].legend(fontsize=8)
    axes[2].set_title("memory vs budget")
    fig.suptitle(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _stop_on_signals():
    """SIGTERM (batch schedulers) and SIGINT (even when a background shell ignores it) stop the
    RL search cleanly at the last finished episode, as Ctrl-C does."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def finetune_policy(model, policy, calib, train_data, x_test, y_test, before, epochs, lr=1e-4,
                    batch_size=64, directory=None, progress=True, seed=0, validation_data=None,
                    dropout=True):
    """QAT of ``policy`` (quantized as the search scores it) on ``train_data``; resumable from
    ``directory`` (the fine-tuned model is saved there as model.h5). With ``validation_data``
    the weights of the best validation accuracy are kept (``FineTuner(restore_best=True)``;
    epoch 0, the PTQ model, included); ``dropout`` as ``FineTuner``. Returns the record, with
    ``dropout_layers``: how many Dropout layers were active."""
    import tfq_tiny
    from tfq_tiny.evaluate import accuracy
    from tfq_tiny.qat import FineTuner

    qmodel = tfq_tiny.quantize_model(model, policy, calib, seed=seed)
    tuner = FineTuner(epochs, lr, batch_size, checkpoint_dir=directory,
                      log_dir=os.path.join(directory, "logs") if directory else None,
                      progress=progress, seed=seed, validation_data=validation_data,
                      restore_best=validation_data is not None, dropout=dropout)
    start = time.perf_counter()
    tuner.run(qmodel, train_data)
    seconds = time.perf_counter() - start
    after = accuracy(qmodel, x_test, y_test)
    saved = None
    if directory:
        saved = os.path.join(directory, "model.h5")
        tfq_tiny.save_model(qmodel, saved)
    print(f"QAT fine-tuning, {epochs} epoch(s): test accuracy {before:.2f}% -> {after:.2f}%")
    epoch_seconds = [h.get("epoch_seconds") for h in tuner.history]
    keep = {"restore_best": True, "restored_epoch": tuner.restored_epoch} \
        if validation_data is not None else {}
    return {"epochs": epochs, "lr": lr, "batch_size": batch_size, **keep,
            "dropout_layers": tuner.dropout_layers,
            "train_samples": len(train_data[0]), "test_accuracy_before": before,
            "test_accuracy_after": after, "history": tuner.history, "seconds_this_run": seconds,
            "seconds": None if None in epoch_seconds else sum(epoch_seconds), "model": saved}


def _markdown(summary):
    """The headline numbers of summary.json as a short Markdown report."""
    lines = [f"# {summary['model']}: {summary['method']} search ({summary['mode']}, reward "
             f"{summary['reward']}, seed {summary['seed']})", "",
             f"`{summary['command']}`", "",
             f"Budgets: FLASH {summary['budgets']['flash']:,} B, RAM {summary['budgets']['ram']:,} "
             f"B. Samples: {summary['calibration_samples']} calibration, "
             f"{summary['proxy_samples']} proxy, {summary['qat_samples']} QAT-reward, "
             f"{summary['test_samples']} test.", "",
             "| | M1 FLASH B | M2 RAM B | test accuracy % |", "|---|---|---|---|",
             f"| float | | | {summary['float_test_accuracy']:.2f} |",
             f"| searched policy, PTQ | {summary['flash']:,} | {summary['ram']:,} | "
             f"{summary['test_accuracy']:.2f} |"]
    if "finetune" in summary:
        ft = summary["finetune"]
        lines.append(f"| searched policy, + {ft['epochs']} epoch(s) QAT | {summary['flash']:,} | "
                     f"{summary['ram']:,} | {ft['test_accuracy_after']:.2f} |")
    best = summary["best_fitting_uniform"]
    if best:
        lines.append(f"| best fitting uniform {best['policy']}, PTQ | {best['flash']:,} | "
                     f"{best['ram']:,} | {best['test_accuracy']:.2f} |")
    lines += ["", "Bits: " + ", ".join(f"{k} {v}" for k, v in summary["bits"].items()), ""]
    return "\n".join(lines)


def load_setup(model_name, data_dir=None, seed=0, calibration_samples=512, proxy_samples=1000,
               qat_samples=0, test_samples=0):
    """The shipped float model and the seeded draws a search uses.

    From one permutation of the training split (``seed``): the calibration samples, then
    (disjoint) the QAT-reward samples. The labelled proxy split that scores candidate policies
    is a seeded draw from the *validation* split: the float model has fitted its training
    samples, so on them quantization damage barely shows and rewards hardly tell policies
    apart. The test split is cut to its first ``test_samples`` (0 = all). Returns a
    SimpleNamespace with model, dataset, calib, x_proxy, y_proxy, qat_idx, x_test, y_test.
    """
    import types

    import numpy as np

    from tfq_tiny import data, models
    from tfq_tiny._compat import keras

    path = models.checkpoint_path(model_name)
    if not os.path.exists(path):
        raise app.UsageError(f"No shipped checkpoint for '{model_name}' at {path}; train one with "
                             f"examples/train.py --model={model_name}.")
    model = keras.models.load_model(path, compile=False)
    dataset = data.load(models.DATASET_OF[model_name], data_dir=data_dir, seed=seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(dataset.size("train"))
    n_val = dataset.size("val")
    if proxy_samples > n_val:
        raise app.UsageError(f"--proxy_samples={proxy_samples} exceeds the {n_val} validation "
                             f"samples of {dataset.name}; use at most {n_val}.")
    proxy_idx = np.sort(rng.permutation(n_val)[:proxy_samples])
    x_test, y_test = dataset.x_test, dataset.y_test
    if test_samples:
        x_test, y_test = x_test[:test_samples], y_test[:test_samples]
    return types.SimpleNamespace(
        name=model_name, model=model, dataset=dataset, order=order,
        calib=dataset.features("train", np.sort(order[:calibration_samples])),
        x_proxy=dataset.features("val", proxy_idx), y_proxy=dataset.labels("val", proxy_idx),
        qat_idx=np.sort(order[calibration_samples:calibration_samples + qat_samples]),
        x_test=x_test, y_test=y_test)


def make_evaluator(setup, reward="ptq", seed=0, lr=1e-4, batch_size=64, dropout=True):
    """The proxy scorer of a search: accuracy after PTQ, or after one epoch of QAT (``dropout``
    as ``FineTuner``) on the setup's QAT-reward samples."""
    from tfq_tiny.search.proxy import ProxyEvaluator, QATProxyEvaluator

    if reward == "qat":
        if len(setup.qat_idx) == 0:
            raise app.UsageError("--reward=qat needs --qat_samples > 0 training samples left after "
                                 "the calibration and proxy draws.")
        ds = setup.dataset
        return QATProxyEvaluator(
            setup.model, setup.calib, setup.x_proxy, setup.y_proxy, seed=seed, lr=lr,
            finetune_batch_size=batch_size, dropout=dropout,
            train_data=(ds.features("train", setup.qat_idx), ds.labels("train", setup.qat_idx)))
    return ProxyEvaluator(setup.model, setup.calib, setup.x_proxy, setup.y_proxy, seed=seed)


# How the fast search judges its few ILP candidates (--select_with).
SELECTORS = {"proxy": "PTQ accuracy on the proxy split",
             "val": "PTQ accuracy on the whole validation split",
             "qat": "accuracy on the whole validation split after the same QAT as the reported "
                    "policies (first QAT seed)"}


def make_selector(setup, kind, train_data=None, epochs=1, lr=1e-4, batch_size=64, seed=0,
                  dropout=True):
    """The fast search's candidate judge (``SELECTORS``): None (= the proxy evaluator), PTQ on
    the whole validation split, or ``epochs`` of QAT on ``train_data()`` (a function returning
    labelled ``(x, y)``, called only for this judge, so the others never load the training
    split) then the validation split. The candidates are few, so they can afford a larger split
    and the fine-tuning the chosen policy will get, which the many sensitivity probes cannot."""
    from tfq_tiny.search.proxy import ProxyEvaluator, QATProxyEvaluator

    if kind not in SELECTORS:
        raise app.UsageError(f"unknown candidate judge {kind!r}; choose from {list(SELECTORS)}")
    ds = setup.dataset
    if kind == "proxy":
        return None
    if kind == "val":
        return ProxyEvaluator(setup.model, setup.calib, ds.x_val, ds.y_val, seed=seed)
    return QATProxyEvaluator(setup.model, setup.calib, ds.x_val, ds.y_val,
                             train_data=train_data(), epochs=epochs, lr=lr,
                             finetune_batch_size=batch_size, seed=seed, dropout=dropout)


def run_fast(mm, evaluator, flash, ram, mode="concurrent", progress=True, plot_path=None,
             title="", selector=None):
    """Fast search (sensitivity + ILP; ``selector`` judges the ILP candidates, default the
    ``evaluator``). Returns {assignment, policy, proxy_accuracy, seconds, extra} (extra:
    sensitivity, ILP time, anchor, candidates, objective); draws search.png at ``plot_path``."""
    from tfq_tiny.search.knapsack import FAST_SEARCH_VERSION, fast_search

    start = time.perf_counter()
    solution, sens = fast_search(mm, evaluator, flash, ram, mode=mode, progress=progress,
                                 selector=selector)
    seconds = time.perf_counter() - start
    proxy_acc = solution.proxy_accuracy
    extra = {"sensitivity": sens.to_dict(), "ilp_seconds": solution.seconds,
             "sensitivity_seconds": solution.sensitivity_seconds, "sensitivity_anchor": sens.anchor,
             "candidates": solution.candidates, "fast_search_version": FAST_SEARCH_VERSION,
             "objective": solution.objective}
    if plot_path:
        plot_fast(mm, solution.assignment, sens, flash, ram, plot_path, title)
    return {"assignment": solution.assignment, "policy": solution.policy,
            "proxy_accuracy": proxy_acc, "seconds": seconds, "extra": extra}


def run_rl(mm, evaluator, flash, ram, config, state_path=None, resume=False, progress=True,
           plot_path=None, title=""):
    """DDPG search with ``config`` (an RLConfig), resumable from ``state_path``. Returns
    {assignment, policy (None if stopped before any episode fitted), proxy_accuracy, seconds,
    interrupted, extra} (extra: episodes, config, history, reward evaluations)."""
    from tfq_tiny.search.rl import RLSearch

    search = RLSearch(mm, evaluator.accuracy, flash, ram, config, state_path, resume=resume,
                      reward_identity=getattr(evaluator, "fingerprint", None))
    result = search.run(progress=progress)
    extra = {"episodes_done": result.episodes, "interrupted": result.interrupted,
             "rl_config": config.to_dict(), "history": result.history,
             "reward_evaluations": len(search.cache)}
    if result.history and plot_path:
        plot_rl(result.history, [str(v) for v in mm.variables], flash, ram, plot_path, title,
                config.reward)
    return {"assignment": result.assignment, "policy": result.policy,
            "proxy_accuracy": result.accuracy, "seconds": result.seconds,
            "interrupted": result.interrupted, "extra": extra}


def main(argv):
    del argv
    _stop_on_signals()
    import tfq_tiny
    from tfq_tiny import BitPolicy
    from tfq_tiny.evaluate import accuracy
    from tfq_tiny.io import atomic_write
    from tfq_tiny.search import MemoryModel, memory
    from tfq_tiny.search.rl import RLConfig

    os.makedirs(FLAGS.output, exist_ok=True)
    setup = load_setup(FLAGS.model, FLAGS.data_dir, FLAGS.seed, FLAGS.calibration_samples,
                       FLAGS.proxy_samples, FLAGS.qat_samples if FLAGS.reward == "qat" else 0,
                       FLAGS.test_samples)
    model, dataset, calib = setup.model, setup.dataset, setup.calib
    x_test, y_test, qat_idx = setup.x_test, setup.y_test, setup.qat_idx
    n_cal, n_proxy = FLAGS.calibration_samples, FLAGS.proxy_samples

    mm = MemoryModel(model, keep_residual_8bit=FLAGS.keep_residual_8bit)
    w4a4 = BitPolicy.uniform(4, 4)
    flash_w4a4, ram_w4a4 = mm.memory(mm.assignment(w4a4))
    flash = int(FLAGS.flash_kb * 1024) if FLAGS.flash_kb else flash_w4a4
    ram = int(FLAGS.ram_kb * 1024) if FLAGS.ram_kb else ram_w4a4
    print(f"{FLAGS.model}: {len(mm.variables)} variables, budgets FLASH {flash:,} B / RAM "
          f"{ram:,} B (uniform W4A4: {flash_w4a4:,} / {ram_w4a4:,}); minimum reachable "
          f"{mm.minimum()}")
    evaluator = make_evaluator(setup, FLAGS.reward, FLAGS.seed, FLAGS.finetune_lr,
                               FLAGS.finetune_batch_size, FLAGS.finetune_dropout)
    plot_path = os.path.join(FLAGS.output, "search.png")
    if FLAGS.method == "fast":
        selector = make_selector(setup, FLAGS.select_with,
                                 lambda: (dataset.x_train, dataset.y_train),
                                 max(1, FLAGS.finetune_epochs), FLAGS.finetune_lr,
                                 FLAGS.finetune_batch_size, FLAGS.seed, FLAGS.finetune_dropout)
        found = run_fast(mm, evaluator, flash, ram, FLAGS.mode, FLAGS.progress, plot_path,
                         f"{FLAGS.model}: fast search (sensitivity + ILP), mode {FLAGS.mode}",
                         selector=selector)
        found["extra"]["selector"] = FLAGS.select_with
    else:
        config = RLConfig(episodes=FLAGS.episodes, mode=FLAGS.mode, seed=FLAGS.seed,
                          reward=FLAGS.reward,
                          warmup=FLAGS.warmup if FLAGS.warmup is not None
                          else max(1, FLAGS.episodes // 5))
        found = run_rl(mm, evaluator, flash, ram, config,
                       os.path.join(FLAGS.output, "state.pkl"), FLAGS.resume, FLAGS.progress,
                       plot_path, f"{FLAGS.model}: HAQ-for-MCU DDPG search, mode {FLAGS.mode}, "
                       f"seed {FLAGS.seed}")
        if found["interrupted"]:
            print(f"interrupted after {found['extra']['episodes_done']} episodes; resume with "
                  "--resume")
        if found["policy"] is None:
            return
    assignment, policy, proxy_acc = found["assignment"], found["policy"], found["proxy_accuracy"]
    seconds, extra = found["seconds"], found["extra"]

    with open(os.path.join(FLAGS.output, "policy.json"), "w") as f:
        f.write(policy.to_json(indent=1))
    m1, m2 = memory(model, policy)
    print(f"search {'stopped' if extra.get('interrupted') else 'done'} in {seconds:.0f}s: {policy} "
          f"M1 {m1:,} B M2 {m2:,} B, " + (f"judged ({SELECTORS[FLAGS.select_with]}) "
                                           if FLAGS.method == "fast" else "proxy accuracy ")
          + f"{proxy_acc:.2f}%")
    float_acc = accuracy(model, x_test, y_test)
    test_acc = accuracy(tfq_tiny.quantize_model(model, policy, calib, seed=FLAGS.seed),
                        x_test, y_test)
    uniform = uniform_candidates(mm, flash, ram, mm.choices)
    for row in uniform:
        if row["fits"] or row["policy"] == "W4A4":
            q = tfq_tiny.quantize_model(model, row["policy"].lower(), calib, seed=FLAGS.seed)
            row["test_accuracy"] = accuracy(q, x_test, y_test)
    fitting = [r for r in uniform if r["fits"]]
    best_uniform = max(fitting, key=lambda r: r["test_accuracy"]) if fitting else None
    w4a4_acc = next(r["test_accuracy"] for r in uniform if r["policy"] == "W4A4")
    print(f"test accuracy: float {float_acc:.2f}%, searched {test_acc:.2f}%, uniform W4A4 "
          f"{w4a4_acc:.2f}%" + (f", best fitting uniform {best_uniform['policy']} "
                                f"{best_uniform['test_accuracy']:.2f}%" if best_uniform else ""))
    if FLAGS.finetune_epochs > 0:
        extra["finetune"] = finetune_policy(
            model, policy, calib, (dataset.x_train, dataset.y_train), x_test, y_test, test_acc,
            FLAGS.finetune_epochs, FLAGS.finetune_lr, FLAGS.finetune_batch_size,
            os.path.join(FLAGS.output, "finetune"), FLAGS.progress, FLAGS.seed,
            (dataset.x_val, dataset.y_val) if FLAGS.finetune_restore_best else None,
            FLAGS.finetune_dropout)
    summary = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "model": FLAGS.model, "dataset": dataset.name, "method": FLAGS.method,
        "mode": FLAGS.mode, "seed": FLAGS.seed, "keep_residual_8bit": FLAGS.keep_residual_8bit,
        "reward": FLAGS.reward, "qat_samples": len(qat_idx) if FLAGS.reward == "qat" else 0,
        "calibration_samples": n_cal, "proxy_samples": n_proxy, "test_samples": len(x_test),
        "budgets": {"flash": flash, "ram": ram, "uniform_w4a4": [flash_w4a4, ram_w4a4]},
        "minimum_reachable": list(mm.minimum()),
        "policy": policy.get_config(),
        "bits": {str(v): int(assignment[v.key]) for v in mm.variables},
        "flash": m1, "ram": m2, "proxy_accuracy": proxy_acc,
        "test_accuracy": test_acc, "float_test_accuracy": float_acc,
        "uniform": uniform, "best_fitting_uniform": best_uniform,
        "search_seconds": seconds, "machine": _machine(), **extra}
    _write_json(summary, os.path.join(FLAGS.output, "summary.json"))
    atomic_write(os.path.join(FLAGS.output, "summary.md"), _markdown(summary))
    print(f"wrote {FLAGS.output}/policy.json, search.png, summary.json, summary.md")


if __name__ == "__main__":
    define_flags()
    from tfq_tiny import cli
    from tfq_tiny.models import MODELS

    cli.check_choices("model", MODELS)
    cli.run(main)
