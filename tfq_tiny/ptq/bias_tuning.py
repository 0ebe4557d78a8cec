"""Step 4: bias tuning — only the biases, end to end, towards the float model's outputs."""
from tfq_tiny.ptq.reconstruction import ReconstructionModel
from tfq_tiny.quantization.calibration import QuantizeWrapper


def model_biases(qmodel):
    """The float bias variables of every quantized weight layer."""
    return [layer.layer.bias for layer in qmodel.layers
            if isinstance(layer, QuantizeWrapper) and getattr(layer.layer, "bias", None) is not None]


def bias_tuning_model(qmodel, learning_rate):
    return ReconstructionModel(lambda x, training: qmodel(x, training=training),
                               [(model_biases(qmodel), learning_rate)])
