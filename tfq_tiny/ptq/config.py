"""``PTQConfig``: every choice of a PTQ run, serialisable to JSON.

Defaults are the empirical study's best pipeline (CLE, MSE init for weights and
activations, layer-wise AdaRound, bias tuning) with the papers' iteration counts;
``PTQConfig.preset("fast")`` shrinks iterations for tests and quick looks.
"""
import dataclasses
import json
from dataclasses import dataclass

from tfq_tiny.quantization.range_init import ACTIVATION_INIT_METHODS, INIT_METHODS

OPTIMIZERS = ("none", "qparam", "weights", "bits", "round")
GRANULARITIES = ("layer", "block")
PREPROCESS = {"none": ("bn_fold",), "bn_fold": ("bn_fold",), "cle": ("bn_fold", "cle")}
# Fields whose default differs from what a config written before the field existed ran.
BEFORE_FIELD_EXISTED = {"bias_tuning_guard": False, "range_refinement_passes": 1}


@dataclass(frozen=True)
class PTQConfig:
    """One PTQ recipe (the four steps of the unified pipeline plus loop settings).

    ``activation_init="loss_aware"`` starts from the MSE ranges and, once reconstruction and
    bias tuning are done, rescales each activation range for the model output
    (``tfq_tiny.quantization.loss_aware``, after LAPQ). It runs last because the finished
    model is what the ranges must suit. On HAR's papers' W4A4 (AdaRound, bias tuning, 2000
    it/unit, seeds 0/1) MSE ranges gave 93.83/93.69 %, loss-aware ranges chosen before
    reconstruction 93.86/93.83 and chosen last 94.16/93.69 (float 93.96). The study's inits are
    ``minmax`` and ``mse``. ``range_refinement_passes`` bounds the refinement's sweeps over the
    ranges; it stops earlier once a sweep keeps every range (one sweep before this field existed).
    ``learn_activation_ranges`` adds the unit's activation scales and zero points (LSQ) to
    whatever the optimiser learns, as BRECQ and QDrop do for W4A4; ``drop_prob`` is QDrop's
    probability of feeding a unit the float value of an input element instead of the
    quantized one during reconstruction (0 = plain AdaRound/BRECQ inputs).
    ``bias_tuning_guard`` keeps the tuned biases only if the quantized model then agrees with the
    float model's top-1 decision on at least as many calibration samples as before: bias tuning
    minimises the output MSE, which can fall while decisions flip (HAR W4A4, 4096 calibration
    samples, seed 0: MSE down, agreement 98.8 -> 96.2 %, test accuracy 93.83 -> 92.22 %; W3A3,
    1024 samples, seed 0: agreement 96.3 -> 90.9 %, test 86.01 %; results/bias_tuning_guard). It
    is on by default: it only ever undoes a step that made the calibration decisions worse.
    ``examples/benchmark.py`` turns it off unless asked, so the Table 2 sweep runs the study's
    plain bias tuning.
    """

    preprocess: str = "cle"
    weight_init: str = "mse"
    activation_init: str = "mse"
    optimize: str = "round"
    granularity: str = "layer"
    bias_tuning: bool = True
    iterations: int = 10000
    batch_size: int = 32
    learning_rate: float | None = None
    bias_tuning_iterations: int = 2000
    bias_tuning_learning_rate: float = 1e-4
    bias_tuning_batch_size: int = 128
    bias_tuning_guard: bool = True
    adaround_reg_weight: float = 0.01
    adaround_beta: tuple = (20.0, 2.0)
    adaround_warmup: float = 0.2
    learn_activation_ranges: bool = False
    activation_learning_rate: float = 1e-3
    drop_prob: float = 0.0
    range_refinement_passes: int = 3
    early_stop_patience: int = 0
    revert_if_worse: bool = True
    seed: int = 0

    def __post_init__(self):
        checks = [("preprocess", self.preprocess, tuple(PREPROCESS)),
                  ("weight_init", self.weight_init, INIT_METHODS),
                  ("activation_init", self.activation_init, ACTIVATION_INIT_METHODS),
                  ("optimize", self.optimize, OPTIMIZERS),
                  ("granularity", self.granularity, GRANULARITIES)]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"PTQConfig.{name} must be one of {list(allowed)}, got {value!r}.")
        if self.optimize == "bits" and self.granularity == "block":
            raise ValueError("optimize='bits' (BitSplit) is layer-wise only; use granularity='layer'.")
        if not 0.0 <= self.drop_prob < 1.0:
            raise ValueError(f"PTQConfig.drop_prob must be in [0, 1), got {self.drop_prob!r}.")
        if self.range_refinement_passes < 1:
            raise ValueError("PTQConfig.range_refinement_passes must be >= 1, got "
                             f"{self.range_refinement_passes!r}.")
        if self.iterations < 0 or self.batch_size < 1:
            raise ValueError("iterations must be >= 0 and batch_size >= 1.")
        object.__setattr__(self, "adaround_beta", tuple(float(b) for b in self.adaround_beta))

    @property
    def preprocess_steps(self):
        return PREPROCESS[self.preprocess]

    @property
    def lr(self):
        """The optimiser's learning rate: explicit, else the per-optimiser default."""
        if self.learning_rate is not None:
            return self.learning_rate
        return {"none": 0.0, "qparam": 1e-3, "weights": 1e-3, "bits": 0.0, "round": 1e-3}[
            self.optimize]

    @classmethod
    def preset(cls, name, **overrides):
        """'paper' (the defaults) or 'fast' (few iterations: tests, quick looks)."""
        presets = {"paper": {}, "fast": {"iterations": 200, "bias_tuning_iterations": 100}}
        if name not in presets:
            raise ValueError(f"Unknown preset {name!r}; choose from {sorted(presets)}.")
        return cls(**{**presets[name], **overrides})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def get_config(self):
        config = dataclasses.asdict(self)
        config["adaround_beta"] = list(self.adaround_beta)
        return config

    @classmethod
    def from_config(cls, config):
        """Inverse of ``get_config``. A field missing from ``config`` takes its default, except
        fields added after configs were first written (``BEFORE_FIELD_EXISTED``), which take
        the behaviour an older config ran with, so a saved recipe reproduces what it ran."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"Unknown PTQConfig fields {sorted(unknown)}.")
        return cls(**{**BEFORE_FIELD_EXISTED, **config})

    def to_json(self, **kwargs):
        return json.dumps(self.get_config(), **kwargs)

    @classmethod
    def from_json(cls, text):
        return cls.from_config(json.loads(text))
