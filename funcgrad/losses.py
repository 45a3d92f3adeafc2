"""Losses and classification metrics, written with the public API (they work under grad, jit
and vmap).

Losses take (predictions, targets) and a `reduction`: "mean" (default), "sum" or "none"
(per-example values, as Optax returns). They are computed from logits with the stable forms
(log_softmax, softplus), so values and gradients stay finite for extreme logits.
Metrics take (predictions, labels); predictions are either integer classes or scores/logits
(then their argmax over the last axis is the predicted class).
"""

from __future__ import annotations

import numpy as np

from . import nn
from . import numpy as fnp
from .core import to_host
from .devices import inputs_on_default_backend

__all__ = [
    "softmax_cross_entropy", "sigmoid_binary_cross_entropy", "mse", "huber", "accuracy",
    "confusion_matrix", "precision_recall_f1",
]


def _reduce(values, reduction):
    if reduction == "mean":
        return fnp.mean(values)
    if reduction == "sum":
        return fnp.sum(values)
    if reduction in ("none", None):
        return values
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _float(x):
    x = fnp.asarray(x)
    return x if fnp.issubdtype(x.dtype, fnp.floating) else x.astype(np.float32)


@inputs_on_default_backend
def softmax_cross_entropy(logits, labels, label_smoothing=0.0, reduction="mean"):
    """Cross-entropy of softmax(logits) (..., K) against integer `labels` (...), or against
    probability vectors when `labels` has logits' shape and a float dtype.

    With label smoothing e the target is (1 - e) one_hot(label) + e / K (as Optax/PyTorch)."""
    logits = _float(logits)
    labels = fnp.asarray(labels)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    logp = nn.log_softmax(logits, axis=-1)
    k = logits.shape[-1]
    if fnp.issubdtype(labels.dtype, fnp.floating):
        if labels.shape != logits.shape:
            raise ValueError(f"softmax_cross_entropy: float labels must have the logits' shape "
                             f"{logits.shape}, got {labels.shape}")
        target = labels * (1 - label_smoothing) + label_smoothing / k
        return _reduce(-fnp.sum(target * logp, axis=-1), reduction)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"softmax_cross_entropy: labels must be integers, got {labels.dtype}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"softmax_cross_entropy: labels shape {labels.shape} must be the "
                         f"logits' shape without the class axis, {logits.shape[:-1]}")
    picked = fnp.squeeze(fnp.take_along_axis(logp, labels[..., None], axis=-1), axis=-1)
    loss = -picked
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing / k * fnp.sum(logp, axis=-1)
    return _reduce(loss, reduction)


@inputs_on_default_backend
def sigmoid_binary_cross_entropy(logits, labels, reduction="mean"):
    """-z log sigmoid(x) - (1 - z) log(1 - sigmoid(x)) = softplus(x) - x z, for logits x and
    targets z in [0, 1] of the same shape; the gradient is sigmoid(x) - z."""
    logits = _float(logits)
    labels = fnp.asarray(labels).astype(logits.dtype)
    return _reduce(nn.softplus(logits) - logits * labels, reduction)


@inputs_on_default_backend
def mse(predictions, targets, reduction="mean"):
    """(predictions - targets)**2, elementwise before the reduction."""
    return _reduce(fnp.square(_float(predictions) - fnp.asarray(targets)), reduction)


@inputs_on_default_backend
def huber(predictions, targets, delta=1.0, reduction="mean"):
    """0.5 r**2 for |r| <= delta, else delta (|r| - 0.5 delta), r = predictions - targets
    (Optax's huber_loss): quadratic near 0, linear (robust to outliers) beyond delta."""
    r = _float(predictions) - targets
    a = fnp.abs(r)
    quad = fnp.minimum(a, delta)
    return _reduce(0.5 * fnp.square(quad) + delta * (a - quad), reduction)


# ---------------------------------------------------------------------------------------------
# Metrics

def _classes(predictions, labels):
    predictions, labels = fnp.asarray(predictions), fnp.asarray(labels)
    if predictions.ndim == labels.ndim + 1:
        predictions = fnp.argmax(predictions, axis=-1)
    elif predictions.shape != labels.shape:
        raise ValueError(f"metrics: predictions {predictions.shape} must be class indices "
                         f"shaped like labels {labels.shape}, or scores with one more axis")
    elif predictions.dtype.kind not in "iub":
        raise TypeError(f"metrics: predictions shaped like the labels must be integer classes, "
                        f"got {predictions.dtype}")
    return predictions, labels


@inputs_on_default_backend
def accuracy(predictions, labels):
    """The fraction of correct predictions (float32)."""
    pred, labels = _classes(predictions, labels)
    return fnp.mean((pred == labels).astype(np.float32))


@inputs_on_default_backend
def confusion_matrix(predictions, labels, num_classes=None):
    """counts[i, j] = number of examples of true class i predicted as j (int64, as
    scikit-learn). `num_classes` is needed under jit (without it: the scores' last axis, or the
    largest class seen + 1)."""
    scores = fnp.asarray(predictions)
    pred, labels = _classes(predictions, labels)
    if num_classes is None:
        if scores.ndim == fnp.asarray(labels).ndim + 1:
            num_classes = scores.shape[-1]
        else:
            num_classes = int(max(np.max(to_host(pred), initial=-1),
                                  np.max(to_host(labels), initial=-1))) + 1
    t = nn.one_hot(fnp.ravel(labels), num_classes, dtype=np.int64)
    p = nn.one_hot(fnp.ravel(pred), num_classes, dtype=np.int64)
    return fnp.matmul(fnp.swapaxes(t, 0, 1), p)


@inputs_on_default_backend
def precision_recall_f1(predictions, labels, num_classes=None):
    """Macro-averaged (precision, recall, f1): per-class values averaged with equal weight over
    the classes that occur in labels or predictions (F1 per class, then averaged, as
    scikit-learn's average="macro"); a class never predicted has precision 0 (and one with no
    examples recall 0), as scikit-learn's zero_division=0."""
    cm = confusion_matrix(predictions, labels, num_classes).astype(np.float64)
    tp = fnp.diagonal(cm)
    predicted, actual = fnp.sum(cm, axis=0), fnp.sum(cm, axis=1)

    def ratio(a, b):
        return fnp.where(b > 0, a / fnp.maximum(b, 1.0), 0.0)

    precision, recall = ratio(tp, predicted), ratio(tp, actual)
    f1 = ratio(2 * tp, predicted + actual)
    present = (predicted + actual > 0).astype(np.float64)
    n = fnp.maximum(fnp.sum(present), 1.0)
    return tuple(fnp.sum(v * present) / n for v in (precision, recall, f1))
