"""Install tfq_tiny: `pip install -e .` (add `[dev]` for the test tools)."""
from glob import glob

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

# tflm_ext: the C++17 packed 2/4/8-bit kernels (tflm_ext/core) and their C ABI
# (tflm_ext/capi), built into tfq_tiny/_tflm_ext*.so. It is a plain shared
# library loaded with ctypes by tfq_tiny/runtime/native.py (no Python C API,
# no pybind11), so any C++17 compiler is the only build requirement.
_TFLM_EXT = Extension(
    "tfq_tiny._tflm_ext",
    sources=sorted(glob("tflm_ext/core/*.cc")) + ["tflm_ext/capi/tfq_capi.cc"],
    depends=sorted(glob("tflm_ext/core/*.h")) + ["tflm_ext/capi/tfq_capi.h"],
    include_dirs=["tflm_ext/core", "tflm_ext/capi"],
    language="c++",
    extra_compile_args=["-std=c++17", "-O2", "-fvisibility=hidden"],
)


class _BuildCtypesLibrary(build_ext):
    """build_ext for a ctypes library: it exports the C ABI, not a PyInit_ function."""

    def get_export_symbols(self, ext):
        return ext.export_symbols

setup(
    name="tfq_tiny",
    version="0.1.0",
    description="Post-training 2-8 bit quantization of tinyML Keras models, exported to TFLite Micro.",
    packages=find_packages(include=["tfq_tiny", "tfq_tiny.*"]),
    package_data={"tfq_tiny": ["models/checkpoints/*.h5", "models/checkpoints/*.json"]},
    ext_modules=[_TFLM_EXT],
    cmdclass={"build_ext": _BuildCtypesLibrary},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow==2.21.*",
        "tf_keras==2.21.*",
        "tensorflow-model-optimization==0.8.*",
        "numpy",
        "absl-py",
        "tensorflow-datasets",
        "tflite-micro",
        "matplotlib",
        "tqdm",
        "tensorboard",
    ],
    extras_require={"dev": ["pytest", "hypothesis"]},
)
