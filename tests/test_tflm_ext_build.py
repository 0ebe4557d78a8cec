"""CI wiring of the standalone tflm_ext builds (issue 6, point 4).

- `make -C tflm_ext asan-test`: the core test driver under AddressSanitizer + UBSan
  (-fno-sanitize-recover=all, abort_on_error): it must pass with no sanitizer finding.
- `make -C tflm_ext asan-test-tiles`: the same driver with tiny patch chunks / output-channel
  tiles (-DTFQ_PATCH_CHUNK=3 -DTFQ_OC_TILE=2), so that the small random shapes also run the
  chunked accumulation and every packed head/tail alignment of tflm_ext/core/tfq_patch.h.
- `make -C tflm_ext cortex-m`: the core cross-compiled for Cortex-M4 and Cortex-M7. A missing
  arm-none-eabi toolchain is a failure (with the install command), not a skip: `.ci/run`
  installs it.
- `make -C tflm_ext options-check`: the TFLM glue's custom-options parser (tflm/tfq_options.h,
  flexbuffers only) under ASan + UBSan, checked against the shim's reader.

Builds go to tflm_ext/build (make's own up-to-date checks make re-runs cheap) with -j2. No
assertion here depends on time.
"""
import os
import re
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TFLM_EXT = os.path.join(REPO, "tflm_ext")
TIMEOUT_S = 1800  # a hang guard only; a cold ASan build takes about a minute on 2 busy cores

SANITIZER_REPORT = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: \w+Sanitizer")


def _make(*targets):
    result = subprocess.run(["make", "-C", TFLM_EXT, "-j2", *targets], capture_output=True,
                            text=True, timeout=TIMEOUT_S)
    return result, result.stdout + result.stderr


def _require(tool, package):
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} not found: the tflm_ext builds need it; install it with "
                    f"`apt-get install {package}` (Debian/Ubuntu)", pytrace=False)


@pytest.mark.parametrize("target", ["asan-test", "asan-test-tiles"])
def test_core_driver_under_asan_and_ubsan_is_clean(target):
    _require(os.environ.get("CXX", "g++"), "g++")
    result, output = _make(target)
    findings = SANITIZER_REPORT.findall(output)
    assert result.returncode == 0 and not findings, (
        f"make {target} failed (exit {result.returncode}, sanitizer findings: {findings}):\n"
        f"{output[-6000:]}")
    summary = re.search(r"(\d+) passed, (\d+) failed", result.stdout)
    assert summary, f"no test summary in the output of make {target}:\n{output[-3000:]}"
    passed, failed = int(summary.group(1)), int(summary.group(2))
    assert failed == 0 and passed > 1000, summary.group(0)


def test_cortex_m_cross_build():
    for tool in ("arm-none-eabi-g++", "arm-none-eabi-ar"):
        _require(tool, "gcc-arm-none-eabi")
    result, output = _make("cortex-m")
    assert result.returncode == 0, f"make cortex-m failed:\n{output[-6000:]}"
    for cpu in ("cortex-m4", "cortex-m7"):
        lib = os.path.join(TFLM_EXT, "build", cpu, "libtfq_core.a")
        assert os.path.isfile(lib), f"{lib} was not built"
        objects = [f for f in os.listdir(os.path.dirname(lib)) if f.endswith(".o")]
        assert objects, f"no objects next to {lib}"
        for obj in objects:
            with open(os.path.join(os.path.dirname(lib), obj), "rb") as f:
                header = f.read(20)
            # ELF, 32-bit, little endian, e_machine EM_ARM (40): really a Cortex-M object.
            assert header[:4] == b"\x7fELF" and header[4] == 1 and header[5] == 1, obj
            assert int.from_bytes(header[18:20], "little") == 40, f"{obj} is not an ARM object"


def _shim_fields(buffer):
    """The shim's reading of custom options in options_check's output format, or "bad"."""
    from tfq_tiny.errors import ModelFileError
    from tfq_tiny.runtime import custom_ops
    from tfq_tiny.runtime.interpreter import Node

    try:
        raw = custom_ops.read_options(Node(0, "CUSTOM 'TFQ_CONV_2D'", [], [], None, buffer))
    except ModelFileError as exc:
        return "bad", str(exc)

    def get(key):  # as the glue: an act bound not given reads 0 (and has_act_* 0)
        if key in raw or key in ("act_min", "act_max"):
            return raw.get(key, 0)
        return custom_ops.option_default(key, get)

    values = [custom_ops.PADDING_CODES.get(raw.get("padding"), 0) if key == "padding" else get(key) or 0
              for key in custom_ops.OPTION_FIELDS]
    values += [int("act_min" in raw), int("act_max" in raw)]
    for key in custom_ops.SHAPE_KEYS:
        if raw.get(key) == custom_ops.INNERMOST_BYTES:
            values += [custom_ops.INNERMOST_BYTES, 0, 0, 0, 0]
            continue
        dims = list(raw.get(key, ()))
        values += [len(dims)] + dims + [0] * (4 - len(dims))
    values += [get(key) for key in custom_ops.TRAILING_FIELDS]
    return "ok " + " ".join(str(v) for v in values), ""


def _random_options(rng):
    from tfq_tiny.runtime import custom_ops

    options = {"act_min": int(rng.integers(-9, 9)), "act_max": int(rng.integers(-9, 9))}
    for key in custom_ops.OPTION_FIELDS[5:]:
        if rng.random() < 0.7:
            options[key] = (str(rng.choice(list(custom_ops.PADDING_CODES))) if key == "padding" else
                            int(rng.choice([rng.integers(-9, 9), rng.integers(-2**40, 2**40)], p=[0.9, 0.1])))
    for key in custom_ops.OPTION_FIELDS[:3]:
        if rng.random() < 0.7:
            options[key] = int(rng.integers(-9, 9))
    for key in custom_ops.SHAPE_KEYS:
        if rng.random() < 0.15:
            options[key] = custom_ops.INNERMOST_BYTES
        elif rng.random() < 0.6:
            options[key] = [int(d) for d in rng.integers(1, 40, rng.integers(1, 5))]
    for key in custom_ops.TRAILING_FIELDS:
        if rng.random() < 0.3:
            options[key] = int(rng.integers(0, 9))
    return options


def test_glue_options_parser_agrees_with_the_shim():
    """The glue's ParseOptions (tflm/tfq_options.h), built under ASan + UBSan, on layout-3/4 int
    vectors and layout-2 maps of random options, on random short int vectors, and on byte-mutated
    and truncated copies: no
    sanitizer finding; on the written buffers it answers exactly as the shim's reader, and every
    mutated vector it accepts the shim reads the same way (the glue verifies the flexbuffer first,
    so it may reject a mutation the shim's reader tolerates)."""
    import numpy as np
    from flatbuffers import flexbuffers

    from tfq_tiny.runtime import custom_ops

    _require(os.environ.get("CXX", "g++"), "g++")
    header = os.path.join(os.environ.get("FLATBUFFERS_INC", "/usr/include"), "flatbuffers", "flexbuffers.h")
    if not os.path.exists(header):
        pytest.fail(f"{header} not found: install it with `apt-get install libflatbuffers-dev`", pytrace=False)
    result, output = _make("options-check")
    assert result.returncode == 0, f"make options-check failed:\n{output[-6000:]}"
    rng = np.random.default_rng(7)
    written = []
    for _ in range(500):
        options = _random_options(rng)
        written.append(custom_ops.encode_options(options))
        written.append(bytes(flexbuffers.Dumps(options)))
        builder = flexbuffers.Builder()  # any short vector: fields cut anywhere, odd ranks
        builder.TypedVectorFromElements([int(v) for v in rng.integers(-2, 9, rng.integers(1, 26))])
        written.append(bytes(builder.Finish()))
    mutated = []
    for _ in range(1500):
        source = int(rng.integers(len(written)))
        data = bytearray(written[source])
        if rng.random() < 0.3:
            data = data[:rng.integers(len(data))]
        else:
            for _ in range(rng.integers(1, 4)):
                data[rng.integers(len(data))] = int(rng.integers(256))
        mutated.append((bytes(data), source % 3 != 1))
    buffers = written + [data for data, _ in mutated]
    compared = [True] * len(written) + [from_vector for _, from_vector in mutated]
    run = subprocess.run([os.path.join(TFLM_EXT, "build", "options_check")], capture_output=True, text=True,
                         input="".join(b.hex() + "\n" for b in buffers), timeout=TIMEOUT_S)
    findings = SANITIZER_REPORT.findall(run.stderr)
    assert run.returncode == 0 and not findings, run.stderr[-6000:]
    glue = run.stdout.splitlines()
    assert len(glue) == len(buffers)
    accepted = 0
    for i, (buffer, answer) in enumerate(zip(buffers, glue)):
        shim, why = _shim_fields(buffer)
        if i < len(written):
            assert answer == shim, (buffer.hex(), answer, shim, why)
        elif answer != "bad" and compared[i]:  # a mutated map: the glue skips a key garbled to unknown
            accepted += 1
            assert answer == shim or "elements" in why, (buffer.hex(), answer, shim, why)
    assert sum(a != "bad" for a in glue[:len(written)]) > 200 and accepted > 100
