"""Accuracy of float or quantized models on labelled arrays.

A model's first output is read as class scores: several columns are logits or (after a
softmax) probabilities, one column is a binary classifier's score for class 1 (a logit, or a
probability after a sigmoid).
"""
import numpy as np


def outputs_probabilities(model):
    """True when ``model``'s first output comes from a softmax or sigmoid (float or quantized)."""
    from tfq_tiny.graph import Graph
    from tfq_tiny.quantization.configs import activation_name, fixed_grid_function, unwrap

    graph = Graph(model)
    layer = unwrap(graph[graph.output_names[0]].layer)
    return (fixed_grid_function(layer) in ("softmax", "sigmoid")
            or activation_name(layer) in ("softmax", "sigmoid"))


def class_probabilities(outputs, are_probabilities):
    """(batch, classes) probabilities of (batch, classes) outputs; one column p (binary) becomes
    (1 - p, p), after a sigmoid when it holds logits."""
    outputs = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    if outputs.shape[1] == 1:
        p = outputs if are_probabilities else 1.0 / (1.0 + np.exp(-outputs))
        return np.concatenate([1.0 - p, p], axis=1)
    if are_probabilities:
        return outputs
    e = np.exp(outputs - outputs.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy in percent of ``model`` on ``(x, y)``; a one-column (binary) output
    predicts class 1 above probability 0.5 (logit 0)."""
    are_probabilities = outputs_probabilities(model)
    correct = 0
    for i in range(0, len(x), batch_size):
        outputs = model(np.asarray(x[i:i + batch_size], np.float32), training=False)
        predicted = np.argmax(class_probabilities(outputs, are_probabilities), -1)
        correct += int(np.sum(predicted == np.asarray(y[i:i + batch_size]).reshape(-1)))
    return 100.0 * correct / max(len(x), 1)
