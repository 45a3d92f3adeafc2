"""funcgrad.optim: trajectories against Optax's update formulas (written out below, in float64
NumPy), eagerly and under jit; masks, labels, accumulation, schedules, dtypes and errors."""

import math

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import masks, optim
from funcgrad import tree_util as tu

STEPS = 6


def make_params(dtype=np.float32):
    rng = np.random.default_rng(0)
    return {"w": rng.normal(size=(3, 4)).astype(dtype),
            "b": rng.normal(size=(4,)).astype(dtype),
            "layers": [{"k": rng.normal(size=(2, 2)).astype(dtype)}]}


def grad_seq(params, n=STEPS, seed=1):
    rng = np.random.default_rng(seed)
    return [tu.tree_map(lambda p: rng.normal(size=p.shape).astype(p.dtype), params)
            for _ in range(n)]


def run(tx, params, grads, jit=False):
    """Apply `tx` along a fixed gradient sequence; returns the list of updates and params."""
    state = tx.init(params)
    update = fg.jit(tx.update) if jit else tx.update
    us, ps = [], []
    for g in grads:
        u, state = update(g, state, params)
        params = optim.apply_updates(params, u)
        us.append(u)
        ps.append(params)
    return us, ps, state


def run_ref(ref, params, grads):
    """The same with a per-leaf reference `ref(t, g, p, state_dict) -> update` (float64)."""
    leaves, treedef = tu.tree_flatten(params)
    p = [np.asarray(x, np.float64) for x in leaves]
    states = [{} for _ in leaves]
    us, ps = [], []
    for t, g in enumerate(grads, start=1):
        gl = [np.asarray(x, np.float64) for x in tu.tree_leaves(g)]
        u = [ref(t, gi, pi, si) for gi, pi, si in zip(gl, p, states)]
        p = [pi + ui for pi, ui in zip(p, u)]
        us.append(tu.tree_unflatten(treedef, u))
        ps.append(tu.tree_unflatten(treedef, p))
    return us, ps


def assert_trees_close(a, b, rtol=2e-5, atol=1e-6):
    la, lb = tu.tree_leaves(a), tu.tree_leaves(b)
    assert tu.tree_structure(a) == tu.tree_structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x, np.float64), y, rtol=rtol, atol=atol)


def check(tx, ref, params=None, grads=None):
    params = make_params() if params is None else params
    grads = grad_seq(params) if grads is None else grads
    want_u, want_p = run_ref(ref, params, grads)
    for jit in (False, True):
        us, ps, _ = run(tx, params, grads, jit=jit)
        for u, w in zip(us, want_u):
            assert_trees_close(u, w)
        assert_trees_close(ps[-1], want_p[-1])
        for u, p in zip(tu.tree_leaves(us[-1]), tu.tree_leaves(params)):
            assert u.dtype == p.dtype


# ----------------------------------------------------------------------------------------------
# Optax's formulas, one leaf at a time


def sgd_ref(lr, momentum=None, nesterov=False):
    def ref(t, g, p, s):
        if momentum is None:
            return -lr * g
        tr = g + momentum * s.get("trace", 0.0)          # trace = g + beta * trace
        s["trace"] = tr
        return -lr * (g + momentum * tr if nesterov else tr)
    return ref


def adam_ref(lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, wd=0.0, decay=None):
    def ref(t, g, p, s):
        m = s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g        # m = b1 m + (1-b1) g
        v = s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g    # v = b2 v + (1-b2) g^2
        mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)       # bias corrections
        u = mhat / (np.sqrt(vhat + eps_root) + eps)
        if decay is None or decay(p):
            u = u + wd * p                                      # decoupled weight decay
        lr_t = lr(t - 1) if callable(lr) else lr                # schedule at count = t - 1
        return -lr_t * u
    return ref


def rmsprop_ref(lr, decay=0.9, eps=1e-8, centered=False):
    def ref(t, g, p, s):
        nu = s["nu"] = decay * s.get("nu", 0.0) + (1 - decay) * g * g
        if centered:
            mu = s["mu"] = decay * s.get("mu", 0.0) + (1 - decay) * g
            return -lr * g / np.sqrt(nu - mu * mu + eps)
        return -lr * g / np.sqrt(nu + eps)                      # Optax: eps inside the root
    return ref


def adagrad_ref(lr, init=0.1, eps=1e-7):
    def ref(t, g, p, s):
        acc = s["acc"] = s.get("acc", init) + g * g             # sum of squares
        return -lr * g / np.sqrt(acc + eps)
    return ref


def lion_ref(lr, b1=0.9, b2=0.99, wd=1e-3):
    def ref(t, g, p, s):
        m = s.get("m", 0.0)
        u = np.sign((1 - b1) * g + b1 * m)                       # interpolate, then sign
        s["m"] = b2 * m + (1 - b2) * g                           # then update the momentum
        if p.ndim >= 2:                                          # default mask: matrices only
            u = u + wd * p
        return -lr * u
    return ref


def test_sgd():
    check(optim.sgd(0.1), sgd_ref(0.1))


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum(nesterov):
    check(optim.momentum(0.1, 0.9, nesterov=nesterov), sgd_ref(0.1, 0.9, nesterov))
    check(optim.sgd(0.1, momentum=0.8, nesterov=nesterov), sgd_ref(0.1, 0.8, nesterov))


def test_adam():
    check(optim.adam(1e-2), adam_ref(1e-2))
    check(optim.adam(1e-2, b1=0.8, b2=0.9, eps=1e-3, eps_root=1e-4),
          adam_ref(1e-2, 0.8, 0.9, 1e-3, 1e-4))


def test_adam_with_schedule_uses_count_before_the_update():
    sched = optim.linear_schedule(0.1, 0.01, 4)
    check(optim.adam(sched), adam_ref(lambda c: 0.1 + (0.01 - 0.1) * min(c, 4) / 4))


def test_adamw_default_mask_skips_biases_and_norm_scales():
    check(optim.adamw(1e-2, weight_decay=0.1), adam_ref(1e-2, wd=0.1, decay=lambda p: p.ndim >= 2))
    check(optim.adamw(1e-2, weight_decay=0.1, mask=None), adam_ref(1e-2, wd=0.1))
    only_w = {"w": True, "b": False, "layers": False}
    check(optim.adamw(1e-2, weight_decay=0.1, mask=only_w),
          adam_ref(1e-2, wd=0.1, decay=lambda p: p.shape == (3, 4)))


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop(centered):
    check(optim.rmsprop(1e-2, centered=centered), rmsprop_ref(1e-2, centered=centered))


def test_adagrad():
    check(optim.adagrad(0.1), adagrad_ref(0.1))


def test_lion():
    check(optim.lion(1e-3), lion_ref(1e-3))


def test_clip_by_global_norm_then_sgd():
    params = make_params()
    grads = grad_seq(params)
    leaves = [tu.tree_leaves(g) for g in grads]
    norms = [math.sqrt(sum(float(np.sum(np.float64(x) ** 2)) for x in ls)) for ls in leaves]

    def ref(t, g, p, s):
        return -0.1 * g * min(1.0, 1.5 / norms[t - 1])          # g * max_norm / max(n, max_norm)

    assert max(norms) > 1.5
    check(optim.chain(optim.clip_by_global_norm(1.5), optim.sgd(0.1)), ref, params, grads)


def test_chain_state_is_a_tuple_of_states_with_int32_counters():
    tx = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3))
    state = tx.init(make_params())
    assert isinstance(state, tuple) and len(state) == 2
    count = state[1][0].count
    plain = type(fg.device_put(np.zeros(())))  # np.ndarray; cupy.ndarray in GPU mode
    assert isinstance(count, plain) and count.dtype == np.int32 and count.shape == ()
    for leaf in tu.tree_leaves(state):
        assert isinstance(leaf, plain)


# ----------------------------------------------------------------------------------------------
# Schedules


def test_schedules_follow_optax_formulas():
    lin = optim.linear_schedule(1.0, 0.0, 10, transition_begin=5)
    assert [float(lin(c)) for c in (0, 5, 10, 15, 20)] == pytest.approx([1, 1, 0.5, 0, 0])
    cos = optim.cosine_decay_schedule(2.0, 10, alpha=0.1)
    for c in (0, 3, 10, 12):
        t = min(c, 10)
        assert float(cos(c)) == pytest.approx(2.0 * (0.9 * 0.5 * (1 + math.cos(math.pi * t / 10))
                                                     + 0.1))
    wc = optim.warmup_cosine_decay_schedule(0.0, 1.0, 4, 14, end_value=0.1)
    assert float(wc(0)) == pytest.approx(0.0)
    assert float(wc(2)) == pytest.approx(0.5)
    assert float(wc(4)) == pytest.approx(1.0)
    assert float(wc(9)) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert float(wc(14)) == pytest.approx(0.1)
    assert float(wc(100)) == pytest.approx(0.1)
    ex = optim.exponential_decay(1.0, 10, 0.5)
    assert float(ex(5)) == pytest.approx(0.5 ** 0.5)
    assert float(optim.exponential_decay(1.0, 10, 0.5, staircase=True)(15)) == pytest.approx(0.5)
    assert float(optim.exponential_decay(1.0, 10, 0.5, end_value=0.3)(100)) == pytest.approx(0.3)
    pw = optim.piecewise_constant_schedule(1.0, {3: 0.5, 6: 0.1})
    assert [float(pw(c)) for c in (0, 2, 3, 5, 6, 9)] == pytest.approx(
        [1, 1, 0.5, 0.5, 0.05, 0.05])
    assert optim.constant_schedule(0.3)(7) == 0.3


def test_schedules_trace_under_jit():
    sched = optim.warmup_cosine_decay_schedule(0.0, 1.0, 4, 14)
    f = fg.jit(sched)
    for c in (0, 2, 7, 20):
        assert float(f(np.int32(c))) == pytest.approx(float(sched(c)), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# masked, multi_transform, MultiSteps


FROZEN = {"w": False, "b": True, "layers": [{"k": True}]}


def test_masked_freezes_false_leaves_with_zero_updates_and_no_state():
    params = make_params()
    tx = optim.masked(optim.adamw(1e-2, weight_decay=0.5, mask=None), FROZEN)
    state = tx.init(params)
    assert state.inner_state[0].mu["w"] is None              # a hole: no state for frozen leaves
    us, ps, state = run(tx, params, grad_seq(params))
    for u in us:
        assert u["w"].dtype == np.float32 and not np.any(u["w"])   # zero, despite weight decay
    np.testing.assert_array_equal(ps[-1]["w"], params["w"])
    assert np.any(np.asarray(ps[-1]["b"]) != params["b"])
    # the trainable leaves follow the plain optimizer run on them alone
    sub = {"b": params["b"], "layers": params["layers"]}
    want, _, _ = run(optim.adamw(1e-2, weight_decay=0.5, mask=None), sub,
                     [{"b": g["b"], "layers": g["layers"]} for g in grad_seq(params)])
    assert_trees_close(us[-1]["b"], want[-1]["b"])


def test_masked_leaves_frozen_leaves_out_of_global_norm_clipping():
    params = make_params()
    grads = grad_seq(params)
    tx = optim.masked(optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(1.0)), FROZEN)
    us, _, _ = run(tx, params, grads)
    g = grads[-1]
    n = math.sqrt(float(np.sum(g["b"].astype(np.float64) ** 2)
                        + np.sum(g["layers"][0]["k"].astype(np.float64) ** 2)))
    np.testing.assert_allclose(us[-1]["b"], -g["b"] * min(1.0, 1.0 / n), rtol=1e-5)


def test_masked_differs_from_optax_passthrough():
    # Optax's masked would return the raw gradient for masked-out leaves; ours returns zeros.
    params = make_params()
    u, _ = optim.masked(optim.sgd(1.0), FROZEN).update(
        grad_seq(params)[0], optim.masked(optim.sgd(1.0), FROZEN).init(params), params)
    assert not np.any(u["w"])


def test_masked_with_wrt_mask_and_jit_end_to_end():
    params = make_params()
    x = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)

    def loss(p):  # fnp, not @ and +: eager on host params next to device results in GPU mode
        h = fnp.tanh(fnp.add(fnp.matmul(x, p["w"]), p["b"]))
        return fnp.sum(fnp.matmul(h[:, :2], p["layers"][0]["k"]) ** 2)

    tx = optim.masked(optim.adam(1e-2), FROZEN)

    @fg.jit
    def step(p, s):
        g = fg.grad(loss, wrt=FROZEN)(p)
        u, s = tx.update(g, s, p)
        return optim.apply_updates(p, u), s

    p, s = params, tx.init(params)
    l0 = float(loss(p))
    for _ in range(20):
        p, s = step(p, s)
    assert float(loss(p)) < l0
    np.testing.assert_array_equal(p["w"], params["w"])


def test_masked_prefix_and_callable_masks():
    params = make_params()
    g = grad_seq(params)[0]
    for mask in ({"w": True, "b": False, "layers": False},
                 lambda p: masks.mask_where(p, lambda path, x: path == "w")):
        tx = optim.masked(optim.sgd(1.0), mask)
        u, _ = tx.update(g, tx.init(params), params)
        np.testing.assert_allclose(u["w"], -g["w"])
        assert not np.any(u["b"]) and not np.any(u["layers"][0]["k"])


def test_multi_transform_labels_per_subtree():
    params = make_params()
    labels = {"w": "fast", "b": "slow", "layers": "frozen"}       # a prefix: one label per subtree
    tx = optim.multi_transform({"fast": optim.sgd(1.0), "slow": optim.sgd(0.1),
                                "frozen": optim.set_to_zero()}, labels)
    grads = grad_seq(params)
    us, ps, _ = run(tx, params, grads)
    np.testing.assert_allclose(us[0]["w"], -grads[0]["w"], rtol=1e-6)
    np.testing.assert_allclose(us[0]["b"], -0.1 * grads[0]["b"], rtol=1e-6)
    assert not np.any(us[0]["layers"][0]["k"])
    np.testing.assert_array_equal(ps[-1]["layers"][0]["k"], params["layers"][0]["k"])
    us_jit, _, _ = run(tx, params, grads, jit=True)
    assert_trees_close(us_jit[-1], tu.tree_map(lambda a: np.asarray(a, np.float64), us[-1]))
    with pytest.raises(KeyError, match="nope"):
        optim.multi_transform({"a": optim.sgd(1.0)}, {"w": "a", "b": "nope", "layers": "a"}).init(
            params)


@pytest.mark.parametrize("jit", [False, True])
def test_multisteps_applies_the_inner_optimizer_to_the_mean_every_k(jit):
    params = make_params()
    grads = grad_seq(params, 6)
    k = 3
    tx = optim.MultiSteps(optim.adam(1e-2), every_k_schedule=k)
    us, ps, _ = run(tx, params, grads, jit=jit)
    means = [tu.tree_map(lambda *g: sum(np.float64(x) for x in g) / k, *grads[i:i + k])
             for i in range(0, 6, k)]
    want, _, _ = run(optim.adam(1e-2), params, [tu.tree_map(np.float32, m) for m in means])
    for i, u in enumerate(us):
        if (i + 1) % k:
            assert all(not np.any(x) for x in tu.tree_leaves(u))
        else:
            assert_trees_close(u, tu.tree_map(lambda a: np.asarray(a, np.float64),
                                              want[(i + 1) // k - 1]))


# ----------------------------------------------------------------------------------------------
# dtypes and errors


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_updates_keep_each_leafs_dtype(dtype):
    params = make_params(dtype)
    for tx in (optim.adam(optim.cosine_decay_schedule(1e-2, 10)), optim.adamw(1e-2),
               optim.rmsprop(1e-2), optim.adagrad(1e-2), optim.lion(1e-3),
               optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1, 0.9)),
               optim.MultiSteps(optim.adam(1e-2), 2), optim.masked(optim.adam(1e-2), FROZEN)):
        for jit in (False, True):
            us, ps, _ = run(tx, params, grad_seq(params, 2), jit=jit)
            for x in tu.tree_leaves(us[-1]) + tu.tree_leaves(ps[-1]):
                assert x.dtype == dtype


def test_update_with_another_tree_names_the_differing_path():
    params = make_params()
    tx = optim.adam(1e-3)
    state = tx.init(params)
    other = dict(params, layers=[{"q": params["layers"][0]["k"]}])
    with pytest.raises(ValueError, match="layers/0/k"):
        tx.update(other, state)
    resized = dict(params, w=params["w"][:2])
    with pytest.raises(ValueError, match=r"'w'.*shape \(3, 4\).*\(2, 4\)"):
        tx.update(resized, state)


def test_masked_with_wrong_mask_structure_names_the_path():
    params = make_params()
    with pytest.raises(ValueError, match="layers/0/q"):
        optim.masked(optim.sgd(1.0), {"w": True, "b": True, "layers": [{"q": True}]}).init(params)


def test_add_decayed_weights_needs_params():
    tx = optim.adamw(1e-3)
    params = make_params()
    with pytest.raises(ValueError, match="needs params"):
        tx.update(params, tx.init(params))


# ----------------------------------------------------------------------------------------------
# LAMB, Adafactor, injected hyperparameters, schedule-free: Optax 0.2.8's documented formulas


def _norm(x):
    return float(np.sqrt(np.sum(x * x)))


def lamb_ref(lr, b1=0.9, b2=0.999, eps=1e-6, wd=0.0):
    adam = adam_ref(1.0, b1, b2, eps)

    def ref(t, g, p, s):
        u = -adam(t, g, p, s) + wd * p                    # adam direction + decoupled decay
        pn, un = _norm(p), _norm(u)
        ratio = 1.0 if pn == 0 or un == 0 else pn / un    # layer-wise trust ratio
        return -lr * ratio * u
    return ref


def test_lamb():
    check(optim.lamb(1e-2, weight_decay=0.1, mask=None), lamb_ref(1e-2, wd=0.1))
    check(optim.lamb(1e-2), lamb_ref(1e-2))


def adafactor_ref(lr=None, decay_rate=0.8, eps=1e-30, clip=1.0, param_scale=True,
                  min_dim=128, momentum=None, wd=None):
    """Shazeer & Stern's Adafactor as Optax chains it, for one leaf."""
    def ref(t, g, p, s):
        rho = 1.0 - np.float32(t) ** np.float32(-decay_rate)   # decay 1 - t^-0.8 (float32)
        g2 = g * g + eps
        dims = None
        if p.ndim >= 2:
            order = np.argsort(p.shape, kind="stable")
            if p.shape[order[-2]] >= min_dim:
                dims = int(order[-2]), int(order[-1])
        if dims is None:
            v = s["v"] = rho * s.get("v", 0.0) + (1 - rho) * g2
            u = g / np.sqrt(v)
        else:
            d1, d0 = dims
            r = s["r"] = rho * s.get("r", 0.0) + (1 - rho) * g2.mean(axis=d0)
            c = s["c"] = rho * s.get("c", 0.0) + (1 - rho) * g2.mean(axis=d1)
            rd1 = d1 - 1 if d1 > d0 else d1
            row = (r / r.mean(axis=rd1, keepdims=True)) ** -0.5
            u = g * np.expand_dims(row, d0) * np.expand_dims(c ** -0.5, d1)
        if clip is not None:
            u = u / max(1.0, np.sqrt(np.mean(u * u)) / clip)   # update clipping
        if lr is not None:
            u = lr * u
        if param_scale:
            u = u * max(np.sqrt(np.mean(p * p)), 1e-3)          # relative step size
        if momentum is not None:
            u = s["m"] = momentum * s.get("m", 0.0) + (1 - momentum) * u
        if wd is not None:
            u = u + wd * p
        return -u
    return ref


def test_adafactor():
    rng = np.random.default_rng(3)
    params = {"big": rng.normal(size=(130, 129)), "tall": rng.normal(size=(3, 200)),
              "vec": rng.normal(size=(5,))}
    grads = grad_seq(params, n=4)
    check(optim.adafactor(1e-2), adafactor_ref(1e-2), params, grads)
    check(optim.adafactor(1e-2, momentum=0.9, weight_decay_rate=1e-3, min_dim_size_to_factor=3),
          adafactor_ref(1e-2, momentum=0.9, wd=1e-3, min_dim=3), params, grads)
    check(optim.adafactor(multiply_by_parameter_scale=False, clipping_threshold=None,
                          factored=False),
          adafactor_ref(None, clip=None, param_scale=False, min_dim=10 ** 9), params, grads)


def test_adafactor_state_is_factored():
    """The memory claim: a factored (130, 129) weight keeps 130 + 129 second-moment numbers
    (Adam keeps 2 * 130 * 129), the vector keeps a full one."""
    params = {"big": np.zeros((130, 129), np.float32), "vec": np.zeros(5, np.float32)}
    state = optim.adafactor(1e-3).init(params)[0]
    sizes = {k: state.v_row[k].size + state.v_col[k].size + state.v[k].size for k in params}
    assert sizes == {"big": 130 + 129 + 1, "vec": 1 + 1 + 5}


def test_inject_hyperparams():
    sched = optim.linear_schedule(1e-2, 1e-3, 4)
    tx = optim.inject_hyperparams(optim.adam)(learning_rate=sched, b1=0.8)
    check(tx, adam_ref(lambda c: 1e-2 + (1e-3 - 1e-2) * min(c, 4) / 4, b1=0.8))
    params = make_params()
    state = tx.init(params)
    assert set(state.hyperparams) == {"learning_rate", "b1", "b2", "eps", "eps_root"}
    assert state.hyperparams["learning_rate"].dtype == np.float32
    g = grad_seq(params, 1)[0]
    for i in range(3):
        _, state = tx.update(g, state, params)
        np.testing.assert_allclose(fg.device_get(state.hyperparams["learning_rate"]),
                                   1e-2 + (1e-3 - 1e-2) * i / 4, rtol=1e-6)
    # a numeric hyperparameter set by hand is used by the next update
    tx = optim.inject_hyperparams(optim.sgd)(learning_rate=0.1)
    state = tx.init(params)
    state.hyperparams["learning_rate"] = np.asarray(0.5, np.float32)
    u, _ = tx.update(g, state, params)
    np.testing.assert_allclose(fg.device_get(u["w"]), -0.5 * g["w"], rtol=1e-6)
    u, _ = fg.jit(tx.update)(g, state, params)
    np.testing.assert_allclose(fg.device_get(u["w"]), -0.5 * g["w"], rtol=1e-6)
    with pytest.raises(ValueError, match="static_args"):
        optim.inject_hyperparams(optim.sgd, static_args=("nope",))


def schedule_free_ref(base_ref, lr, b1=0.9, power=2.0):
    """Defazio et al.'s schedule-free iterates (Optax's): z += base update at y; x is the
    max_lr^power-weighted average of z; params y = b1 x + (1 - b1) z."""
    def ref(t, g, y, s):
        z = s.get("z", y)
        x = (y - (1 - b1) * z) / b1
        lr_t = lr(t) if callable(lr) else lr                  # step_count starts at 1
        s["max_lr"] = max(s.get("max_lr", 0.0), lr_t)
        w = s["max_lr"] ** power
        s["wsum"] = s.get("wsum", 0.0) + w
        ck = w / s["wsum"] if s["wsum"] else 0.0
        z = s["z"] = z + base_ref(t, g, y, s.setdefault("base", {}))
        x = (1 - ck) * x + ck * z
        return b1 * x + (1 - b1) * z - y
    return ref


def test_schedule_free():
    def rms_ref(lr, b2=0.999, eps=1e-8):      # AdamW without momentum, eps outside the root
        def ref(t, g, p, s):
            v = s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
            lr_t = lr(t - 1) if callable(lr) else lr
            return -lr_t * g / (np.sqrt(v / (1 - b2 ** t)) + eps)
        return ref

    warm = lambda c: 1e-2 * min(c, 3) / 3                    # warmup_constant_schedule
    check(optim.contrib.schedule_free_adamw(1e-2, warmup_steps=3),
          schedule_free_ref(rms_ref(warm), warm))
    check(optim.contrib.schedule_free_sgd(1e-2),
          schedule_free_ref(lambda t, g, p, s: -1e-2 * g, 1e-2))
    # evaluation params: x = (y - (1 - b1) z) / b1
    params = make_params(np.float64)
    tx = optim.contrib.schedule_free_sgd(1e-1)
    _, ps, state = run(tx, params, grad_seq(params))
    ex, y, z = fg.device_get((optim.contrib.schedule_free_eval_params(state, ps[-1]), ps[-1],
                              state.z))
    np.testing.assert_allclose(ex["w"], (y["w"] - 0.1 * z["w"]) / 0.9)
    with pytest.raises(ValueError, match="ScheduleFreeState"):
        optim.contrib.schedule_free_eval_params(optim.adam(1).init(params), params)


def test_rmsprop_optax_options():
    def ref(t, g, p, s):
        v = s["v"] = 0.9 * s.get("v", 0.0) + 0.1 * g * g
        return -1e-2 * g / (np.sqrt(v / (1 - 0.9 ** t)) + 1e-8)
    check(optim.rmsprop(1e-2, eps_in_sqrt=False, bias_correction=True), ref)


# Validation: trees against the params, states against their optimizer, hyperparameters

def _all_optimizers():
    return {
        "sgd": optim.sgd(0.1), "momentum": optim.momentum(0.1, 0.9, nesterov=True),
        "adam": optim.adam(1e-3), "adamw": optim.adamw(1e-3),
        "rmsprop": optim.rmsprop(1e-3, centered=True, momentum=0.9),
        "adagrad": optim.adagrad(1e-2), "lion": optim.lion(1e-4),
        "chain": optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3)),
        "masked": optim.masked(optim.adam(1e-3), FROZEN),
        "multi_transform": optim.multi_transform(
            {"a": optim.adam(1e-3), "f": optim.set_to_zero()},
            {"w": "a", "b": "f", "layers": "a"}),
        "MultiSteps": optim.MultiSteps(optim.adam(1e-3), 2).gradient_transformation(),
    }


def _mismatches(params):
    return {
        "list-for-dict": ([params["w"], params["b"], params["layers"]], "at '<root>'"),
        "extra-key": (dict(params, extra=params["b"]), "'extra'"),
        "shape": (dict(params, b=params["b"][:1]), r"'b': shape \(1,\) in the updates, \(4,\)"),
        "dtype": (dict(params, w=params["w"].astype(np.float64)),
                  "'w': dtype float64 in the updates, float32 in the params"),
        "nested-shape": (dict(params, layers=[{"k": np.ones((3, 2), np.float32)}]),
                         "'layers/0/k'"),
    }


@pytest.mark.parametrize("name", list(_all_optimizers()))
@pytest.mark.parametrize("jit", [False, True])
def test_every_optimizer_checks_updates_against_params_naming_the_path(name, jit):
    params = make_params()
    tx = _all_optimizers()[name]
    state = tx.init(params)
    update = fg.jit(tx.update) if jit else tx.update
    update(grad_seq(params, 1)[0], state, params)                 # the right tree passes
    for kind, (grads, where) in _mismatches(params).items():
        with pytest.raises((ValueError, TypeError), match=where) as info:
            update(grads, state, params)
        assert "optim." in str(info.value), kind


def test_without_params_the_state_catches_mismatches():
    params = make_params()
    for name in ("adam", "momentum", "rmsprop", "adagrad", "lion", "MultiSteps"):
        tx = _all_optimizers()[name]
        state = tx.init(params)
        with pytest.raises(ValueError, match=r"'b': shape \(4,\) in the optimizer state, \(1,\)"):
            tx.update(dict(params, b=params["b"][:1]), state)
        with pytest.raises(TypeError, match="'w': dtype float32 in the optimizer state, float64"):
            tx.update(dict(params, w=params["w"].astype(np.float64)), state)


@pytest.mark.parametrize("maker,user,words", [
    ("momentum", "adam", ["optim.scale_by_adam", "TraceState", "made by optim.trace",
                          "ScaleByAdamState"]),
    ("adam", "sgd", ["optim.sgd", "(ScaleByAdamState, EmptyState)", "scale_by_adam (adam"]),
    ("adagrad", "rmsprop", ["ScaleByRssState", "scale_by_rss (adagrad)"]),
    ("adam", "masked", ["optim.masked", "scale_by_adam (adam", "keeps a MaskedState"]),
    ("masked", "MultiSteps", ["MaskedState, made by optim.masked", "MultiStepsState"]),
    ("lion", "lion-schedule", ["EmptyState", "stateless", "ScaleByScheduleState"]),
])
def test_a_state_from_another_optimizer_says_which_made_it(maker, user, words):
    params = make_params()
    txs = dict(_all_optimizers(), **{"lion-schedule": optim.lion(optim.linear_schedule(
        1e-3, 0.0, 10))})
    state = txs[maker].init(params)
    with pytest.raises(TypeError) as info:
        txs[user].update(grad_seq(params, 1)[0], state, params)
    for w in words + ["init(params)"]:
        assert w in str(info.value), f"{w!r} not in {info.value}"


BAD_HYPERPARAMETERS = [
    (lambda: optim.sgd(float("nan")), ValueError, ["optim.sgd", "learning_rate", "finite", ">= 0"]),
    (lambda: optim.adam(-1e-3), ValueError, ["optim.adam", "learning_rate", "negate the loss"]),
    (lambda: optim.sgd("0.1"), TypeError, ["learning_rate", "a number >= 0 or a schedule", "str"]),
    (lambda: optim.adam(True), TypeError, ["learning_rate", "bool"]),
    (lambda: optim.adam(np.ones(2)), TypeError, ["learning_rate", "ndarray"]),
    (lambda: optim.adam(lambda c: -1.0), ValueError, ["schedule's value at step 0", ">= 0"]),
    (lambda: optim.adam(1e-3, b1=1.5), ValueError, ["b1", "[0, 1)", "1.5"]),
    (lambda: optim.adamw(1e-3, b2=-0.1), ValueError, ["b2", "[0, 1)"]),
    (lambda: optim.adam(1e-3, eps=-1.0), ValueError, ["eps", "[0, inf)"]),
    (lambda: optim.adamw(1e-3, weight_decay=float("inf")), ValueError, ["weight_decay"]),
    (lambda: optim.clip_by_global_norm(-1), ValueError, ["max_norm", "(0, inf)", "-1"]),
    (lambda: optim.clip_by_global_norm(0.0), ValueError, ["max_norm", "(0, inf)"]),
    (lambda: optim.sgd(0.1, momentum=1.0), ValueError, ["decay (momentum)", "[0, 1)"]),
    (lambda: optim.rmsprop(0.1, decay=2.0), ValueError, ["decay", "[0, 1)"]),
    (lambda: optim.adagrad(0.1, initial_accumulator_value=-1), ValueError,
     ["initial_accumulator_value"]),
    (lambda: optim.lion(1e-4, b1=2), ValueError, ["b1", "[0, 1]"]),
    (lambda: optim.scale("2"), TypeError, ["step_size", "a real number"]),
    (lambda: optim.MultiSteps(optim.sgd(0.1), 0), ValueError, ["every_k_schedule", "[1, inf)"]),
    (lambda: optim.MultiSteps(optim.sgd(0.1), 2.5), TypeError, ["every_k_schedule", "an int"]),
    (lambda: optim.MultiSteps(0.1, 2), TypeError, ["opt is a float", "GradientTransformation"]),
    (lambda: optim.chain(optim.sgd(0.1), 3), TypeError, ["argument 1 is a int"]),
    (lambda: optim.multi_transform([optim.sgd(0.1)], "a"), TypeError, ["non-empty dict"]),
]


@pytest.mark.parametrize("make,exc,words", BAD_HYPERPARAMETERS,
                         ids=[str(i) for i in range(len(BAD_HYPERPARAMETERS))])
def test_hyperparameters_are_checked_at_construction(make, exc, words):
    with pytest.raises(exc) as info:
        make()
    for w in words:
        assert w in str(info.value), f"{w!r} not in {info.value}"


def test_a_schedule_going_bad_is_caught_at_that_step_eagerly():
    params = make_params()
    tx = optim.sgd(lambda count: 0.1 - 0.05 * float(count))      # negative from step 3
    state = tx.init(params)
    g = grad_seq(params, 1)[0]
    for _ in range(3):
        _, state = tx.update(g, state, params)
    with pytest.raises(ValueError, match="schedule's value must be a finite number >= 0"):
        tx.update(g, state, params)


def test_traced_hyperparameters_pass_validation():
    """inject_hyperparams-style: an optimizer built inside jit from traced values."""
    params = make_params()
    g = grad_seq(params, 1)[0]
    state = optim.adam(1e-3).init(params)

    def step(lr, b1, g, state, params):
        return optim.adam(lr, b1=b1).update(g, state, params)

    u, _ = fg.jit(step)(np.float32(1e-3), np.float32(0.9), g, state, params)
    want, _ = optim.adam(1e-3).update(g, state, params)
    assert_trees_close(u, want)


def test_apply_updates_refuses_broadcasting_structure_and_truncation():
    params = {"a": np.ones(3, np.float32), "n": np.arange(2), "x": 1.5}
    ok = fg.device_get(optim.apply_updates(params, {"a": np.ones(3, np.float32), "n": None,
                                                    "x": 0.5}))
    assert ok["x"] == 2.0 and np.array_equal(ok["n"], params["n"]) and ok["a"].dtype == np.float32
    with pytest.raises(ValueError, match=r"no broadcasting.*'a': shape \(2, 3\) in the updates, "
                                         r"\(3,\) in the params"):
        optim.apply_updates(params, {"a": np.ones((2, 3), np.float32), "n": None, "x": 0.0})
    with pytest.raises(ValueError, match="'y' is in the updates but not in the params"):
        optim.apply_updates(params, {"a": None, "n": None, "x": 0.0, "y": 1.0})
    with pytest.raises(ValueError, match="at '<root>': a list in the updates, a dict"):
        optim.apply_updates(params, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="'n': an update of dtype float64 for a parameter "
                                        "of dtype int64"):
        optim.apply_updates(params, {"a": None, "n": np.ones(2), "x": 0.0})
    with pytest.raises(TypeError, match="'a': an update of dtype complex64 for a "
                                        "parameter of dtype float32"):
        optim.apply_updates(params, {"a": np.ones(3, np.complex64), "n": None, "x": 0.0})
    f = fg.jit(optim.apply_updates)
    with pytest.raises(ValueError, match="'a': shape"):
        f(params, {"a": np.ones((2, 3), np.float32), "n": None, "x": 0.0})
