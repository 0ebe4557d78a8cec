"""Scores of a bit policy on a small proxy split, shared by the sensitivity and RL searches.

The float model is preprocessed (BN folding, CLE) once; every policy is then quantized with
``quantize_model`` (MSE range init, fixed calibration draw), so a score is a deterministic
function of the policy and can be cached exactly. ``ProxyEvaluator`` scores the quantized model
as it is (the PTQ reward); ``QATProxyEvaluator`` first fine-tunes it with one seeded epoch of
quantization-aware training (the paper's QAT reward), which is deterministic too.
"""
import hashlib

import numpy as np

from tfq_tiny.evaluate import class_probabilities, outputs_probabilities
from tfq_tiny.preprocess import preprocess as run_preprocess
from tfq_tiny.quantization.policy import BitPolicy


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
        self.float_model = run_preprocess(model, preprocess)
        self.calibration_data = calibration_data
        self.x = np.asarray(x, np.float32)
        self.y = None if y is None else np.asarray(y)
        self.init = init
        self.batch_size = batch_size
        self.seed = seed
        self._float_logits = None
        self.calls = 0

    def _identity_parts(self):
        return [self.init, self.seed]

    @property
    def fingerprint(self):
        """SHA-256 prefix of everything a score depends on besides the policy (float weights,
        calibration draw, proxy split, settings): a search may only reuse scores, or resume a
        state, made with the same fingerprint."""
        digest = hashlib.sha256()
        for array in (self.float_model.get_weights() +
                      [np.asarray(self.calibration_data), self.x] +
                      ([] if self.y is None else [self.y])):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(repr(self._identity_parts()).encode())
        return digest.hexdigest()[:16]

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
        """Mean KL(float || quantized class probabilities) over the proxy split."""
        are_probabilities = outputs_probabilities(self.float_model)
        p = class_probabilities(self.float_logits, are_probabilities)
        q = class_probabilities(self._logits(self.quantize(policy)), are_probabilities)
        return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), -1)))

    def accuracy(self, policy):
        """Top-1 accuracy in percent of the quantized model on the proxy split."""
        if self.y is None:
            raise ValueError("ProxyEvaluator.accuracy needs proxy labels y.")
        logits = self._logits(self.quantize(policy))
        predicted = np.argmax(class_probabilities(logits, outputs_probabilities(self.float_model)), -1)
        return 100.0 * float(np.mean(predicted == self.y.reshape(-1)))


class QATProxyEvaluator(ProxyEvaluator):
    """``ProxyEvaluator`` whose quantized models get ``epochs`` of QAT before being scored.

    The paper's reward: quantize with the policy, fine-tune one epoch (``tfq_tiny.qat``), then
    the proxy accuracy. ``train_data`` is the labelled fine-tuning set; it defaults to the proxy
    split itself, which makes the score optimistic (the same samples are fitted and scored);
    pass a disjoint slice of the training split to keep the two apart, as HAQ does.
    ``lr``/``batch_size``/``dropout`` as ``tfq_tiny.qat.finetune``; the data order and dropout
    masks are drawn from ``seed``.
    """

    def __init__(self, model, calibration_data, x, y, train_data=None, epochs=1, lr=1e-4,
                 finetune_batch_size=64, dropout=True, **kwargs):
        super().__init__(model, calibration_data, x, y, **kwargs)
        self.train_data = (self.x, self.y) if train_data is None else train_data
        self.epochs = epochs
        self.lr = lr
        self.finetune_batch_size = finetune_batch_size
        self.dropout = bool(dropout)

    def _identity_parts(self):
        x, y = self.train_data
        return super()._identity_parts() + [
            "qat", self.epochs, self.lr, self.finetune_batch_size, self.dropout,
            hashlib.sha256(np.ascontiguousarray(x).tobytes() +
                           np.ascontiguousarray(y).tobytes()).hexdigest()]

    def quantize(self, policy):
        from tfq_tiny.qat import finetune
        return finetune(super().quantize(policy), self.train_data, self.epochs, lr=self.lr,
                        batch_size=self.finetune_batch_size, progress=False, seed=self.seed,
                        dropout=self.dropout)
