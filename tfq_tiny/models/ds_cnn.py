"""DS-CNN (small) for keyword spotting, the MLPerf Tiny KWS reference layout.

Conv 64 (10x4, stride 2) -> 4 x [DW 3x3-BN-ReLU -> PW 1x1 64-BN-ReLU] -> AvgPool -> FC 12, on a
49x10x1 MFCC input. Dropout 0.2 after the first conv and 0.4 before pooling, as the reference.
The average pool covers the whole 25x5 feature map; the MLPerf reference pools (24, 5) and so
drops the last frame row, which has no purpose we can see.
"""
from tfq_tiny._compat import keras
from tfq_tiny.models._layers import L, conv_bn_relu, dw_bn_relu


def build(input_shape=(49, 10, 1), classes=12, filters=64, blocks=4, name="ds_cnn"):
    """DS-CNN: 24,908 parameters with the defaults."""
    inputs = keras.Input(shape=input_shape, name="input")
    x = conv_bn_relu(inputs, filters, (10, 4), strides=2, name="conv1")
    x = L.Dropout(0.2, name="conv1_dropout")(x)
    for i in range(1, blocks + 1):
        x = dw_bn_relu(x, name=f"block{i}_dw")
        x = conv_bn_relu(x, filters, 1, name=f"block{i}_pw")
    x = L.Dropout(0.4, name="dropout")(x)
    x = L.AveragePooling2D(pool_size=tuple(x.shape[1:3]), name="avg_pool")(x)
    x = L.Flatten(name="flatten")(x)
    outputs = L.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
