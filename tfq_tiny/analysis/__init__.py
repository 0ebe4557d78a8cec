"""Model statistics (MACs, parameters, BOPs, weight FLASH, peak activation RAM)."""
from tfq_tiny.analysis.ops import op_graph
from tfq_tiny.analysis.stats import ModelStatistics, OpStatistics, model_statistics

__all__ = ["ModelStatistics", "OpStatistics", "model_statistics", "op_graph"]
