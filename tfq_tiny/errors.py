"""Exceptions raised for bad user input: each message says what is wrong and what to do."""


class TfqError(ValueError):
    """Base class of every error tfq_tiny raises on purpose."""


class BitWidthError(TfqError):
    """A bit width outside the supported range."""


class UnsupportedLayerError(TfqError):
    """A layer type that has no QuantizeConfig."""


class CalibrationDataError(TfqError):
    """Calibration data that is empty or not finite."""


class ModelFormatError(TfqError):
    """A model that is not a tf_keras (Keras 2) functional/sequential model."""


class ModelFileError(TfqError):
    """A TFLite flatbuffer that is truncated, malformed or uses something we cannot run."""
