"""Losses (Optax's names, signatures and reductions) and classification metrics, written with
the public API (they work under grad, jit and vmap).

As in `optax.losses`, a loss returns one value per example (or per element), never a mean:
reduce it yourself (`fnp.mean(softmax_cross_entropy_with_integer_labels(logits, y))`), so that
per-example losses (for `vmap(grad)`, weighting, masking) need no option. The names mean what
they mean in Optax:

  softmax_cross_entropy(logits, labels)                      one-hot or soft `labels` (..., K)
  softmax_cross_entropy_with_integer_labels(logits, labels)  integer `labels` (...)
  sigmoid_binary_cross_entropy(logits, labels)               elementwise
  squared_error / l2_loss / huber_loss / log_cosh            elementwise, targets optional
  cosine_similarity / cosine_distance                        along `axis`
  smooth_labels(labels, alpha)                               (1 - alpha) labels + alpha / K

They are computed from logits with the stable forms (logsumexp, log_sigmoid), so values and
gradients stay finite for extreme logits. `mse` (the mean of squared_error) is funcgrad's own
shorthand. Metrics take (predictions, labels); predictions are either integer classes or
scores/logits (then their argmax over the last axis is the predicted class).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from . import lax, nn
from . import numpy as fnp
from .core import to_host
from .lax.custom_derivatives import custom_jvp

__all__ = [
    "softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels",
    "sigmoid_binary_cross_entropy", "squared_error", "l2_loss", "huber_loss", "log_cosh",
    "cosine_similarity", "cosine_distance", "smooth_labels", "mse", "accuracy",
    "confusion_matrix", "precision_recall_f1",
]


def _floating(x, fn, what="logits"):
    x = fnp.asarray(x)
    if not fnp.issubdtype(x.dtype, fnp.floating):  # (bfloat16 included)
        raise TypeError(f"losses.{fn}: {what} must be floating point, got {x.dtype} (cast with "
                        f".astype(np.float32))")
    return x


def _expand_where(where, logits, axis):
    """`where` given per example (logits' shape without `axis`) gets its class axis back."""
    if where is None:
        return None
    where = fnp.asarray(where)
    if where.ndim != logits.ndim:
        where = fnp.expand_dims(where, axis)
    return where


def softmax_cross_entropy(logits, labels, axis=-1, where=None):
    """-sum(labels * log_softmax(logits)) along `axis`: the cross-entropy against one-hot or soft
    (probability) `labels` shaped like `logits`, one value per example (Optax's).

    For integer class labels use `softmax_cross_entropy_with_integer_labels`. `where` masks
    classes (logits' shape) or examples (logits' shape without `axis`) out of the sum."""
    logits = _floating(logits, "softmax_cross_entropy")
    labels = fnp.asarray(labels)
    if labels.dtype.kind in "iub":
        raise TypeError(
            f"losses.softmax_cross_entropy takes one-hot or soft labels shaped like the logits "
            f"{tuple(logits.shape)} (as Optax's), got {labels.dtype} labels of shape "
            f"{tuple(labels.shape)}; for integer class labels use "
            "softmax_cross_entropy_with_integer_labels(logits, labels)")
    if labels.shape != logits.shape:
        raise ValueError(f"losses.softmax_cross_entropy: labels of shape {tuple(labels.shape)} "
                         f"must have the logits' shape {tuple(logits.shape)} (one-hot or soft "
                         "labels; for integer labels use "
                         "softmax_cross_entropy_with_integer_labels)")
    where = _expand_where(where, logits, axis)
    log_probs = nn.log_softmax(logits, axis=axis, where=where)
    terms = labels * log_probs
    if where is not None:
        terms = fnp.where(where, terms, 0)
    return -fnp.sum(terms, axis=axis)


def softmax_cross_entropy_with_integer_labels(logits, labels, axis=-1, where=None):
    """logsumexp(logits) - logits[label] along `axis`: the cross-entropy against integer class
    `labels` (logits' shape without `axis`), one value per example (Optax's). The gradient with
    respect to the logits is softmax(logits) - one_hot(label). A tuple `axis` flattens those
    axes into one class axis (a label is then a flat index). `where` masks classes or examples
    (a fully masked example gives 0)."""
    logits = _floating(logits, "softmax_cross_entropy_with_integer_labels")
    labels = fnp.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"losses.softmax_cross_entropy_with_integer_labels: labels must be "
                        f"integer classes, got {labels.dtype}; for one-hot or soft labels use "
                        "softmax_cross_entropy(logits, labels)")
    where = _expand_where(where, logits, axis if isinstance(axis, int) else axis[0])
    if isinstance(axis, tuple):  # move the class axes last and flatten them into one
        class_axes = tuple(a % logits.ndim for a in axis)
        batch_axes = tuple(a for a in range(logits.ndim) if a not in class_axes)
        perm = batch_axes + class_axes
        logits = fnp.transpose(logits, perm)
        logits = fnp.reshape(logits, logits.shape[:len(batch_axes)] + (-1,))
        if where is not None:
            where = fnp.broadcast_to(where, tuple(fnp.asarray(where).shape))
            where = fnp.reshape(fnp.transpose(where, perm), logits.shape)
        axis = len(batch_axes)
    else:
        axis = axis % logits.ndim
    expected = logits.shape[:axis] + logits.shape[axis + 1:]
    if labels.shape != expected:
        raise ValueError(f"losses.softmax_cross_entropy_with_integer_labels: labels of shape "
                         f"{tuple(labels.shape)} must have the logits' shape without the class "
                         f"axis, {tuple(expected)}")
    if where is None:
        return _integer_label_xent(logits, labels, axis)
    label_logits = fnp.squeeze(
        fnp.take_along_axis(logits, fnp.expand_dims(labels, axis), axis=axis), axis=axis)
    where = fnp.broadcast_to(where, logits.shape)
    some = fnp.any(where, axis=axis)
    where = where | ~fnp.expand_dims(some, axis)  # a fully masked example: no log(0), then 0
    return fnp.where(some, nn.logsumexp(logits, axis=axis, where=where) - label_logits, 0)


@partial(custom_jvp, nondiff_argnums=(2,))
def _integer_label_xent(logits, labels, axis):
    """logsumexp(logits) - logits[label] along `axis` (the unmasked integer-label cross-entropy).

    Its own derivative rule because the logits of a language model are the largest arrays of a
    training step ([batch, length, vocab]). The rule makes the gradient g = softmax - one_hot
    once, in the forward pass (shift, exp, sum, divide in place, then the labels' entries), and
    its tangent is sum(g * t) written as a contraction over the class axis, so the reverse pass
    is one product g * ct. The composed rules (logsumexp's and take_along_axis') take about a
    dozen passes over the logits' size instead, and grad's seed becomes a vocabulary-sized
    constant in the compiled program."""
    return _xent_parts(logits, labels, axis)[0]


def _xent_parts(logits, labels, axis):
    """(loss, softmax(logits) - one_hot(labels)) of `_integer_label_xent`."""
    m = fnp.max(logits, axis=axis, keepdims=True)
    m = fnp.where(fnp.isfinite(m), m, 0)               # an all -inf slice: -inf loss, NaN g
    e = fnp.exp(fnp.subtract(logits, m))
    total = fnp.sum(e, axis=axis, keepdims=True)
    index = fnp.expand_dims(labels, axis)
    label_logits = fnp.take_along_axis(logits, index, axis=axis)
    # (fnp's operations: an all -inf slice gives NaN without a NumPy warning)
    loss = fnp.squeeze(fnp.subtract(fnp.add(fnp.log(total), m), label_logits), axis=axis)
    p = fnp.divide(e, total)
    g = fnp.put_along_axis(p, index, fnp.take_along_axis(p, index, axis=axis) - 1, axis=axis)
    return loss, g


@_integer_label_xent.defjvp
def _integer_label_xent_jvp(axis, primals, tangents):
    (logits, labels), (t, _) = primals, tangents
    loss, g = _xent_parts(logits, labels, axis)
    batch = tuple(a for a in range(g.ndim) if a != axis)
    return loss, lax.dot_general(g, t, (((axis,), (axis,)), (batch, batch)))


def sigmoid_binary_cross_entropy(logits, labels):
    """-labels log sigmoid(logits) - (1 - labels) log(1 - sigmoid(logits)), elementwise
    (Optax's): binary labels in {0, 1} or target probabilities, shaped like the logits. The
    gradient is sigmoid(logits) - labels."""
    logits = _floating(logits, "sigmoid_binary_cross_entropy")
    labels = fnp.asarray(labels).astype(logits.dtype)
    log_p = nn.log_sigmoid(logits)
    log_not_p = nn.log_sigmoid(-logits)
    return -labels * log_p - (1.0 - labels) * log_not_p


def _errors(predictions, targets, fn):
    predictions = _floating(predictions, fn, "predictions")
    if targets is None:
        return predictions
    targets = fnp.asarray(targets)
    if targets.shape != predictions.shape:
        raise ValueError(f"losses.{fn}: targets of shape {tuple(targets.shape)} must have the "
                         f"predictions' shape {tuple(predictions.shape)}")
    return predictions - targets


def squared_error(predictions, targets=None):
    """(predictions - targets)**2 elementwise (targets default to zeros), as Optax's; the mean
    squared error is its mean."""
    return fnp.square(_errors(predictions, targets, "squared_error"))


def l2_loss(predictions, targets=None):
    """0.5 * (predictions - targets)**2 elementwise (Optax's; note the 0.5)."""
    return 0.5 * fnp.square(_errors(predictions, targets, "l2_loss"))


def huber_loss(predictions, targets=None, *, delta=1.0):
    """0.5 r**2 for |r| <= delta, else 0.5 delta**2 + delta (|r| - delta), elementwise, with
    r = predictions - targets (Optax's): quadratic near 0, linear (robust to outliers) beyond
    delta. Its gradient is r clipped to [-delta, delta]."""
    a = fnp.abs(_errors(predictions, targets, "huber_loss"))
    quadratic = fnp.minimum(a, delta)
    return 0.5 * fnp.square(quadratic) + delta * (a - quadratic)


def log_cosh(predictions, targets=None):
    """log(cosh(predictions - targets)) elementwise (Optax's): about r**2 / 2 near 0 and
    |r| - log 2 far away, without overflow."""
    r = _errors(predictions, targets, "log_cosh")
    return fnp.logaddexp(r, -r) - np.log(2.0).astype(r.dtype)


def cosine_similarity(predictions, targets, *, epsilon=0.0, axis=-1, where=None):
    """The cosine of the angle between predictions and targets along `axis` (Optax's): the dot
    product of the two vectors scaled to unit norm, each squared norm clipped below at
    `epsilon`."""
    a = _floating(predictions, "cosine_similarity", "predictions")
    b = _floating(targets, "cosine_similarity", "targets")
    a_norm2 = fnp.sum(fnp.square(a), axis=axis, where=where, keepdims=True)
    b_norm2 = fnp.sum(fnp.square(b), axis=axis, where=where, keepdims=True)
    a_unit = a / fnp.sqrt(fnp.maximum(a_norm2, epsilon))
    b_unit = b / fnp.sqrt(fnp.maximum(b_norm2, epsilon))
    return fnp.sum(a_unit * b_unit, axis=axis, where=where)


def cosine_distance(predictions, targets, *, epsilon=0.0, axis=-1, where=None):
    """1 - cosine_similarity(predictions, targets) along `axis` (Optax's)."""
    return 1.0 - cosine_similarity(predictions, targets, epsilon=epsilon, axis=axis,
                                   where=where)


def smooth_labels(labels, alpha, *, axis=-1, where=None):
    """(1 - alpha) * labels + alpha / K for one-hot labels, K the number of classes along `axis`
    (or the count of `where` there): Optax's label smoothing."""
    labels = _floating(labels, "smooth_labels", "labels")
    if where is None:
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        k = 1
        for a in axes:
            k *= labels.shape[a]
    else:
        k = fnp.sum(fnp.asarray(where), axis=axis, keepdims=True)
    return (1.0 - alpha) * labels + alpha / k


def mse(predictions, targets):
    """The mean squared error, mean((predictions - targets)**2): funcgrad's shorthand for
    `fnp.mean(squared_error(predictions, targets))`."""
    return fnp.mean(squared_error(predictions, targets))


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


def accuracy(predictions, labels):
    """The fraction of correct predictions (float32)."""
    pred, labels = _classes(predictions, labels)
    return fnp.mean((pred == labels).astype(np.float32))


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
