"""Custom derivative rules survive staging: a custom_jvp / custom_vjp rule (the user's and the
library's: fg.nn, fg.scipy.special, fg.losses) gives the same answer whether the function is
differentiated eagerly or first staged by jit, vmap, checkpoint, a scan / fori_loop / cond body,
in any nesting, and whatever differentiates it (grad, jvp, vjp, linearize).

The matrix runs every composition of up to three transforms from {jit, vmap, checkpoint, scan,
fori, cond, grad, jvp, linearize} around each user rule and compares with the same composition
with the staging transforms left out (the eager answer, where the rule is applied directly). The
library's rules get every composition of up to two of them and of up to three of {jit, vmap,
scan, grad, jvp} (their programs are larger), and are checked against central finite
differences.
"""

import itertools

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lax
from funcgrad.scipy import special
from funcgrad.transforms.passes import optimize

V = np.array([0.3, -0.7, 1.1])   # the direction of jvp / linearize, the weights of grad
W = np.array([0.5, -1.0, 2.0])   # weights making a scalar of a vector output


def weights():
    return fnp.asarray(W)  # where the default backend computes


def weighted(y):
    return fnp.sum(y * weights())


# ---------------------------------------------------------------------------------------------
# User rules of both kinds: answers only the rule can give

@fg.custom_jvp
def softplus3(v):
    return fnp.log1p(fnp.exp(v))


@softplus3.defjvp
def softplus3_jvp(primals, tangents):
    (v,), (t,) = primals, tangents
    return softplus3(v), t * 3.0


@fg.custom_jvp
def scaled(x, y):  # two arguments, one of them a pytree
    return fnp.sin(x) * y["s"]


@scaled.defjvp
def scaled_jvp(primals, tangents):
    (x, y), (tx, ty) = primals, tangents
    return scaled(x, y), 2.0 * tx * y["s"] + ty["s"] * fnp.cos(x)


def _power_impl(k, x):
    return x ** k


power = fg.custom_jvp(_power_impl, nondiff_argnums=(0,))


@power.defjvp
def power_jvp(k, primals, tangents):
    (x,), (t,) = primals, tangents
    return power(k, x), t * (k + 1.0) * x ** (k - 1)   # deliberately not k x^(k-1)


@fg.custom_vjp
def sin2(v):
    return fnp.sin(v)


sin2.defvjp(lambda v: (fnp.sin(v), fnp.cos(v)), lambda c, g: (2.0 * c * g,))


@fg.custom_vjp
def clip_gradient(lo, hi, x):
    return x


def _clip_fwd(lo, hi, x):
    return x, (lo, hi)


def _clip_bwd(lo, hi, res, g):
    return (fnp.clip(g, res[0], res[1]),)


clip_gradient = fg.custom_vjp(clip_gradient.fun, nondiff_argnums=(0, 1))
clip_gradient.defvjp(_clip_fwd, _clip_bwd)


USER = {
    "custom_jvp": lambda x: weighted(softplus3(x)),
    "custom_jvp_pytree": lambda x: weighted(scaled(x, {"s": x * x})),
    "custom_jvp_nondiff": lambda x: weighted(power(3, x)),
    "custom_vjp": lambda x: weighted(sin2(x)),
    "custom_vjp_nondiff": lambda x: weighted(clip_gradient(-0.1, 0.2, x * x)),
}

# The library's rules (nn, scipy.special, losses), each at points of its domain.
LIBRARY = {
    "nn.softplus": (lambda x: weighted(fg.nn.softplus(x)), np.linspace(-1, 1, 3)),
    "nn.log_sigmoid": (lambda x: weighted(fg.nn.log_sigmoid(x)), np.linspace(-1, 1, 3)),
    "nn.softmax": (lambda x: weighted(fg.nn.softmax(x)), np.linspace(-1, 1, 3)),
    "nn.logsumexp": (lambda x: fg.nn.logsumexp(x * weights()), np.linspace(-1, 1, 3)),
    "nn.relu": (lambda x: weighted(fg.nn.relu(x)), np.array([-1.0, 0.0, 1.0])),
    "special.digamma": (lambda x: weighted(special.digamma(x)), np.array([0.5, 1.5, 2.5])),
    "special.gammaln": (lambda x: weighted(special.gammaln(x)), np.array([0.5, 1.5, 2.5])),
    "losses.softmax_cross_entropy": (
        lambda x: fg.losses.softmax_cross_entropy(x * weights(), np.array([0.2, 0.3, 0.5])),
        np.linspace(-1, 1, 3)),
}


# ---------------------------------------------------------------------------------------------
# The transforms of the matrix: each maps a function R^3 -> R to another

TRANSFORMS = {
    "jit": fg.jit,
    "vmap": lambda g: lambda x: fg.vmap(g)(fnp.stack([x, x * 0.5]))[0],
    "checkpoint": fg.checkpoint,
    "scan": lambda g: lambda x: lax.scan(lambda c, xi: (c + g(xi), None), 0.0,
                                         fnp.stack([x]))[0],
    "fori": lambda g: lambda x: lax.fori_loop(0, 2, lambda i, c: c + 0.5 * g(x), 0.0),
    "cond": lambda g: lambda x: lax.cond(fnp.sum(x) < 100.0, g, lambda y: fnp.sum(y) * 0.0, x),
    "grad": lambda g: lambda x: fnp.vdot(fg.grad(g)(x), V),
    "jvp": lambda g: lambda x: fg.jvp(g, (x,), (V,))[1],
    "linearize": lambda g: lambda x: fg.linearize(g, x)[1](V),
}
STAGING = {"jit", "vmap", "checkpoint", "scan", "fori", "cond"}


def _compositions(names, depth):
    return [seq for k in range(1, depth + 1) for seq in itertools.product(names, repeat=k)]


EVERY = _compositions(TRANSFORMS, 3)
LIBRARY_COMPOSITIONS = sorted(set(_compositions(TRANSFORMS, 2))
                              | set(_compositions(["jit", "vmap", "scan", "grad", "jvp"], 3)))


def _compose(f, seq):
    for name in seq:
        f = TRANSFORMS[name](f)
    return f


def _outcome(f, x):
    try:
        return float(f(fnp.asarray(x))), None  # (on the default backend, as a user would)
    except Exception as e:  # noqa: BLE001 (the eager and staged errors are compared)
        return None, e


def _check_matrix(f, x, compositions):
    wrong, eager = [], {}
    for seq in compositions:
        derivatives = tuple(name for name in seq if name not in STAGING)
        if derivatives not in eager:
            eager[derivatives] = _outcome(_compose(f, derivatives), x)
        want, want_err = eager[derivatives]
        got, got_err = _outcome(_compose(f, seq), x)
        if want_err is not None or got_err is not None:
            if type(want_err) is not type(got_err):
                wrong.append((seq, repr(want_err)[:80], repr(got_err)[:200]))
        elif not np.isclose(got, want, rtol=1e-9, atol=1e-12):
            wrong.append((seq, want, got))
    assert not wrong, f"{len(wrong)} of {len(compositions)} compositions differ: {wrong[:5]}"


@pytest.mark.parametrize("name", sorted(USER))
def test_user_rules_survive_every_composition(name):
    _check_matrix(USER[name], np.linspace(-1, 1, 3), EVERY)


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_rules_survive_every_composition(name):
    f, x = LIBRARY[name]
    _check_matrix(f, x, LIBRARY_COMPOSITIONS)


def _fd_grad(f, x, h=1e-5):
    return np.array([(f(fnp.asarray(x + h * e)) - f(fnp.asarray(x - h * e))) / (2 * h)
                     for e in np.eye(len(x))])


@pytest.mark.parametrize("name", sorted(LIBRARY))
@pytest.mark.parametrize("wrap", sorted(STAGING) + ["none"])
def test_library_rules_match_finite_differences(name, wrap):
    f, x = LIBRARY[name]
    g = f if wrap == "none" else TRANSFORMS[wrap](f)
    if name == "nn.relu":  # a kink at 0: the rule says 0 there, as JAX's
        np.testing.assert_allclose(fg.grad(g)(x), [0.0, 0.0, W[2]], rtol=1e-12)
        return
    want = _fd_grad(lambda v: float(f(v)), x)
    np.testing.assert_allclose(fg.grad(g)(x), want, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fg.jvp(g, (x,), (V,))[1], want @ V, rtol=1e-6, atol=1e-8)
    # second order: reverse over reverse of the staged function against differences of the
    # eager gradient
    hess_v = _fd_grad(lambda v: float(fnp.vdot(fg.grad(f)(v), V)), x)
    np.testing.assert_allclose(fg.grad(lambda v: fnp.vdot(fg.grad(g)(v), V))(x), hess_v,
                               rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Issue 15, section 1: the rule's answer under every transform

def test_issue_examples_give_the_rules_answer():
    h = lambda x: fnp.sum(softplus3(x))  # noqa: E731
    x = np.linspace(-1, 1, 3)
    three = np.full(3, 3.0)
    for f in (fg.grad(h), fg.jit(fg.grad(h)), fg.grad(fg.jit(h)),
              fg.grad(lambda x: fnp.sum(fg.vmap(softplus3)(x))), fg.grad(fg.checkpoint(h)),
              fg.grad(lambda x: lax.scan(lambda c, v: (c + softplus3(v), None), 0.0, x)[0])):
        np.testing.assert_allclose(f(x), three)
    relu_sum = lambda x: fnp.sum(fg.nn.relu(x))  # noqa: E731
    np.testing.assert_array_equal(fg.grad(fg.jit(relu_sum))(np.zeros(2)), [0.0, 0.0])
    hv = lambda x: fnp.sum(sin2(x))  # noqa: E731
    np.testing.assert_allclose(fg.grad(fg.jit(hv))(x), 2 * np.cos(x))  # the rule's, not cos


# ---------------------------------------------------------------------------------------------
# Programs are values: the rule is an equation of the program

def test_make_jaxpr_keeps_the_rule_as_an_equation():
    text = str(fg.make_jaxpr(lambda x: softplus3(x) * 2.0)(np.ones(3)))
    assert "custom_jvp_call[" in text and "jvp=softplus3_jvp" in text and "log1p" in text
    text = str(fg.make_jaxpr(sin2)(np.ones(3)))
    assert "custom_vjp_call[" in text and "sin" in text


def test_jit_compiles_the_program_alone_but_keeps_the_rule_for_transforms():
    f = fg.jit(lambda x: softplus3(x) * 2.0)
    assert "custom_jvp_call" not in str(f.lower(np.ones(3)).jaxpr)   # only values matter
    closed = fg.make_jaxpr(lambda x: softplus3(x) * 2.0)(np.ones(3))
    kept = optimize(closed, differentiable=True)   # what jit runs inside a transform
    assert [e.primitive.name for e in kept.eqns].count("custom_jvp_call") == 1
    assert "custom_jvp_call" not in str(optimize(closed))


def test_vmap_batches_the_program_and_the_rule():
    xs = np.linspace(-1, 1, 6).reshape(2, 3)
    text = str(fg.make_jaxpr(fg.vmap(softplus3))(xs))
    assert text.count("custom_jvp_call[") == 1 and "f64[2,3]" in text
    got = fg.jacfwd(lambda x: fg.vmap(softplus3)(x))(xs)
    want = np.einsum("ij,ik,jl->ijkl", np.full((2, 3), 3.0), np.eye(2), np.eye(3))
    np.testing.assert_allclose(got, want)


def test_vmap_of_custom_vjp_sums_the_cotangent_of_an_unbatched_argument():
    @fg.custom_vjp
    def mul(w, x):
        return w * x

    mul.defvjp(lambda w, x: (w * x, (w, x)), lambda r, g: (g * r[1] * 10.0, g * r[0]))
    xs = np.array([1.0, 2.0, 3.0])
    loss = lambda w: fnp.sum(fg.vmap(mul, in_axes=(None, 0))(w, xs))  # noqa: E731
    np.testing.assert_allclose(fg.grad(loss)(2.0), 10.0 * xs.sum())
    np.testing.assert_allclose(fg.grad(fg.jit(loss))(2.0), 10.0 * xs.sum())


def test_rules_calling_custom_functions_and_custom_functions_nested():
    @fg.custom_jvp
    def outer(x):
        return softplus3(x) + 1.0

    @outer.defjvp
    def outer_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return outer(x), softplus3(x) * t   # the rule itself calls a custom function

    x = np.linspace(-1, 1, 3)
    f = lambda x: fnp.sum(outer(x))  # noqa: E731
    want = fg.grad(f)(x)
    np.testing.assert_allclose(want, np.log1p(np.exp(x)))
    for g in (fg.jit(f), fg.checkpoint(f), fg.jit(fg.jit(f))):
        np.testing.assert_allclose(fg.grad(g)(x), want)
    # second order through the rule: d/dx softplus3(x) t is the inner rule, 3 t
    np.testing.assert_allclose(fg.hessian(fg.jit(f))(x), 3.0 * np.eye(3))


# ---------------------------------------------------------------------------------------------
# JAX's semantics at the edges

@pytest.mark.parametrize("wrap", ["none", "jit", "vmap", "checkpoint"])
def test_forward_mode_of_a_custom_vjp_function_raises_as_in_jax(wrap):
    f = sin2 if wrap == "none" else TRANSFORMS[wrap](lambda x: fnp.sum(sin2(x))) \
        if wrap == "vmap" else getattr(fg, wrap)(sin2)
    x = np.linspace(-1, 1, 3)
    for call in (lambda: fg.jvp(f, (x,), (V,)), lambda: fg.linearize(f, x),
                 lambda: fg.jacfwd(f)(x)):
        with pytest.raises(TypeError, match="forward-mode autodiff"):
            call()


def test_forward_over_reverse_of_a_custom_vjp_function_works_as_in_jax():
    f = lambda x: weighted(sin2(x))  # noqa: E731
    x = np.linspace(-1, 1, 3)
    want = np.diag(-2 * np.sin(x) * W)   # d/dx of the rule's gradient 2 cos(x) w
    for g in (f, fg.jit(f), fg.checkpoint(f)):
        np.testing.assert_allclose(fg.hessian(g)(x), want, atol=1e-12)


def test_differentiating_a_value_the_function_closes_over_raises():
    def loss(w, x):
        @fg.custom_jvp
        def g(y):
            return y * w

        g.defjvp(lambda p, t: (g(p[0]), t[0] * w))
        return fnp.sum(fg.jit(g)(x))

    x = np.ones(3)
    np.testing.assert_allclose(fg.grad(loss, 1)(2.0, x), np.full(3, 2.0))
    with pytest.raises(TypeError, match="closes over a value that is being differentiated"):
        fg.grad(loss, argnums=(0, 1))(2.0, x)


def test_policy_checkpoint_and_custom_rules_inside_a_scan_body():
    policy = fg.checkpoint_policies.save_only_these_names("h")

    def step(c, x):
        h = fg.checkpoint_name(fnp.sin(c * x), "h")
        return softplus3(h) + sin2(c), None

    f = lambda c, xs: lax.scan(fg.checkpoint(step, policy=policy), c, xs)[0]  # noqa: E731
    xs = np.linspace(0.1, 0.5, 4)
    want = fg.grad(lambda c: lax.scan(step, c, xs)[0])(0.3)
    np.testing.assert_allclose(fg.grad(f)(0.3, xs), want)
    np.testing.assert_allclose(fg.grad(fg.jit(f))(0.3, xs), want)


def test_vmap_of_cond_with_a_batched_predicate_and_a_staged_branch():
    f = lambda x: lax.cond(fnp.sum(x) < 0.0, lambda y: fnp.sum(softplus3(y)),  # noqa: E731
                           lambda y: fnp.sum(y), x)
    xs = np.array([[-1.0, -2.0, 0.5], [1.0, 2.0, 0.5]])
    np.testing.assert_allclose(fg.vmap(f)(xs), [np.log1p(np.exp(xs[0])).sum(), 3.5])
    np.testing.assert_allclose(fg.vmap(fg.grad(f))(xs), [np.full(3, 3.0), np.ones(3)])
