"""Step 3-4 of the pipeline: reconstruction-based PTQ and bias tuning (the unified pipeline)."""
from tfq_tiny.ptq.config import GRANULARITIES, OPTIMIZERS, PTQConfig
from tfq_tiny.ptq.pipeline import PTQPipeline
from tfq_tiny.ptq.units import find_units

__all__ = ["GRANULARITIES", "OPTIMIZERS", "PTQConfig", "PTQPipeline", "find_units"]
