"""1-D CNN for human activity recognition on UCI-HAR windows (128 time steps x 9 channels).

Conv1D 64 -> Conv1D 64 -> MaxPool 2 -> Flatten -> FC 6, kernel size 3 with "valid" padding (the
common Keras HAR reference), BatchNorm + ReLU after each conv, dropout 0.5 before the classifier.
"""
from tfq_tiny._compat import keras

L = keras.layers


def _conv(x, filters, kernel_size, name):
    x = L.Conv1D(filters, kernel_size, padding="valid", kernel_initializer="he_normal", name=name)(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def build(input_shape=(128, 9), classes=6, filters=64, kernel_size=3, dropout=0.5, name="cnn1d"):
    """1-D CNN: 38,470 parameters with the defaults."""
    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv(inputs, filters, kernel_size, "conv1")
    x = _conv(x, filters, kernel_size, "conv2")
    x = L.MaxPooling1D(2, name="max_pool")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dropout(dropout, name="dropout")(x)
    outputs = L.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
