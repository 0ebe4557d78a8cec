"""Accuracy of float or quantized models on labelled arrays."""
import numpy as np


def accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy in percent of ``model`` (logits or probabilities) on ``(x, y)``."""
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(np.asarray(x[i:i + batch_size], np.float32), training=False)
        correct += int(np.sum(np.argmax(np.asarray(logits), -1) == np.asarray(y[i:i + batch_size])))
    return 100.0 * correct / max(len(x), 1)
