"""Instructions per MAC of the tflm_ext packed kernels vs TFLM's int8 reference kernels.

Counts executed instructions with `valgrind --tool=callgrind` (deterministic; no wall-clock time
anywhere) for CONV_2D and FULLY_CONNECTED on representative tinyML layer shapes:

- ours: `tflm_ext/bench/kernel_bench.cc` (built by `make -C tflm_ext bench` with setup.py's
  flags) on random packed data, callgrind collecting only inside `tfq::ConvPerChannel` /
  `tfq::FullyConnected` (argument validation included), at w8a8, w4a8, w4a4 and w2a2 (packed
  activations also on the output: a4 -> o4, a2 -> o2).
- TFLM: a single-layer int8 model per shape, converted with tf.lite.TFLiteConverter from a
  tf_keras Conv2D / Dense layer (full-integer, int8 in/out), invoked by the pip `tflite-micro`
  interpreter (`tflm_ext/bench/tflm_invoke.py`), callgrind collecting only inside the operator's
  Eval (`ConvEval` / `FullyConnectedEval`). "TFLM kernel" is Eval minus its direct calls that
  only fetch tensors/parameters, i.e. `reference_integer_ops::ConvPerChannel` (+ Eval's own few
  instructions) for CONV_2D; the pip build inlines the int8 FULLY_CONNECTED reference kernel into
  its Eval, which is why it is not taken by symbol.

Each count is (cost of 1 + K calls - cost of 1 call) / K, so one-time effects of the first call
(lazy symbol binding) drop out. MACs are nominal (padding positions included) and identical for
both sides, so ratios do not depend on that choice.

    python examples/bench_kernels.py                     # writes results/kernel_instructions.md
    python examples/bench_kernels.py --baseline=93b9695  # + before/after table vs that core/
    python examples/bench_kernels.py --shapes=fc_64_12 --configs=w8a8,w4a4 --output=/tmp/k.md

Needs valgrind, g++, make, git, readelf, TensorFlow + tf_keras (to build the int8 models) and the
pip `tflite-micro` package. A full run takes a few minutes (Python + TFLM under callgrind).
"""
import collections
import datetime
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TFLM_EXT = os.path.join(REPO, "tflm_ext")

FLAGS = flags.FLAGS
flags.DEFINE_string("output", os.path.join(REPO, "results", "kernel_instructions.md"),
                    "Markdown file to write (atomically).")
flags.DEFINE_list("shapes", None, "Subset of layer shapes to measure (default: all).")
flags.DEFINE_list("configs", ["w8a8", "w4a8", "w4a4", "w2a2"],
                  "Bit configurations of our kernels: w<weight bits>a<activation bits>.")
flags.DEFINE_integer("extra_calls", 2, "K: each count is (cost(1 + K calls) - cost(1 call)) / K.")
flags.DEFINE_string("work_dir", None, "Directory for models and callgrind files (default: temp).")
flags.DEFINE_float("bar", 1.5, "The issue's bar: packed int4 at most this x TFLM int8 instr/MAC.")
flags.DEFINE_string("baseline", None, "Optional git revision: also measure its tflm_ext/core "
                    "(same driver and flags) and add a before/after table.")

# dims: conv (H, W, C, O, KH, KW, stride, padding), batch 1; fc (K, O), batch 1.
Shape = collections.namedtuple("Shape", "name kind what dims")
SHAPES = [
    Shape("dscnn_pw_25x5x64_64", "conv", "DS-CNN pointwise 1x1, 25x5x64 -> 64",
          (25, 5, 64, 64, 1, 1, 1, "same")),
    Shape("res8_3x3_32x32x16_16", "conv", "Res8 3x3, 32x32x16 -> 16, SAME",
          (32, 32, 16, 16, 3, 3, 1, "same")),
    Shape("conv3x3_s2_16x16x32_32", "conv", "3x3 stride 2, 16x16x32 -> 8x8x32, SAME",
          (16, 16, 32, 32, 3, 3, 2, "same")),
    Shape("fc_64_12", "fc", "DS-CNN classifier FC 64 -> 12", (64, 12)),
    Shape("fc_640_128", "fc", "MLPerf-Tiny AD autoencoder FC 640 -> 128", (640, 128)),
]

OUR_SYMBOLS = {"conv": "tfq::ConvPerChannel(*", "fc": "tfq::FullyConnected(*"}
TFLM_EVAL = {"conv": "tflite::micro::(anonymous namespace)::ConvEval(*",
             "fc": "tflite::micro::(anonymous namespace)::FullyConnectedEval(*"}
BUILTIN = {"conv": 3, "fc": 9}  # BuiltinOperator CONV_2D, FULLY_CONNECTED


def run(cmd, **kwargs):
    """subprocess.run with output captured; raises with the output on failure."""
    kwargs.setdefault("text", True)
    result = subprocess.run(cmd, capture_output=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"command failed ({result.returncode}): {shlex.join(cmd)}\n"
                           f"{result.stdout[-3000:]!s}\n{result.stderr[-3000:]!s}")
    return result


# ---- callgrind output ------------------------------------------------------------------------

def parse_callgrind(path):
    """Returns (total Ir, {function: inclusive Ir}, {(caller, callee): inclusive Ir of the calls}).

    Reads a callgrind.out file: name compression ("(id) name" / "(id)"), relative positions,
    and "calls=" lines whose next cost line is the inclusive cost of those calls.
    """
    names = {}
    self_cost = collections.Counter()
    call_cost = collections.Counter()
    edges = collections.Counter()
    total = None
    fn = cfn = None
    after_calls = False

    def name_of(spec):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?$", spec.strip())
        if not m:
            return spec.strip()
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names[m.group(1)]

    with open(path) as f:
        for line in f:
            if line.startswith("fn="):
                fn = name_of(line[3:])
            elif line.startswith("cfn="):
                cfn = name_of(line[4:])
            elif line.startswith("calls="):
                after_calls = True
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
            elif line[:1].isdigit() or line[:1] in "+-*":
                fields = line.split()
                cost = int(fields[-1]) if len(fields) >= 2 else 0
                if after_calls:
                    if cfn != fn:  # a recursive call's cost is already in fn's own lines
                        call_cost[fn] += cost
                        edges[(fn, cfn)] += cost
                    after_calls = False
                else:
                    self_cost[fn] += cost
    inclusive = {name: self_cost[name] + call_cost[name]
                 for name in set(self_cost) | set(call_cost)}
    if total is None:
        total = sum(self_cost.values())
    return total, inclusive, dict(edges)


def tflm_kernel_cost(inclusive, edges, eval_prefix):
    """TFLM's arithmetic inside Eval: Eval's inclusive cost minus its direct calls that only
    fetch tensors or parameters (anything but reference_integer_ops::* and the requantization).

    This equals the reference kernel's inclusive cost plus Eval's own few instructions when the
    kernel is a separate function (CONV_2D in the pip build), and still works when the compiler
    inlined the kernel into Eval (FULLY_CONNECTED in the pip build).
    """
    evals = [name for name in inclusive if name.startswith(eval_prefix)]
    if len(evals) != 1:
        raise RuntimeError(f"expected one function named {eval_prefix}*, found {evals}")
    eval_name = evals[0]
    lookups = sum(cost for (caller, callee), cost in edges.items()
                  if caller == eval_name and "reference_integer_ops::" not in callee
                  and "MultiplyByQuantizedMultiplier" not in callee)
    return inclusive[eval_name], inclusive[eval_name] - lookups


def callgrind(cmd, toggle, out_file):
    """Runs cmd under callgrind collecting only inside `toggle`; returns (stdout, parsed)."""
    vg = ["valgrind", "--tool=callgrind", "--collect-atstart=no", f"--toggle-collect={toggle}",
          f"--callgrind-out-file={out_file}"]
    result = run(vg + cmd)
    return result.stdout, parse_callgrind(out_file)


def per_call(make_cmd, toggle, out_prefix, split=None):
    """(cost of 1 + K calls - cost of 1 call) / K, for the total collected and, if `split`
    (a function of the parsed output returning a number) is given, for that number too."""
    k = FLAGS.extra_calls
    counts = []
    stdout = None
    for n in (1, 1 + k):
        stdout, parsed = callgrind(make_cmd(n), toggle, f"{out_prefix}.{n}")
        counts.append((parsed[0], split(parsed) if split else 0))
    (t1, p1), (tn, pn) = counts
    if tn - t1 <= 0:
        raise RuntimeError(f"callgrind collected nothing for {toggle!r}: {out_prefix}")
    return stdout, (tn - t1) / k, (pn - p1) / k


# ---- TFLM side -------------------------------------------------------------------------------

def build_tflm_model(shape, path, seed=0):
    """A single CONV_2D / FULLY_CONNECTED int8 model (int8 in/out) for `shape`."""
    import numpy as np
    import tensorflow as tf

    from tfq_tiny._compat import keras

    keras.utils.set_random_seed(seed)
    if shape.kind == "conv":
        h, w, c, o, kh, kw, stride, padding = shape.dims
        inp = keras.Input((h, w, c), batch_size=1)
        out = keras.layers.Conv2D(o, (kh, kw), strides=stride, padding=padding)(inp)
    else:
        k, o = shape.dims
        inp = keras.Input((k,), batch_size=1)
        out = keras.layers.Dense(o)(inp)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    in_shape = (1,) + tuple(model.input_shape[1:])

    def representative():
        for _ in range(16):
            yield [rng.normal(size=in_shape).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with open(path, "wb") as f:
        f.write(converter.convert())


def measure_tflm(shape, work_dir):
    model_path = os.path.join(work_dir, f"{shape.name}.tflite")
    build_tflm_model(shape, model_path)
    # The real interpreter binary: a pyenv/venv shim would be traced instead of Python.
    python = os.path.realpath(sys.executable)
    script = os.path.join(TFLM_EXT, "bench", "tflm_invoke.py")
    eval_prefix = TFLM_EVAL[shape.kind].rstrip("(*")
    stdout, eval_ir, kernel_ir = per_call(
        lambda n: [python, script, model_path, str(n)], TFLM_EVAL[shape.kind],
        os.path.join(work_dir, f"cg.tflm.{shape.name}"),
        split=lambda parsed: tflm_kernel_cost(parsed[1], parsed[2], eval_prefix)[1])
    ops = re.search(r"ops=([\d,]*)", stdout).group(1)
    if ops != str(BUILTIN[shape.kind]):
        raise RuntimeError(f"{shape.name}: expected a single builtin {BUILTIN[shape.kind]}, "
                           f"the converter produced ops {ops}")
    o = shape.dims[3] if shape.kind == "conv" else shape.dims[1]
    scales = int(re.search(r"filter_scales=(\d+)", stdout).group(1))
    if scales != o:  # ours is measured with per-channel requantization too
        raise RuntimeError(f"{shape.name}: TFLM filter has {scales} scales, expected {o}")
    return eval_ir, kernel_ir


# ---- our side --------------------------------------------------------------------------------

def parse_config(config):
    m = re.fullmatch(r"w([248])a([248])", config)
    if not m:
        raise app.UsageError(f"bad config {config!r}: want w<2|4|8>a<2|4|8>")
    return int(m.group(1)), int(m.group(2))


def measure_ours(binary, shape, config, out_prefix):
    wbits, abits = parse_config(config)
    obits = abits  # packed activations stay packed on the output

    def cmd(n):
        return ([binary, shape.kind] + [str(d) for d in shape.dims]
                + [str(wbits), str(abits), str(obits), str(n)])

    stdout, ir, _ = per_call(cmd, OUR_SYMBOLS[shape.kind], out_prefix)
    macs = int(re.search(r"macs=(\d+)", stdout).group(1))
    return ir, macs


def build_driver(work_dir, baseline=None):
    """make -C tflm_ext bench; with `baseline` (a git revision), the same rule on that
    revision's tflm_ext/core, built under work_dir. Returns (binary, compile command)."""
    args = ["make", "-C", TFLM_EXT]
    binary = os.path.join(TFLM_EXT, "build", "kernel_bench")
    if baseline:
        root = os.path.join(work_dir, "baseline")
        os.makedirs(root, exist_ok=True)
        archive = run(["git", "-C", REPO, "archive", "--format=tar", baseline, "tflm_ext/core"],
                      text=False).stdout
        subprocess.run(["tar", "-x", "-C", root], input=archive, check=True)
        args += [f"BENCH_CORE={os.path.join(root, 'tflm_ext', 'core')}",
                 f"BUILD={os.path.join(root, 'build')}"]
        binary = os.path.join(root, "build", "kernel_bench")
    run(args + ["bench"])
    dry = run(args + ["-s", "-n", "-B", "bench"]).stdout.strip().splitlines()
    return binary, (dry[-1] if dry else "?")


def nominal_macs(shape):
    if shape.kind == "fc":
        k, o = shape.dims
        return k * o
    h, w, c, o, kh, kw, stride, padding = shape.dims
    if padding == "same":
        oh, ow = -(-h // stride), -(-w // stride)
    else:
        oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    return oh * ow * o * kh * kw * c


# ---- environment -----------------------------------------------------------------------------

def first_line(cmd):
    try:
        return run(cmd).stdout.strip().splitlines()[0]
    except (OSError, RuntimeError, IndexError):
        return "unavailable"


def environment():
    import importlib.metadata

    import tflite_micro
    from tflite_micro.python.tflite_micro import _runtime

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    tflm_comment = "unknown"
    try:
        found = re.findall(r"\]\s+(.*)", run(["readelf", "-p", ".comment", _runtime.__file__]).stdout)
        tflm_comment = "; ".join(found) or "unknown"
    except (OSError, RuntimeError):
        pass
    dirty = run(["git", "-C", REPO, "status", "--porcelain", "--", "tflm_ext/core",
                 "tflm_ext/bench", "examples/bench_kernels.py"]).stdout.strip()
    return {
        "uname_m": first_line(["uname", "-m"]),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "cxx": first_line([os.environ.get("CXX", "g++"), "--version"]),
        "valgrind": first_line(["valgrind", "--version"]),
        "tflite_micro": f"{importlib.metadata.version('tflite-micro')} "
                        f"(`tflite_micro.__version__` {getattr(tflite_micro, '__version__', '?')})",
        "tflm_compiler": tflm_comment,
        "python": platform.python_version(),
        "git": first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
               + (" with uncommitted changes to the measured code" if dirty else ""),
    }


# ---- report ----------------------------------------------------------------------------------

def cell(ir, macs, ref):
    return f"{ir / macs:.2f} ({ir / ref:.2f}x)"


def write_report(path, shapes, tflm, ours, baseline, env, command, compile_cmd):
    configs = list(FLAGS.configs)
    lines = [
        "# Instructions per MAC: tflm_ext packed kernels vs TFLM's int8 reference kernels",
        "",
        "Generated by `examples/bench_kernels.py` (do not edit by hand). Issue 6, point 6.",
        "",
        f"- Command (from the repository root): `{command}`",
        f"- Date (UTC): {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
        f"- Machine: `uname -m` {env['uname_m']}, CPU \"{env['cpu']}\" (/proc/cpuinfo), "
        f"{env['cores']} cores (shared with other jobs; irrelevant to instruction counts), "
        f"Linux {env['kernel']}",
        f"- Our kernels: {env['cxx']}; `{compile_cmd}` (the flags setup.py uses for "
        "`tfq_tiny/_tflm_ext*.so`)",
        f"- TFLM: pip `tflite-micro` {env['tflite_micro']}; its `_runtime.so` was built by "
        f"{env['tflm_compiler']} (flags unknown)",
        f"- {env['valgrind']}; Python {env['python']}; repository at {env['git']}",
        "",
        "## Method",
        "",
        "- Executed x86-64 instructions (callgrind `Ir`), collected only inside one function "
        "(`--collect-atstart=no --toggle-collect=<function>`). Each figure is (cost of "
        f"{1 + FLAGS.extra_calls} calls - cost of 1 call) / {FLAGS.extra_calls}, so first-call "
        "effects (lazy symbol binding) drop out. Instruction counts are exact and repeatable; "
        "nothing here is a time.",
        "- **Ours**: `tflm_ext/bench/kernel_bench.cc` calls `tfq::ConvPerChannel` / "
        "`tfq::FullyConnected` on random packed data (fixed seed, per-channel requantization, "
        "random input/output zero points, bias); the count covers the whole function, argument "
        "validation included. `wXaY` = X-bit weights and Y-bit activations; activations below 8 "
        "bits are packed on the input and the output.",
        "- **TFLM**: a single-layer model per shape (tf_keras `Conv2D` / `Dense`, "
        "`TFLiteConverter` full-integer int8 with int8 input/output, checked to hold exactly one "
        "CONV_2D / FULLY_CONNECTED), invoked by the pip interpreter "
        "(`tflm_ext/bench/tflm_invoke.py`). *TFLM eval* = `ConvEval` / `FullyConnectedEval` "
        "inclusive; *TFLM kernel* = that minus Eval's direct calls that only fetch tensors or "
        "parameters, i.e. `reference_integer_ops::ConvPerChannel` (+ a few instructions of Eval) "
        "for CONV_2D; for FULLY_CONNECTED the pip build inlines the int8 reference kernel into "
        "Eval (it calls only `MultiplyByQuantizedMultiplier` besides the look-ups). Both sides "
        "requantize per output channel (the converted filters are checked to carry one scale "
        "per channel).",
        "- MACs are nominal (OH*OW*O*KH*KW*C with padding positions included; K*O for FC) and "
        "the same for both sides. Ratios in parentheses are ours / *TFLM kernel* int8 on the "
        "same shape (the stricter denominator).",
        "- Caveat: x86-64 instruction counts are a proxy, not Cortex-M cycles: 64-bit registers "
        "and complex addressing modes, different compilers and flags on the two sides, and no "
        "memory-system effects. A Cortex-M cycle count needs a board or a cycle-accurate "
        "simulator, which this repository does not have.",
        "",
        "## Results (instructions per MAC)",
        "",
        "| layer | MACs | TFLM int8 eval | TFLM int8 kernel | "
        + " | ".join(f"ours {c}" for c in configs) + " |",
        "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in configs) + " |",
    ]
    verdicts = []
    for shape in shapes:
        eval_ir, kernel_ir, macs = tflm[shape.name]
        row = [shape.what, f"{macs:,}", f"{eval_ir / macs:.2f}", f"{kernel_ir / macs:.2f}"]
        for config in configs:
            ir = ours[shape.name][config]
            row.append(cell(ir, macs, kernel_ir))
            if config == "w4a4":
                verdicts.append((ir / kernel_ir, shape.what))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if verdicts:
        worst = max(verdicts)
        met = worst[0] <= FLAGS.bar
        lines.append(f"**Bar** (packed int4 at most {FLAGS.bar}x the instructions/MAC of TFLM's "
                     f"int8 reference): {'met' if met else 'NOT met'} for w4a4 on every shape "
                     f"measured (worst {worst[0]:.2f}x: {worst[1]}).")
        lines.append("")
    if baseline:
        rev, base = baseline
        lines += [
            f"## Before the packed inner-loop rewrite (tflm_ext/core at `{rev}`)",
            "",
            "Same driver, flags and method, built on that revision's `tflm_ext/core` "
            "(`--baseline`). Cells: before -> now, instructions/MAC.",
            "",
            "| layer | " + " | ".join(configs) + " |",
            "| --- | " + " | ".join("---:" for _ in configs) + " |",
        ]
        for shape in shapes:
            macs = tflm[shape.name][2]
            lines.append("| " + shape.what + " | " + " | ".join(
                f"{base[shape.name][c] / macs:.2f} -> {ours[shape.name][c] / macs:.2f}"
                for c in configs) + " |")
        lines.append("")
    text = "\n".join(lines)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return text


def main(argv):
    del argv
    names = [s.name for s in SHAPES]
    wanted = FLAGS.shapes or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise app.UsageError(f"unknown shapes {unknown}; known: {names}")
    for config in FLAGS.configs:
        parse_config(config)
    if FLAGS.extra_calls < 1:
        raise app.UsageError("--extra_calls must be >= 1")
    command = shlex.join(["python", os.path.relpath(os.path.abspath(sys.argv[0]), REPO)]
                         + sys.argv[1:])
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="bench_kernels_")
    os.makedirs(work_dir, exist_ok=True)

    print("building tflm_ext/build/kernel_bench ...", flush=True)
    binary, compile_cmd = build_driver(work_dir)
    base_binary = None
    if FLAGS.baseline:
        print(f"building the baseline driver on tflm_ext/core at {FLAGS.baseline} ...", flush=True)
        base_binary, _ = build_driver(work_dir, FLAGS.baseline)

    shapes = [s for s in SHAPES if s.name in wanted]
    tflm, ours, base = {}, {}, {}
    for shape in shapes:
        macs = nominal_macs(shape)
        eval_ir, kernel_ir = measure_tflm(shape, work_dir)
        tflm[shape.name] = (eval_ir, kernel_ir, macs)
        print(f"{shape.name}: TFLM int8 eval {eval_ir / macs:.2f}, kernel {kernel_ir / macs:.2f} "
              "instr/MAC", flush=True)
        ours[shape.name], base[shape.name] = {}, {}
        for config in FLAGS.configs:
            prefix = os.path.join(work_dir, f"cg.ours.{shape.name}.{config}")
            ir, driver_macs = measure_ours(binary, shape, config, prefix)
            if driver_macs != macs:
                raise RuntimeError(f"{shape.name}: driver MACs {driver_macs} != {macs}")
            ours[shape.name][config] = ir
            note = ""
            if base_binary:
                base[shape.name][config], _ = measure_ours(base_binary, shape, config,
                                                           prefix + ".baseline")
                note = f", baseline {base[shape.name][config] / macs:.2f}"
            print(f"  ours {config}: {ir / macs:.2f} instr/MAC ({ir / kernel_ir:.2f}x TFLM kernel)"
                  f"{note}", flush=True)
    baseline = (FLAGS.baseline, base) if FLAGS.baseline else None
    text = write_report(FLAGS.output, shapes, tflm, ours, baseline, environment(), command,
                        compile_cmd)
    print(text)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    from tfq_tiny import cli

    cli.run(main)
