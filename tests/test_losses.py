"""funcgrad.losses: losses and metrics against NumPy references; finite, NaN-free gradients at
extreme logits; reductions; jit and vmap; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from numeric import numeric_grad

import funcgrad as fg
from funcgrad import losses

rng = np.random.default_rng(0)


def np_log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_softmax(x):
    return np.exp(np_log_softmax(x))




# ---------------------------------------------------------------------------------------------
# Losses


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_softmax_cross_entropy_matches_numpy(smoothing):
    logits = rng.normal(size=(6, 5)) * 3
    labels = rng.integers(0, 5, 6)
    target = (1 - smoothing) * np.eye(5)[labels] + smoothing / 5
    per_example = -np.sum(target * np_log_softmax(logits), -1)
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(logits, labels, smoothing, reduction="none"), per_example,
        rtol=1e-12)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels, smoothing),
                               per_example.mean(), rtol=1e-12)
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(logits, labels, smoothing, reduction="sum"),
        per_example.sum(), rtol=1e-12)
    # gradient of the mean: (softmax - target) / batch
    g = fg.grad(lambda l: losses.softmax_cross_entropy(l, labels, smoothing))(logits)
    np.testing.assert_allclose(g, (np_softmax(logits) - target) / 6, rtol=1e-9, atol=1e-12)
    # probability targets give the same value
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(logits, np.eye(5)[labels], smoothing), per_example.mean(),
        rtol=1e-12)


def test_softmax_cross_entropy_batch_shapes_and_dtype():
    logits = rng.normal(size=(2, 3, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (2, 3)).astype(np.int32)
    out = losses.softmax_cross_entropy(logits, labels, reduction="none")
    assert out.shape == (2, 3) and out.dtype == np.float32
    assert losses.softmax_cross_entropy(logits, labels).dtype == np.float32
    np.testing.assert_allclose(fg.jit(losses.softmax_cross_entropy)(logits, labels),
                               losses.softmax_cross_entropy(logits, labels), rtol=1e-6)
    per = fg.vmap(lambda l, y: losses.softmax_cross_entropy(l, y))(logits, labels)
    np.testing.assert_allclose(per, out.mean(-1), rtol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_softmax_cross_entropy_extreme_logits_nan_free(smoothing):
    logits = np.array([[1e4, -1e4, 0.0], [-1e30, 1e30, 0.0], [1e38, -1e38, 0.0]], np.float32)
    labels = np.array([0, 0, 1])
    f = lambda l: losses.softmax_cross_entropy(l, labels, smoothing)
    v, g = fg.value_and_grad(f)(logits)
    assert np.isfinite(v) and np.all(np.isfinite(g)), (v, g)
    target = (1 - smoothing) * np.eye(3)[labels] + smoothing / 3
    np.testing.assert_allclose(g, (np_softmax(logits.astype(np.float64)) - target) / 3,
                               atol=1e-6)
    # a loss beyond float32's range is inf, but its gradient is still exact (no inf - inf)
    with np.errstate(over="ignore"):
        v, g = fg.value_and_grad(f)(logits * 3)
    assert np.all(np.isfinite(g)) and not np.any(np.isnan(g)), g


def test_sigmoid_binary_cross_entropy():
    x = rng.normal(size=(4, 3)) * 4
    z = rng.uniform(size=(4, 3))
    p = 1 / (1 + np.exp(-x))
    ref = -(z * np.log(p) + (1 - z) * np.log(1 - p))
    np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(x, z, reduction="none"), ref,
                               rtol=1e-10)
    g = fg.grad(lambda l: losses.sigmoid_binary_cross_entropy(l, z, reduction="sum"))(x)
    np.testing.assert_allclose(g, p - z, rtol=1e-10)
    # extreme logits: exact values, finite gradients sigmoid(x) - z (also at exactly 0)
    x = np.array([-1e4, 0.0, 1e4, -3e38, 3e38], np.float32)
    z = np.array([1, 0, 1, 0, 1], np.float32)
    v = losses.sigmoid_binary_cross_entropy(x, z, reduction="none")
    np.testing.assert_allclose(v, [1e4, np.log(2), 0, 0, 0], rtol=1e-6)
    g = fg.grad(lambda l: losses.sigmoid_binary_cross_entropy(l, z, reduction="sum"))(x)
    np.testing.assert_allclose(g, [-1, 0.5, 0, 0, 0], atol=1e-7)
    # integer labels are accepted
    assert losses.sigmoid_binary_cross_entropy(x, z.astype(np.int32)).dtype == np.float32


def test_mse_and_huber():
    p, t = rng.normal(size=(5, 2)) * 2, rng.normal(size=(5, 2))
    np.testing.assert_allclose(losses.mse(p, t), np.mean((p - t) ** 2), rtol=1e-12)
    r = p - t
    for delta in (0.5, 1.0, 2.0):
        a = np.abs(r)
        ref = np.where(a <= delta, 0.5 * r ** 2, delta * (a - 0.5 * delta))
        np.testing.assert_allclose(losses.huber(p, t, delta, reduction="none"), ref, rtol=1e-12)
        g = fg.grad(lambda q, d=delta: losses.huber(q, t, d, reduction="sum"))(p)
        np.testing.assert_allclose(g, np.clip(r, -delta, delta), rtol=1e-12)
    np.testing.assert_allclose(fg.grad(lambda q: losses.mse(q, t))(p), 2 * r / r.size)
    assert fg.grad(lambda q: losses.huber(q, 0.0))(np.zeros(3)).tolist() == [0, 0, 0]
    np.testing.assert_allclose(
        fg.grad(lambda q: losses.huber(q, t))(p),
        numeric_grad(lambda q: np.mean(np.where(np.abs(q - t) <= 1, 0.5 * (q - t) ** 2,
                                                np.abs(q - t) - 0.5)), p), rtol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="reduction"):
        losses.mse(np.ones(2), np.ones(2), reduction="avg")
    with pytest.raises(ValueError, match="labels shape"):
        losses.softmax_cross_entropy(np.ones((3, 4)), np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.softmax_cross_entropy(np.ones((3, 4)), np.zeros(3, np.int32), 1.5)


# ---------------------------------------------------------------------------------------------
# Metrics


def np_confusion(y, p, k):
    cm = np.zeros((k, k), np.int64)
    for a, b in zip(y, p):
        cm[a, b] += 1
    return cm


def np_macro(y, p):
    """scikit-learn's macro precision / recall / F1 (zero_division=0), over the classes seen."""
    classes = sorted(set(y.tolist()) | set(p.tolist()))
    ps, rs, fs = [], [], []
    for c in classes:
        tp = np.sum((p == c) & (y == c))
        pp, ap = np.sum(p == c), np.sum(y == c)
        prec = tp / pp if pp else 0.0
        rec = tp / ap if ap else 0.0
        ps.append(prec)
        rs.append(rec)
        fs.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return np.mean(ps), np.mean(rs), np.mean(fs)


def test_accuracy():
    logits = rng.normal(size=(50, 4))
    labels = rng.integers(0, 4, 50)
    ref = np.mean(logits.argmax(-1) == labels)
    np.testing.assert_allclose(losses.accuracy(logits, labels), ref)
    np.testing.assert_allclose(losses.accuracy(logits.argmax(-1), labels), ref)
    assert losses.accuracy(logits, labels).dtype == np.float32
    np.testing.assert_allclose(fg.jit(losses.accuracy)(logits, labels), ref)


def test_confusion_matrix_and_macro_scores():
    y = rng.integers(0, 5, 200)
    p = np.where(rng.uniform(size=200) < 0.6, y, rng.integers(0, 5, 200))
    p[p == 4] = 3  # class 4 is never predicted: precision 0 there
    cm = losses.confusion_matrix(p, y, 5)
    np.testing.assert_array_equal(cm, np_confusion(y, p, 5))
    assert cm.sum() == 200
    np.testing.assert_array_equal(losses.confusion_matrix(p, y), cm)  # inferred size
    np.testing.assert_allclose(losses.precision_recall_f1(p, y, 5), np_macro(y, p), rtol=1e-12)
    # from scores, under jit
    scores = np.eye(5)[p] + 0.01 * rng.uniform(size=(200, 5))
    np.testing.assert_array_equal(fg.jit(lambda s, t: losses.confusion_matrix(s, t))(scores, y),
                                  cm)
    prf = fg.jit(lambda a, b: losses.precision_recall_f1(a, b, 5))(p, y)
    np.testing.assert_allclose(prf, np_macro(y, p), rtol=1e-12)


def test_macro_scores_only_count_classes_that_occur():
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 1, 1, 1])
    prec, rec, f1 = losses.precision_recall_f1(p, y, num_classes=6)
    np.testing.assert_allclose([prec, rec, f1], np_macro(y, p))
    np.testing.assert_allclose([prec, rec], [(1 + 2 / 3) / 2, (0.5 + 1) / 2])
    assert losses.precision_recall_f1(y, y, 2) == (1.0, 1.0, 1.0)


def test_metrics_bad_input():
    with pytest.raises(ValueError, match="predictions"):
        losses.accuracy(np.zeros((3, 2, 2)), np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="integer classes"):
        losses.accuracy(np.zeros(3), np.zeros(3, np.int64))
