"""The device sources (C array + resolver registration + arena head) compile and say the truth.

Each export's sources are compiled with g++ against the TFLM API stand-ins of
tflm_ext/tflm/api_stubs and run with a resolver that records every call: the registered
operators are exactly the model's, once each, in ``k<Name>OpCount``; the array holds the
flatbuffer byte for byte; the arena head is TFLM's own (pip interpreter) for an int8 model.
"""
import os
import shutil
import subprocess

import numpy as np
import pytest

import tfq_tiny
from tfq_tiny._compat import keras
from tfq_tiny.export import device
from tfq_tiny.export.arena import plan_arena
from tfq_tiny.export.converter import to_tflite
from tfq_tiny.search.memory import tflm_arena_usage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
L = keras.layers

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


def _model():
    keras.utils.set_random_seed(7)
    i = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, activation="relu", name="c1")(i)
    x = L.Add(name="add")([x, L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, L.Dense(1, activation="sigmoid", name="wake")(x))


def _run(tmp_path, model_bytes, name):
    paths = device.write_device_sources(model_bytes, str(tmp_path), name)
    ident = device.c_identifier(name)
    camel = "".join(p[:1].upper() + p[1:] for p in ident.split("_") if p)
    methods = "".join(f'  TfLiteStatus {m}() {{ std::printf("{b}\\n"); return kTfLiteOk; }}\n'
                      for b, m in device.RESOLVER_METHODS.items())
    registers = "".join(f"const TFLMRegistration* Register_{c}() {{ static TFLMRegistration r{{}}; "
                        f'r.custom_name = "{c}"; return &r; }}\n' for c in device._TFQ_CONSTANTS)
    main = f"""#include <cstdio>
#include <string_view>
#include "tensorflow/lite/micro/micro_common.h"
#include "{ident}_model_data.h"
#include "{ident}_ops.h"
namespace tfq_tflm {{
{registers}}}
struct Recorder {{
{methods}  TfLiteStatus AddCustom(const char* name, const TFLMRegistration* r) {{
    std::printf("%s\\n", name);
    return r != nullptr && std::string_view(name) == r->custom_name ? kTfLiteOk : kTfLiteError;
  }}
}};
int main() {{
  Recorder recorder;
  if (Register{camel}Ops(&recorder) != kTfLiteOk) return 2;
  std::printf("count %u head %zu len %u\\n", k{camel}OpCount, k{camel}ArenaHeadBytes,
              g_{ident}_model_data_len);
  std::FILE* f = std::fopen("{tmp_path}/bytes.bin", "wb");
  std::fwrite(g_{ident}_model_data, 1, g_{ident}_model_data_len, f);
  std::fclose(f);
  return reinterpret_cast<unsigned long>(g_{ident}_model_data) % 16 == 0 ? 0 : 3;
}}
"""
    (tmp_path / "main.cc").write_text(main)
    binary = tmp_path / "check"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-I", str(tmp_path),
                    "-I", os.path.join(ROOT, "tflm_ext", "tflm"),
                    "-I", os.path.join(ROOT, "tflm_ext", "tflm", "api_stubs"),
                    str(tmp_path / "main.cc"), paths[1], "-o", str(binary)],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout.split("\n")
    registered = [line for line in out if line and not line.startswith("count")]
    summary = next(line for line in out if line.startswith("count")).split()
    assert (tmp_path / "bytes.bin").read_bytes() == model_bytes
    return registered, int(summary[1]), int(summary[3])


def test_int8_export_registers_its_builtins_and_tflms_arena_head(tmp_path):
    model = _model()
    x = np.random.default_rng(0).normal(size=(32, 12, 12, 3)).astype(np.float32)
    model_bytes = to_tflite(tfq_tiny.quantize_model(model, "w8a8", calibration_data=x))
    registered, count, head = _run(tmp_path, model_bytes, "wake word")
    assert registered == device.operators(model_bytes) and len(set(registered)) == count
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "LOGISTIC"} <= set(registered)
    assert head == plan_arena(model_bytes)["head"] == tflm_arena_usage(model_bytes)["head"]


def test_packed_export_registers_the_tfq_custom_operators_it_uses(tmp_path):
    model = _model()
    x = np.random.default_rng(0).normal(size=(32, 12, 12, 3)).astype(np.float32)
    model_bytes = to_tflite(tfq_tiny.quantize_model(model, "w4a4", calibration_data=x))
    registered, count, _ = _run(tmp_path, model_bytes, "wake4")
    assert registered == device.operators(model_bytes) and len(registered) == count
    assert {"TFQ_CONV_2D", "TFQ_DEPTHWISE_CONV_2D", "TFQ_ADD", "LOGISTIC"} <= set(registered)
    assert "TFQ_MAX_POOL_2D" not in registered


def test_an_operator_without_a_registration_is_refused():
    with pytest.raises(tfq_tiny.errors.TfqError, match="HARD_SWISH has no known TFLM registration"):
        device._registration("HARD_SWISH")
