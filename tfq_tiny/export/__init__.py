"""Packing, flatbuffer tools, the converter (``tfq_tiny.export.to_tflite``) and
``size_report`` (where a flatbuffer's bytes go)."""
from tfq_tiny.export.size import size_report

_CONVERTER_NAMES = ("to_tflite", "read_metadata", "quantize_input", "dequantize_output",
                    "layer_agreement", "policy_of", "strip_strings", "ExportError")


def __getattr__(name):
    # Lazy: the converter imports the runtime, which imports export.packing.
    if name in _CONVERTER_NAMES:
        from tfq_tiny.export import converter
        return getattr(converter, name)
    raise AttributeError(f"module 'tfq_tiny.export' has no attribute {name!r}")
