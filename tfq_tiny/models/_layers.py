"""Small helpers shared by the builders: the conv -> BatchNorm -> ReLU unit, named consistently."""
from tfq_tiny._compat import keras

L = keras.layers


def conv_bn_relu(x, filters, kernel_size, strides=1, padding="same", name="conv", relu=True):
    """Conv2D + BatchNormalization (+ ReLU) with layers named ``<name>``, ``<name>_bn``, ``<name>_relu``."""
    x = L.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                 kernel_initializer="he_normal", name=name)(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    if relu:
        x = L.ReLU(name=f"{name}_relu")(x)
    return x


def dw_bn_relu(x, strides=1, name="dw"):
    """DepthwiseConv2D 3x3 (padding "same") + BatchNormalization + ReLU."""
    x = L.DepthwiseConv2D(3, strides=strides, padding="same",
                          depthwise_initializer="he_normal", name=name)(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)
