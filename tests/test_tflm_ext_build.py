"""CI wiring of the standalone tflm_ext builds (issue 6, point 4).

- `make -C tflm_ext asan-test`: the core test driver under AddressSanitizer + UBSan
  (-fno-sanitize-recover=all, abort_on_error): it must pass with no sanitizer finding.
- `make -C tflm_ext asan-test-tiles`: the same driver with tiny patch chunks / output-channel
  tiles (-DTFQ_PATCH_CHUNK=3 -DTFQ_OC_TILE=2), so that the small random shapes also run the
  chunked accumulation and every packed head/tail alignment of tflm_ext/core/tfq_patch.h.
- `make -C tflm_ext cortex-m`: the core cross-compiled for Cortex-M4 and Cortex-M7. A missing
  arm-none-eabi toolchain is a failure (with the install command), not a skip: `.ci/run`
  installs it.

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
