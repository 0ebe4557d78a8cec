"""Step 2 of the pipeline: simulated (fake-quant) 2-8 bit quantization in the TFMOT idiom."""
from tfq_tiny.quantization.calibration import calibrate, quantizer_slots, snap_biases
from tfq_tiny.quantization.edges import EDGES, edge_tensors, with_edge_bits
from tfq_tiny.quantization.configs import OutputQuantizeConfig, WeightLayerQuantizeConfig
from tfq_tiny.quantization.grid import DEPLOYABLE_BITS, int_range
from tfq_tiny.quantization.policy import BitPolicy
from tfq_tiny.quantization.quantize import (build_quantized_model, load_model,
                                            quantize_annotate_layer, quantize_model,
                                            quantize_scope, save_model)
from tfq_tiny.quantization.quantizers import ActivationQuantizer, UniformQuantizer, WeightQuantizer

__all__ = [
    "ActivationQuantizer", "BitPolicy", "DEPLOYABLE_BITS", "OutputQuantizeConfig",
    "UniformQuantizer", "WeightLayerQuantizeConfig", "WeightQuantizer", "build_quantized_model",
    "calibrate", "int_range", "load_model", "save_model", "quantize_annotate_layer", "quantize_model", "quantize_scope",
    "quantizer_slots", "snap_biases", "EDGES", "edge_tensors", "with_edge_bits",
]
