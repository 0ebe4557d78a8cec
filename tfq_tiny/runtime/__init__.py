"""Integer runtime: NumPy kernels, the C++ kernels via ctypes, and the interpreter shim.

Importing the package registers tfq_tiny's TFQ_* custom operators with the interpreter.
"""
from tfq_tiny.runtime import custom_ops  # noqa: F401
