"""Install tfq_tiny: `pip install -e .` (add `[dev]` for the test tools)."""
from setuptools import find_packages, setup

setup(
    name="tfq_tiny",
    version="0.1.0",
    description="Post-training 2-8 bit quantization of tinyML Keras models, exported to TFLite Micro.",
    packages=find_packages(include=["tfq_tiny", "tfq_tiny.*"]),
    package_data={"tfq_tiny": ["models/checkpoints/*.h5", "models/checkpoints/*.json"]},
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
    ],
    extras_require={"dev": ["pytest", "hypothesis"]},
)
