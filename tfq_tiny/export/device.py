"""C++ sources that put an exported flatbuffer on a device: the model as a C array, and the
operator registrations and arena size it needs.

``write_device_sources(model_bytes, directory, name)`` writes

- ``<name>_model_data.h/.cc``: ``alignas(16) const unsigned char g_<name>_model_data[]`` and
  its length (what ``xxd -i`` gives, aligned as TFLM requires for in-place reads);
- ``<name>_ops.h``: ``k<Name>OpCount`` (the ``tflite::MicroMutableOpResolver<N>`` size),
  ``k<Name>ArenaHeadBytes`` (TFLM's planned activations + scratch, ``arena.plan_arena``) and
  ``Register<Name>Ops(resolver)``, which adds exactly the builtins and TFQ custom operators
  the model uses, each once.

The application adds TFLM's persistent "tail" (tensor, node and operator structs) to the
head for its arena; ``MicroInterpreter::arena_used_bytes()`` tells the total after
``AllocateTensors()``.
"""
import os
import re

from tfq_tiny.errors import TfqError
from tfq_tiny.export import flatbuffer
from tfq_tiny.export.arena import op_name, plan_arena
from tfq_tiny.io import atomic_write
from tfq_tiny.runtime import custom_ops

RESOLVER_METHODS = {
    "ADD": "AddAdd", "AVERAGE_POOL_2D": "AddAveragePool2D", "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize",
    "EXPAND_DIMS": "AddExpandDims", "FULLY_CONNECTED": "AddFullyConnected",
    "LEAKY_RELU": "AddLeakyRelu", "LOGISTIC": "AddLogistic", "MAX_POOL_2D": "AddMaxPool2D",
    "MEAN": "AddMean", "PAD": "AddPad",
    "QUANTIZE": "AddQuantize", "RESHAPE": "AddReshape", "SOFTMAX": "AddSoftmax",
    "SQUEEZE": "AddSqueeze", "TANH": "AddTanh",
}
"""Builtin operator -> its ``tflite::MicroMutableOpResolver`` method."""

_TFQ_CONSTANTS = {
    custom_ops.CONV_2D: "kConv2DName", custom_ops.DEPTHWISE_CONV_2D: "kDepthwiseConv2DName",
    custom_ops.FULLY_CONNECTED: "kFullyConnectedName", custom_ops.ADD: "kAddName",
    custom_ops.AVERAGE_POOL_2D: "kAveragePool2DName", custom_ops.MAX_POOL_2D: "kMaxPool2DName",
    custom_ops.LEAKY_RELU: "kLeakyReluName",
}
"""TFQ custom code -> its name constant in ``tflm_ext/tflm/tfq_ops.h``."""

def operators(model_bytes):
    """The distinct operators of ``model_bytes`` in first-use order: builtin names
    ('CONV_2D') and TFQ custom codes ('TFQ_CONV_2D')."""
    model = flatbuffer.read_model(model_bytes)
    seen = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            name = op_name(model, op)
            if name not in seen:
                seen.append(name)
    return seen


def _registration(name):
    if name in RESOLVER_METHODS:
        return f"resolver->{RESOLVER_METHODS[name]}()"
    if name in _TFQ_CONSTANTS:
        return f"resolver->AddCustom(tfq_tflm::{_TFQ_CONSTANTS[name]}, tfq_tflm::Register_{name}())"
    raise TfqError(f"operator {name} has no known TFLM registration; the device sources cover "
                   f"{sorted(RESOLVER_METHODS) + sorted(_TFQ_CONSTANTS)}.")


def c_identifier(name):
    """``name`` as a C identifier: letters, digits and underscores, not starting with a digit."""
    ident = re.sub(r"\W", "_", str(name))
    if not ident or ident[0].isdigit():
        ident = f"m_{ident}"
    return ident


def _camel(ident):
    return "".join(part[:1].upper() + part[1:] for part in ident.split("_") if part) or "Model"


def model_data_sources(model_bytes, name):
    """(header, source) text of ``g_<name>_model_data``, 16-byte aligned."""
    symbol = f"g_{c_identifier(name)}_model_data"
    guard = f"TFQ_{c_identifier(name).upper()}_MODEL_DATA_H_"
    header = (f"// {len(model_bytes)}-byte TFLM flatbuffer written by tfq_tiny.\n"
              f"#ifndef {guard}\n#define {guard}\n\n"
              f"extern const unsigned char {symbol}[];\nextern const unsigned int {symbol}_len;\n\n"
              f"#endif  // {guard}\n")
    rows = [", ".join(f"0x{b:02x}" for b in model_bytes[i:i + 12])
            for i in range(0, len(model_bytes), 12)]
    source = (f'#include "{c_identifier(name)}_model_data.h"\n\n'
              f"alignas(16) const unsigned char {symbol}[] = {{\n    "
              + ",\n    ".join(rows) + f"\n}};\nconst unsigned int {symbol}_len = {len(model_bytes)};\n")
    return header, source


def ops_header(model_bytes, name):
    """Text of ``<name>_ops.h``: operator count, arena head and the registration function."""
    ident = c_identifier(name)
    camel = _camel(ident)
    ops = operators(model_bytes)
    lines = [_registration(op) for op in ops]
    guard = f"TFQ_{ident.upper()}_OPS_H_"
    custom = any(op in _TFQ_CONSTANTS for op in ops)
    includes = '#include "tensorflow/lite/c/common.h"\n'
    if custom:
        includes += '#include "tfq_ops.h"  // tflm_ext/tflm: the TFQ custom operators\n'
    body = "".join(f"  if ((status = {line}) != kTfLiteOk) return status;\n" for line in lines)
    head = plan_arena(model_bytes)["head"]
    return (f"// Operators and arena of the '{name}' model, written by tfq_tiny.\n"
            f"//\n//   static tflite::MicroMutableOpResolver<k{camel}OpCount> resolver;\n"
            f"//   Register{camel}Ops(&resolver);\n//\n"
            f"// k{camel}ArenaHeadBytes is TFLM's planned non-persistent area (activations and\n"
            f"// scratch, as MicroAllocator plans it); add TFLM's persistent tail for the arena\n"
            f"// (MicroInterpreter::arena_used_bytes() after AllocateTensors() tells the total).\n"
            f"#ifndef {guard}\n#define {guard}\n\n#include <cstddef>\n\n{includes}\n"
            f"constexpr unsigned int k{camel}OpCount = {len(ops)};  // {', '.join(ops)}\n"
            f"constexpr size_t k{camel}ArenaHeadBytes = {head};\n\n"
            f"template <typename Resolver>\nTfLiteStatus Register{camel}Ops(Resolver* resolver) {{\n"
            f"  TfLiteStatus status = kTfLiteOk;\n{body}  return status;\n}}\n\n#endif  // {guard}\n")


def write_device_sources(model_bytes, directory, name="model"):
    """Write ``<name>_model_data.h/.cc`` and ``<name>_ops.h`` into ``directory`` (atomically);
    returns their paths."""
    ident = c_identifier(name)
    header, source = model_data_sources(model_bytes, name)
    files = {f"{ident}_model_data.h": header, f"{ident}_model_data.cc": source,
             f"{ident}_ops.h": ops_header(model_bytes, name)}
    paths = []
    for filename, text in files.items():
        path = os.path.join(directory, filename)
        atomic_write(path, text)
        paths.append(path)
    return paths


__all__ = ["RESOLVER_METHODS", "c_identifier", "model_data_sources", "operators", "ops_header",
           "write_device_sources"]
