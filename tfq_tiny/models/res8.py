"""ResNet-8 for CIFAR-10, the MLPerf Tiny image-classification reference layout.

Conv 16 -> ResBlock 16 s1 -> ResBlock 32 s2 -> ResBlock 64 s2 -> AvgPool -> FC. A ResBlock is
conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (identity, or 1x1 conv + BN when the stride or width
changes), then Add and ReLU. Unlike the MLPerf reference, the projection shortcut has a BatchNorm
too, so every conv in the model is followed by BN (BN folding then treats all convs alike).
"""
from tfq_tiny._compat import keras
from tfq_tiny.models._layers import L, conv_bn_relu


def _res_block(x, filters, strides, name):
    y = conv_bn_relu(x, filters, 3, strides=strides, name=f"{name}_conv1")
    y = conv_bn_relu(y, filters, 3, name=f"{name}_conv2", relu=False)
    if strides != 1 or x.shape[-1] != filters:
        x = conv_bn_relu(x, filters, 1, strides=strides, name=f"{name}_shortcut", relu=False)
    x = L.Add(name=f"{name}_add")([x, y])
    return L.ReLU(name=f"{name}_relu")(x)


def build(input_shape=(32, 32, 3), classes=10, name="res8"):
    """ResNet-8: 79,050 parameters for the default 32x32x3 input and 10 classes."""
    inputs = keras.Input(shape=input_shape, name="input")
    x = conv_bn_relu(inputs, 16, 3, name="conv1")
    x = _res_block(x, 16, 1, "block1")
    x = _res_block(x, 32, 2, "block2")
    x = _res_block(x, 64, 2, "block3")
    x = L.AveragePooling2D(pool_size=tuple(x.shape[1:3]), name="avg_pool")(x)
    x = L.Flatten(name="flatten")(x)
    outputs = L.Dense(classes, kernel_initializer="he_normal", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
