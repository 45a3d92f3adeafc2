"""funcgrad.losses: losses and metrics against NumPy references; finite, NaN-free gradients at
extreme logits; reductions; jit and vmap; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from numeric import numeric_grad

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import losses

rng = np.random.default_rng(0)


def np_log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_softmax(x):
    return np.exp(np_log_softmax(x))




# ---------------------------------------------------------------------------------------------
# Losses: Optax's names, signatures and reductions (per example / per element), checked against
# the formulas in Optax's documentation written out in NumPy.


def test_softmax_cross_entropy_takes_probability_labels_per_example():
    logits = rng.normal(size=(6, 5)) * 3
    labels = rng.dirichlet(np.ones(5), 6)  # soft labels; one-hot is the special case
    ref = -np.sum(labels * np_log_softmax(logits), -1)
    out = losses.softmax_cross_entropy(logits, labels)
    assert out.shape == (6,)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    onehot = np.eye(5)[[0, 3, 1, 1, 4, 2]]
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, onehot),
                               -np_log_softmax(logits)[np.arange(6), [0, 3, 1, 1, 4, 2]],
                               rtol=1e-12)
    # d/dlogits sum_i loss_i = softmax - labels (labels sum to 1)
    g = fg.grad(lambda l: fnp.sum(losses.softmax_cross_entropy(l, labels)))(logits)
    np.testing.assert_allclose(g, np_softmax(logits) - labels, rtol=1e-9, atol=1e-12)
    # another class axis
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits.T, labels.T, axis=0), ref,
                               rtol=1e-12)


def test_softmax_cross_entropy_with_integer_labels():
    logits = rng.normal(size=(2, 3, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (2, 3)).astype(np.int32)
    ref = -np.take_along_axis(np_log_softmax(logits.astype(np.float64)), labels[..., None],
                              -1)[..., 0]
    out = losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    assert out.shape == (2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    np.testing.assert_allclose(
        out, losses.softmax_cross_entropy(logits, np.eye(4, dtype=np.float32)[labels]),
        rtol=1e-6)
    np.testing.assert_allclose(fg.jit(losses.softmax_cross_entropy_with_integer_labels)(
        logits, labels), out, rtol=1e-6)
    per = fg.vmap(losses.softmax_cross_entropy_with_integer_labels)(logits, labels)
    np.testing.assert_allclose(per, out, rtol=1e-6)
    # class axis 0; a tuple of axes is flattened into one class axis (label = flat index)
    np.testing.assert_allclose(losses.softmax_cross_entropy_with_integer_labels(
        np.moveaxis(logits, -1, 0), labels, axis=0), out, rtol=1e-6)
    flat = logits.reshape(2, 12)
    np.testing.assert_allclose(losses.softmax_cross_entropy_with_integer_labels(
        logits, np.array([5, 11]), axis=(1, 2)),
        losses.softmax_cross_entropy_with_integer_labels(flat, np.array([5, 11])), rtol=1e-6)
    # where: masked classes take no part; a fully masked example gives 0
    where = np.array([[True, True, False, True]] * 3 + [[False] * 4] * 3).reshape(2, 3, 4)
    lab = np.array([[0, 1, 3], [0, 0, 0]])
    masked = losses.softmax_cross_entropy_with_integer_labels(logits, lab, where=where)
    keep = logits[0][:, [0, 1, 3]].astype(np.float64)
    np.testing.assert_allclose(masked[0], -np_log_softmax(keep)[np.arange(3), [0, 1, 2]],
                               rtol=1e-6)
    assert masked[1].tolist() == [0, 0, 0]


def test_integer_label_cross_entropy_rule_agrees_with_the_composed_formula():
    """The loss's own derivative rule (softmax - one_hot, made once) gives what differentiating
    logsumexp - logits[label] gives, however it is staged, and matches finite differences."""
    logits = rng.normal(size=(3, 4, 6)) * 3
    labels = rng.integers(0, 6, (3, 4))
    weights = rng.normal(size=(3, 4))

    def new(x):
        return fnp.sum(losses.softmax_cross_entropy_with_integer_labels(x, labels) * weights)

    def composed(x):
        picked = fnp.take_along_axis(x, labels[..., None], axis=-1)[..., 0]
        return fnp.sum((fg.nn.logsumexp(x, axis=-1) - picked) * weights)

    def np_loss(x):
        picked = np.take_along_axis(np_log_softmax(x), labels[..., None], -1)[..., 0]
        return -np.sum(picked * weights)

    ref = fg.grad(composed)(logits)
    np.testing.assert_allclose(ref, numeric_grad(np_loss, logits), rtol=1e-6, atol=1e-8)
    for g in (fg.grad(new), fg.jit(fg.grad(new)), fg.grad(fg.jit(new))):
        np.testing.assert_allclose(g(logits), ref, rtol=1e-12, atol=1e-14)
    t = rng.normal(size=logits.shape)
    np.testing.assert_allclose(fg.jvp(new, (logits,), (t,))[1],
                               fg.jvp(composed, (logits,), (t,))[1], rtol=1e-12)
    def hessian_of(f):  # over the first example's logits (24 values)
        return fg.hessian(lambda v: f(fnp.concatenate([fnp.reshape(v, (1, 4, 6)), logits[1:]])))(
            logits[0].ravel())

    np.testing.assert_allclose(hessian_of(new), hessian_of(composed), rtol=1e-10, atol=1e-12)
    per_example = fg.vmap(fg.grad(lambda x, y: fnp.sum(
        losses.softmax_cross_entropy_with_integer_labels(x, y))))(logits, labels)
    np.testing.assert_allclose(per_example, fg.grad(lambda x: fnp.sum(
        losses.softmax_cross_entropy_with_integer_labels(x, labels)))(logits), rtol=1e-12)
    x32 = logits.astype(np.float32)
    assert fg.grad(lambda x: fnp.sum(
        losses.softmax_cross_entropy_with_integer_labels(x, labels)))(x32).dtype == np.float32


@pytest.mark.parametrize("fn", ["softmax_cross_entropy",
                                "softmax_cross_entropy_with_integer_labels"])
def test_cross_entropy_extreme_logits_nan_free(fn):
    logits = np.array([[1e4, -1e4, 0.0], [-1e30, 1e30, 0.0], [1e38, -1e38, 0.0]], np.float32)
    labels = np.array([0, 0, 1])
    lab = labels if fn.endswith("integer_labels") else np.eye(3, dtype=np.float32)[labels]
    f = lambda l: fnp.mean(getattr(losses, fn)(l, lab))
    v, g = fg.value_and_grad(f)(logits)
    assert np.isfinite(v) and np.all(np.isfinite(g)), (v, g)
    np.testing.assert_allclose(g, (np_softmax(logits.astype(np.float64)) - np.eye(3)[labels])
                               / 3, atol=1e-6)


def test_smooth_labels():
    onehot = np.eye(4)[[0, 2]]
    np.testing.assert_allclose(losses.smooth_labels(onehot, 0.2), 0.8 * onehot + 0.05)


def test_sigmoid_binary_cross_entropy_is_elementwise():
    x = rng.normal(size=(4, 3)) * 4
    z = rng.uniform(size=(4, 3))
    p = 1 / (1 + np.exp(-x))
    ref = -(z * np.log(p) + (1 - z) * np.log(1 - p))
    np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(x, z), ref, rtol=1e-10)
    g = fg.grad(lambda l: fnp.sum(losses.sigmoid_binary_cross_entropy(l, z)))(x)
    np.testing.assert_allclose(g, p - z, rtol=1e-10)
    # extreme logits: exact values, finite gradients sigmoid(x) - z (also at exactly 0)
    x = np.array([-1e4, 0.0, 1e4, -3e38, 3e38], np.float32)
    z = np.array([1, 0, 1, 0, 1], np.float32)
    np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(x, z),
                               [1e4, np.log(2), 0, 0, 0], rtol=1e-6)
    g = fg.grad(lambda l: fnp.sum(losses.sigmoid_binary_cross_entropy(l, z)))(x)
    np.testing.assert_allclose(g, [-1, 0.5, 0, 0, 0], atol=1e-7)
    # integer labels are accepted
    assert losses.sigmoid_binary_cross_entropy(x, z.astype(np.int32)).dtype == np.float32


def test_regression_losses_are_elementwise():
    p, t = rng.normal(size=(5, 2)) * 2, rng.normal(size=(5, 2))
    r = p - t
    np.testing.assert_allclose(losses.squared_error(p, t), r ** 2, rtol=1e-12)
    np.testing.assert_allclose(losses.squared_error(p), p ** 2, rtol=1e-12)
    np.testing.assert_allclose(losses.l2_loss(p, t), 0.5 * r ** 2, rtol=1e-12)
    np.testing.assert_allclose(losses.mse(p, t), np.mean(r ** 2), rtol=1e-12)
    np.testing.assert_allclose(losses.log_cosh(p, t), np.log(np.cosh(r)), rtol=1e-10)
    assert np.isfinite(losses.log_cosh(np.array([1e4]), np.array([0.0]))).all()
    for delta in (0.5, 1.0, 2.0):
        a = np.abs(r)
        ref = np.where(a <= delta, 0.5 * r ** 2, 0.5 * delta ** 2 + delta * (a - delta))
        np.testing.assert_allclose(losses.huber_loss(p, t, delta=delta), ref, rtol=1e-12)
        g = fg.grad(lambda q, d=delta: fnp.sum(losses.huber_loss(q, t, delta=d)))(p)
        np.testing.assert_allclose(g, np.clip(r, -delta, delta), rtol=1e-12)
    np.testing.assert_allclose(fg.grad(lambda q: losses.mse(q, t))(p), 2 * r / r.size)
    assert fg.grad(lambda q: fnp.sum(losses.huber_loss(q)))(np.zeros(3)).tolist() == [0, 0, 0]
    np.testing.assert_allclose(
        fg.grad(lambda q: fnp.mean(losses.huber_loss(q, t)))(p),
        numeric_grad(lambda q: np.mean(np.where(np.abs(q - t) <= 1, 0.5 * (q - t) ** 2,
                                                np.abs(q - t) - 0.5)), p), rtol=1e-6)


def test_cosine_similarity_and_distance():
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    ref = np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    np.testing.assert_allclose(losses.cosine_similarity(a, b), ref, rtol=1e-12)
    np.testing.assert_allclose(losses.cosine_distance(a, b), 1 - ref, rtol=1e-12)
    np.testing.assert_allclose(losses.cosine_distance(a.T, b.T, axis=0), 1 - ref, rtol=1e-12)
    # epsilon bounds the squared norms from below: a zero vector gives distance 1, not NaN
    z = losses.cosine_distance(np.zeros((1, 3)), b[:1], epsilon=1e-12)
    np.testing.assert_allclose(z, [1.0])
    g = fg.grad(lambda x: fnp.sum(losses.cosine_distance(x, b)))(a)
    np.testing.assert_allclose(g, numeric_grad(
        lambda x: np.sum(1 - np.sum(x * b, -1) / np.linalg.norm(x, axis=-1)
                         / np.linalg.norm(b, axis=-1)), a), rtol=1e-6)


def test_bad_input():
    with pytest.raises(TypeError, match="softmax_cross_entropy_with_integer_labels"):
        losses.softmax_cross_entropy(np.ones((3, 4)), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="without the class axis"):
        losses.softmax_cross_entropy_with_integer_labels(np.ones((3, 4)), np.zeros(4, np.int32))
    with pytest.raises(TypeError, match="softmax_cross_entropy\\(logits, labels\\)"):
        losses.softmax_cross_entropy_with_integer_labels(np.ones((3, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="logits' shape"):
        losses.softmax_cross_entropy(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(TypeError, match="floating"):
        losses.sigmoid_binary_cross_entropy(np.ones(3, np.int32), np.ones(3))
    with pytest.raises(ValueError, match="predictions' shape"):
        losses.huber_loss(np.ones(3), np.ones(4))


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
