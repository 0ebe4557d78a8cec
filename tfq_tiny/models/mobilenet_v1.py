"""MobileNetV1 for visual wake words (default: width 0.25, 96x96x3, 2 classes; MLPerf Tiny VWW).

Conv 32a s2 -> 13 depthwise-separable blocks (DW 3x3-BN-ReLU -> PW 1x1-BN-ReLU) -> global average
pool -> FC. ``input_shape=(224, 224, 3), alpha=1.0, classes=1000`` gives the ImageNet-shape network
(the classifier is a Dense layer, not Keras Applications' 1x1 conv, and no dropout).
"""
from tfq_tiny._compat import keras
from tfq_tiny.models._layers import L, conv_bn_relu, dw_bn_relu

_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
"""(pointwise filters at width 1.0, depthwise stride) of the 13 blocks."""


def build(input_shape=(96, 96, 3), classes=2, alpha=0.25, name="mobilenet_v1"):
    """MobileNetV1: 221,794 parameters with the defaults (width 0.25, 96x96x3, 2 classes)."""
    inputs = keras.Input(shape=input_shape, name="input")
    x = conv_bn_relu(inputs, int(32 * alpha), 3, strides=2, name="conv1")
    for i, (filters, strides) in enumerate(_BLOCKS, start=1):
        x = dw_bn_relu(x, strides=strides, name=f"block{i}_dw")
        x = conv_bn_relu(x, int(filters * alpha), 1, name=f"block{i}_pw")
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = L.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
