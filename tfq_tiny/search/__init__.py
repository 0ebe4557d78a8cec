"""Mixed-precision search under FLASH/RAM budgets (HAQ-for-MCU RL search and a fast
sensitivity + integer-linear-program search), built on the analysis memory model."""
from tfq_tiny.search.memory import (ACTIVATION, BIT_CHOICES, WEIGHT, InfeasibleBudgetError,
                                    MemoryModel, Variable, check_feasible, memory,
                                    uniform_budget)

__all__ = ["ACTIVATION", "BIT_CHOICES", "WEIGHT", "InfeasibleBudgetError", "MemoryModel",
           "Variable", "check_feasible", "memory", "uniform_budget"]
