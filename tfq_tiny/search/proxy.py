"""Scores of a bit policy on a small proxy split, shared by the sensitivity and RL searches.

The float model is preprocessed (BN folding, CLE) once; every policy is then quantized with
``quantize_model`` (MSE range init, fixed calibration draw), so a score is a deterministic
function of the policy and can be cached exactly.
"""
import numpy as np

from tfq_tiny.preprocess import preprocess as run_preprocess
from tfq_tiny.quantization.policy import BitPolicy


def _softmax(logits):
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


class ProxyEvaluator:
    """Quantizes ``model`` under a policy and scores it on ``(x, y)``.

    Args:
      model: the float tf_keras model.
      calibration_data: unlabeled samples for ``quantize_model``'s ranges.
      x, y: the proxy split (labels needed only for ``accuracy``).
      init, preprocess: as ``quantize_model``; preprocessing runs once here.
    """

    def __init__(self, model, calibration_data, x, y=None, init="mse",
                 preprocess=("bn_fold", "cle"), batch_size=256, seed=0):
        self.float_model = run_preprocess(model, tuple(preprocess or ()) or ("bn_fold",))
        self.calibration_data = calibration_data
        self.x = np.asarray(x, np.float32)
        self.y = None if y is None else np.asarray(y)
        self.init = init
        self.batch_size = batch_size
        self.seed = seed
        self._float_logits = None
        self.calls = 0

    def quantize(self, policy):
        from tfq_tiny.quantization.quantize import quantize_model
        self.calls += 1
        return quantize_model(self.float_model, BitPolicy.parse(policy), self.calibration_data,
                              init=self.init, preprocess=(), seed=self.seed)

    def _logits(self, model):
        out = [np.asarray(model(self.x[i:i + self.batch_size], training=False), np.float64)
               for i in range(0, len(self.x), self.batch_size)]
        return np.concatenate(out)

    @property
    def float_logits(self):
        if self._float_logits is None:
            self._float_logits = self._logits(self.float_model)
        return self._float_logits

    def kl(self, policy):
        """Mean KL(float softmax || quantized softmax) over the proxy split."""
        p = _softmax(self.float_logits)
        q = _softmax(self._logits(self.quantize(policy)))
        return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), -1)))

    def accuracy(self, policy):
        """Top-1 accuracy in percent of the quantized model on the proxy split."""
        if self.y is None:
            raise ValueError("ProxyEvaluator.accuracy needs proxy labels y.")
        logits = self._logits(self.quantize(policy))
        return 100.0 * float(np.mean(np.argmax(logits, -1) == self.y))
