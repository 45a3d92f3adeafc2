"""The rule harness: every primitive's JVP and VJP rules, against finite differences and each other.

Every `Primitive` of the modules of funcgrad.lax needs an entry in tests/rule_specs.py: a `Spec`
(how to draw valid float64 operands and static params) or, for a primitive with no derivative, a
`NonDiff` entry saying why; a primitive that accepts complex operands also needs a complex spec
(complex128 operands, checked the same way). Hypothesis draws a case; the primitive is applied
with `prim.bind` inside the function being differentiated, with respect to a random nonempty
subset of its float or complex operands (the others, and all integer/boolean operands, are held
fixed by closure). Checks:

  test_jvp_matches_finite_differences       fg.jvp's tangent == central differences along u
  test_vjp_matches_finite_differences       fg.vjp's cotangent == d<v, f>/dx by central differences
  test_jvp_and_vjp_agree                    <v, J u> (forward) == <J^T v, u> (reverse), to 1e-10
  test_second_order_matches_finite_differences
                                            grad of grad and jvp of grad of <w, f> == central
                                            differences of the first-order gradient
  test_nondifferentiable_rules_give_zero    NonDiff entries: zero tangents and cotangents
  test_shape_rule_matches_implementation    abstract_eval agrees with what impl computes
  test_every_primitive_has_a_spec           so that a new primitive cannot skip the harness
  test_complex_capable_primitives_have_complex_specs
                                            and one that takes complex operands cannot skip
                                            the complex checks

Complex numbers follow JAX's convention: a tangent is the R-linear image J u of the input
tangent u, and a cotangent g pairs with a tangent t by <g, t> = Re(sum(g * t)) (no conjugation),
so the VJP is the adjoint of the JVP under that pairing. Central differences along a complex
direction give J u directly; a cotangent's coordinate c is d<v, f>/d(Re x_c) - i d<v, f>/d(Im x_c).

Runs are deterministic (derandomize=True, no example database). Set FUNCGRAD_RULE_EXAMPLES to
draw more examples per test locally, FUNCGRAD_RULE_SHRINK=1 to shrink a failure to a minimal case.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rule_specs import NONDIFF, SPECS, SameValueGroup

import funcgrad as fg
import funcgrad.lax
from funcgrad.core import Primitive, ShapedArray
from funcgrad.core.trace import axis_frame
from funcgrad.lax import add, mul, real, reduce_sum

try:
    vmap = fg.vmap
except AttributeError:  # not exported yet
    from funcgrad.transforms.vmap import vmap

# ---------------------------------------------------------------------------------------------
# Discovery: every Primitive instance defined in a module of funcgrad.lax


def _discover():
    prims, errors, duplicates = {}, {}, []
    names = sorted(m.name for m in pkgutil.iter_modules(funcgrad.lax.__path__)
                   if not m.name.startswith("_"))
    for mod_name in names:
        try:
            mod = importlib.import_module(f"funcgrad.lax.{mod_name}")
        except Exception as e:  # a module being written may not import yet: reported below
            errors[mod_name] = f"{type(e).__name__}: {e}"
            continue
        for value in vars(mod).values():
            if isinstance(value, Primitive):
                seen = prims.setdefault(value.name, value)
                if seen is not value:
                    duplicates.append(value.name)
    return prims, errors, sorted(set(duplicates))


PRIMS, IMPORT_ERRORS, DUPLICATE_NAMES = _discover()

# Rules found wrong by this harness: (test kind, spec key) -> what is wrong. Each is a strict
# xfail, so the suite stays green and fixing the rule turns the entry into a failure to delete.
KNOWN_BUGS: dict[tuple[str, str], str] = {}

N_EXAMPLES = int(os.environ.get("FUNCGRAD_RULE_EXAMPLES", "6"))
# Shrinking a failure can take tens of seconds per test (and strict xfails fail on every run):
# FUNCGRAD_RULE_SHRINK=1 turns it on to get a minimal failing case.
PHASES = [Phase.explicit, Phase.generate] + (
    [Phase.shrink] if os.environ.get("FUNCGRAD_RULE_SHRINK") else [])
rule_settings = settings(
    max_examples=N_EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=False,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large, HealthCheck.large_base_example])

MAX_COORDS = 12  # VJP check: coordinates of each input compared with finite differences


# Work in progress elsewhere that makes a check raise NotImplementedError: (test kind or "*",
# spec key) -> what is missing. Non-strict, and only for NotImplementedError, so that a wrong
# number still fails and the entry can go once the work lands (the report shows XPASS).
PENDING: dict[tuple[str, str], str] = {
    ("vjp", "while"): "reverse mode through while_loop raises by design (as JAX)",
    ("dot", "while"): "reverse mode through while_loop raises by design (as JAX)",
}


def _ids(kind, keys):
    params = []
    for key in keys:
        marks = []
        reason = KNOWN_BUGS.get((kind, key))
        if reason:
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        pending = PENDING.get((kind, key)) or PENDING.get(("*", key))
        if pending:
            marks.append(pytest.mark.xfail(raises=NotImplementedError, strict=False,
                                           reason=pending))
        params.append(pytest.param(key, id=key, marks=marks))
    return params


DIFF_KEYS = [k for k, s in SPECS.items() if s.name in PRIMS]
SECOND_ORDER_KEYS = [k for k in DIFF_KEYS if SPECS[k].second_order is True]
NONDIFF_KEYS = [k for k, e in NONDIFF.items() if e.name in PRIMS]


# ---------------------------------------------------------------------------------------------
# Helpers

def _run(key, check):
    """Run check(key, data) on hypothesis-drawn cases, more of them for specs with more params."""
    n = N_EXAMPLES * SPECS[key].weight

    @settings(rule_settings, max_examples=n)
    @given(data=st.data())
    def run(data):
        check(key, data)

    run()


def _draw(data, key):
    """(spec, case, wrt, rng): wrt is a nonempty subset of the float operands."""
    spec = SPECS[key]
    case = data.draw(spec.cases, label="case")
    float_idx = [i for i, a in enumerate(case.operands)
                 if np.asarray(a).dtype.kind in "fc" and i not in spec.frozen]
    assert float_idx, f"spec {key} drew no float or complex operand"
    wrt = data.draw(st.lists(st.sampled_from(float_idx), min_size=1, unique=True).map(sorted),
                    label="wrt")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    return spec, case, tuple(wrt), rng


def _fun(spec, case, wrt):
    """The primitive as a function of the operands in `wrt`, returning its float outputs (of one
    lane, for a collective)."""
    prim = PRIMS[spec.name]
    if spec.axis_name is not None:
        assert len(wrt) == len(case.operands), "collective specs: every operand is mapped"

    def f(*diff):
        ops = list(case.operands)
        for i, d in zip(wrt, diff):
            ops[i] = d
        if spec.apply is not None:
            out = spec.apply(prim, ops, case.params)
        else:
            out = prim.bind(*ops, **case.params)
        outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        return tuple(o for o in outs if o.dtype.kind in "fc")

    return f


# The transforms, applied to f at xs. For a collective the whole computation, transforms
# included, runs per lane under vmap (as user code would call grad inside a mapped function),
# so the collective's own JVP and VJP rules are exercised; the finite differences then see the
# mapped function of all lanes, whose derivatives these are.

def _lanes(spec, fn):
    return fn if spec.axis_name is None else vmap(fn, axis_name=spec.axis_name)


def _apply(spec, f, xs):
    return _eval(_lanes(spec, f), xs)


def _jvp(spec, f, xs, us):
    n = len(xs)
    return _lanes(spec, lambda *a: fg.jvp(f, a[:n], a[n:]))(*xs, *us)


def _vjp(spec, f, xs, vs):
    n = len(xs)
    return _lanes(spec, lambda *a: fg.vjp(f, *a[:n])[1](tuple(a[n:])))(*xs, *vs)


def _gradient(f, n):
    """(ys..., ws...) -> the gradient of <w, f(ys)> with respect to ys."""
    def g(*a):
        ys, ws = a[:n], a[n:]
        return tuple(fg.grad(lambda *y: _weighted_sum(f(*y), ws), argnums=tuple(range(n)))(*ys))
    return g


def _eval(f, xs):
    out = f(*[np.asarray(x) for x in xs])
    assert out, "the primitive has no float output to differentiate"
    return [_wide(o) for o in out]


def _wide(a):
    """a as float64, or complex128 when complex."""
    a = np.asarray(a)
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


def _pair(a, b):
    """<a, b> = Re(sum(a * b)): how a cotangent pairs with a tangent (real or complex)."""
    return float(np.sum(_wide(a) * _wide(b)).real)


def _central(f, xs, us, eps):
    plus = _eval(f, [x + eps * u for x, u in zip(xs, us)])
    minus = _eval(f, [x - eps * u for x, u in zip(xs, us)])
    return [(p - m) / (2 * eps) for p, m in zip(plus, minus)]


def _normal_like(rng, a, dtype=None):
    dtype = np.dtype(dtype or np.asarray(a).dtype)
    z = rng.standard_normal(np.shape(a))
    if dtype.kind == "c":
        z = z + 1j * rng.standard_normal(np.shape(a))
    return np.asarray(z).astype(dtype)


def _assert_close(actual, expected, spec, what, case):
    actual, expected = _wide(actual), _wide(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=spec.rtol, atol=spec.atol * scale,
                               err_msg=f"{what} for {case}")


def _weighted_sum(outs, ws):
    """<w, f> = Re(sum(w * f)): a real scalar built with primitives, so it can be
    differentiated."""
    total = None
    for o, w in zip(outs, ws):
        term = reduce_sum(mul(o, w), tuple(range(len(w.shape))))
        if term.dtype.kind == "c":
            term = real(term)
        total = term if total is None else add(total, term)
    return total


def _setup(key, data):
    spec, case, wrt, rng = _draw(data, key)
    f = _fun(spec, case, wrt)
    xs = [np.asarray(case.operands[i]) for i in wrt]
    return spec, case, wrt, rng, f, xs


# ---------------------------------------------------------------------------------------------
# First order

@pytest.mark.parametrize("key", _ids("jvp", DIFF_KEYS))
def test_jvp_matches_finite_differences(key):
    _run(key, _check_jvp)


def _forward_mode_raises(spec, f, xs, us):
    """For a primitive whose forward mode raises by design (spec.forward_mode says why)."""
    if spec.forward_mode is True:
        return False
    with pytest.raises(TypeError, match="forward-mode"):
        _jvp(spec, f, xs, us)
    return True


def _check_jvp(key, data):
    spec, case, wrt, rng, f, xs = _setup(key, data)
    us = [_normal_like(rng, x) for x in xs]
    if _forward_mode_raises(spec, f, xs, us):
        return
    out, tangents = _jvp(spec, f, xs, us)
    for o, e in zip(out, _apply(spec, f, xs)):
        _assert_close(o, e, spec, "jvp's primal output", case)
    for i, (t, fd) in enumerate(zip(tangents, _central(_lanes(spec, f), xs, us, spec.eps))):
        assert np.asarray(t).dtype == np.asarray(out[i]).dtype, "tangent dtype != output dtype"
        _assert_close(t, fd, spec, f"tangent of output {i}", case)


@pytest.mark.parametrize("key", _ids("vjp", DIFF_KEYS))
def test_vjp_matches_finite_differences(key):
    _run(key, _check_vjp)


def _check_vjp(key, data):
    spec, case, wrt, rng, f, xs = _setup(key, data)
    out = _lanes(spec, f)(*xs)
    vs = tuple(_normal_like(rng, o) for o in out)
    cts = _vjp(spec, f, xs, vs)
    assert len(cts) == len(xs)

    def phi(*ys):  # <v, f(ys)>, evaluated on arrays
        return sum(_pair(v, o) for v, o in zip(vs, _apply(spec, f, ys)))

    def derivative(j, e):  # d phi along direction e of input j, by central differences
        plus = [y + spec.eps * e if k == j else y for k, y in enumerate(xs)]
        minus = [y - spec.eps * e if k == j else y for k, y in enumerate(xs)]
        return (phi(*plus) - phi(*minus)) / (2 * spec.eps)

    for j, (x, ct) in enumerate(zip(xs, cts)):
        ct = np.asarray(ct)
        assert ct.shape == x.shape and ct.dtype == x.dtype, (
            f"cotangent {j}: {ct.dtype}{list(ct.shape)} for an input {x.dtype}{list(x.shape)}")
        coords = (np.arange(x.size) if x.size <= MAX_COORDS
                  else rng.choice(x.size, MAX_COORDS, replace=False))
        got, want = [], []
        for c in coords:
            e = np.zeros(x.size, x.dtype)
            e[c] = 1.0
            e = e.reshape(x.shape)
            d = derivative(j, e)
            if x.dtype.kind == "c":  # <g, t> = Re(g t): Re g along e, -Im g along i e
                d = d - 1j * derivative(j, 1j * e)
            want.append(d)
            got.append(ct.reshape(-1)[c])
        _assert_close(np.array(got), np.array(want), spec,
                      f"cotangent of input {wrt[j]} at flat coordinates {list(coords)}", case)


@pytest.mark.parametrize("key", _ids("dot", DIFF_KEYS))
def test_jvp_and_vjp_agree(key):
    _run(key, _check_dot)


def _check_dot(key, data):
    spec, case, wrt, rng, f, xs = _setup(key, data)
    us = [_normal_like(rng, x) for x in xs]
    if _forward_mode_raises(spec, f, xs, us):
        return
    out, ju = _jvp(spec, f, xs, us)
    vs = tuple(_normal_like(rng, o) for o in out)
    cts = _vjp(spec, f, xs, vs)
    terms_fwd = [_wide(v) * _wide(t) for v, t in zip(vs, ju)]
    terms_rev = [_wide(c) * _wide(u) for c, u in zip(cts, us)]
    fwd = sum(float(t.sum().real) for t in terms_fwd)
    rev = sum(float(t.sum().real) for t in terms_rev)
    scale = sum(float(np.abs(t).sum()) for t in terms_fwd + terms_rev)
    assert abs(fwd - rev) <= spec.dot_rtol * scale + 1e-300, (
        f"<v, J u> = {fwd!r} but <J^T v, u> = {rev!r} for {case}")


# ---------------------------------------------------------------------------------------------
# Second order: with phi = <w, f>, reverse-over-reverse grad <grad phi, u> and forward-over-
# reverse jvp(grad phi, u) both give the Hessian-vector product H u, compared with central
# differences of grad phi along u.

@pytest.mark.parametrize("key", _ids("second_order", SECOND_ORDER_KEYS))
def test_second_order_matches_finite_differences(key):
    _run(key, _check_second_order)


def _check_second_order(key, data):
    spec, case, wrt, rng, f, xs = _setup(key, data)
    n = len(xs)
    argnums = tuple(range(n))
    ws = [_normal_like(rng, o) for o in _lanes(spec, f)(*xs)]
    us = [_normal_like(rng, x) for x in xs]
    grad_phi = _gradient(f, n)

    def rev_fn(*a):  # grad of <grad phi, u>
        return tuple(fg.grad(lambda *y: _weighted_sum(grad_phi(*y, *a[n:-n]), a[-n:]),
                             argnums=argnums)(*a[:n]))

    def fwd_fn(*a):  # jvp of grad phi along u
        return fg.jvp(lambda *y: grad_phi(*y, *a[n:-n]), a[:n], a[-n:])[1]

    expected = _central(lambda *ys: _lanes(spec, grad_phi)(*ys, *ws), xs, us, spec.eps)
    rev = _lanes(spec, rev_fn)(*xs, *ws, *us)
    fwd = _lanes(spec, fwd_fn)(*xs, *ws, *us)
    for j, e in enumerate(expected):
        _assert_close(rev[j], e, spec, f"grad of grad, input {wrt[j]}", case)
        _assert_close(fwd[j], e, spec, f"jvp of grad, input {wrt[j]}", case)


# ---------------------------------------------------------------------------------------------
# Primitives without a derivative

@pytest.mark.parametrize("key", _ids("nondiff", NONDIFF_KEYS))
@rule_settings
@given(data=st.data())
def test_nondifferentiable_rules_give_zero(key, data):
    entry = NONDIFF[key]
    prim = PRIMS[entry.name]
    if entry.cases is None:
        assert not prim.differentiable, f"{key} is listed as non-differentiable ({entry.reason})"
        return
    case = data.draw(entry.cases, label="case")
    ops = [np.asarray(a) for a in case.operands]
    out = prim.bind(*ops, **case.params)
    outs = tuple(out) if prim.multiple_results else (out,)
    if entry.raises is not None:
        _check_raises(entry, prim, ops, case)
        return
    if prim.differentiable:
        # The transforms call its rules: they must give symbolic zeros.
        tangents = [np.zeros_like(a) if a.dtype.kind in "fc" else None for a in ops]
        assert prim.jvp(ops, tangents, out, **case.params) is None
        assert all(c is None for c in prim.vjp(out, ops, out, [True] * len(ops), **case.params))
    float_idx = [i for i, a in enumerate(ops) if a.dtype.kind in "fc"]
    if not float_idx:  # nothing to differentiate: the outputs only need a sane dtype
        return
    rng = np.random.default_rng(0)

    def f(*diff):
        full = list(ops)
        for i, d in zip(float_idx, diff):
            full[i] = d
        res = prim.bind(*full, **case.params)
        return tuple(res) if prim.multiple_results else (res,)

    xs = [ops[i] for i in float_idx]
    _, tangents = fg.jvp(f, tuple(xs), tuple(_normal_like(rng, x) for x in xs))
    for t in tangents:
        assert not np.any(np.asarray(t)), f"nonzero tangent {t} for {case}"
    float_outs = [o for o in outs if o.dtype.kind in "fc"]
    if not float_outs:
        return
    _, vjp_fn = fg.vjp(lambda *d: tuple(o for o in f(*d) if o.dtype.kind in "fc"), *xs)
    for c in vjp_fn(tuple(_normal_like(rng, o) for o in float_outs)):
        assert not np.any(np.asarray(c)), f"nonzero cotangent {c} for {case}"


def _check_raises(entry, prim, ops, case):
    """A derivative not implemented yet must fail loudly in both modes, not give zeros."""
    float_idx = [i for i, a in enumerate(ops) if a.dtype.kind in "fc"]

    def f(*diff):
        full = list(ops)
        for i, d in zip(float_idx, diff):
            full[i] = d
        res = prim.bind(*full, **case.params)
        return tuple(res) if prim.multiple_results else (res,)

    xs = [ops[i] for i in float_idx]
    with pytest.raises(entry.raises):
        fg.jvp(f, tuple(xs), tuple(np.ones_like(x) for x in xs))
    out, vjp_fn = fg.vjp(f, *xs)
    with pytest.raises(entry.raises):
        vjp_fn(tuple(np.ones_like(o) for o in out))


# ---------------------------------------------------------------------------------------------
# Shape rules and coverage

@pytest.mark.parametrize("key", _ids("shape", DIFF_KEYS + NONDIFF_KEYS))
@settings(rule_settings, max_examples=max(2, N_EXAMPLES // 2))
@given(data=st.data())
def test_shape_rule_matches_implementation(key, data):
    entry = SPECS.get(key) or NONDIFF[key]
    if entry.cases is None:
        return
    prim = PRIMS[entry.name]
    case = data.draw(entry.cases, label="case")
    ops = [np.asarray(a) for a in case.operands]
    axis_name = getattr(entry, "axis_name", None)
    frame = contextlib.nullcontext()
    if axis_name is not None:  # a collective: one lane's value, on lane 0 of a process axis
        frame = axis_frame(axis_name, ops[0].shape[0], group=SameValueGroup(ops[0].shape[0]))
        ops = [a[0] for a in ops]
    with frame:
        out = prim.bind(*ops, **case.params)
        avals = prim.abstract_eval(*[ShapedArray(a.shape, a.dtype) for a in ops], **case.params)
    outs = tuple(out) if prim.multiple_results else (out,)
    avals = tuple(avals) if prim.multiple_results else (avals,)
    assert len(outs) == len(avals)
    for o, a in zip(outs, avals):
        assert (tuple(o.shape), np.dtype(o.dtype)) == (a.shape, a.dtype), (
            f"shape rule says {a.str_short()}, impl gives {o.dtype}{list(o.shape)} for {case}")


def test_every_lax_module_imports():
    assert not IMPORT_ERRORS, f"modules of funcgrad.lax that fail to import: {IMPORT_ERRORS}"


def test_every_primitive_has_a_spec():
    covered = {s.name for s in SPECS.values()} | {n.name for n in NONDIFF.values()}
    missing = sorted(set(PRIMS) - covered)
    assert not missing, (
        f"primitives with no entry in tests/rule_specs.py: {missing}. Add a Spec (how to draw "
        "valid operands) or, if it has no derivative, a NonDiff entry saying why.")
    assert not DUPLICATE_NAMES, f"distinct primitives share a name: {DUPLICATE_NAMES}"


def test_every_spec_names_a_primitive():
    covered = {s.name for s in SPECS.values()} | {n.name for n in NONDIFF.values()}
    stale = sorted(covered - set(PRIMS))
    assert not stale, f"tests/rule_specs.py has entries for unknown primitives: {stale}"


def test_specs_agree_with_differentiable_flags():
    wrong = [k for k in NONDIFF_KEYS
             if PRIMS[NONDIFF[k].name].differentiable and NONDIFF[k].cases is None]
    wrong += [s.name for s in SPECS.values()
              if s.name in PRIMS and not PRIMS[s.name].differentiable]
    assert not wrong, f"Spec/NonDiff entry disagrees with Primitive.differentiable: {wrong}"


REAL_DIFF_KEYS = [k for k in DIFF_KEYS if not SPECS[k].complex]
COMPLEX_SPEC_NAMES = {s.name for s in SPECS.values() if s.complex} | {
    n.name for k, n in NONDIFF.items() if k.endswith("[complex]")}
# Primitives that accept complex operands but whose complex derivatives are not checked here.
COMPLEX_EXEMPT: dict[str, str] = {
    name: "holds a body traced for the spec's float64 operands; with complex operands it "
          "differentiates as the primitives of its body do (checked here one by one)"
    for name in ("cond", "checkpoint", "while", "scan", "custom_jvp_call", "custom_vjp_call")}


@pytest.mark.parametrize("key", REAL_DIFF_KEYS)
@settings(rule_settings, max_examples=1)
@given(data=st.data())
def test_complex_capable_primitives_have_complex_specs(key, data):
    """A primitive whose shape rule accepts complex128 in place of its float64 operands must have
    a complex spec (or an exemption saying why), so that its complex rules are checked."""
    spec = SPECS[key]
    prim = PRIMS[spec.name]
    if spec.name in COMPLEX_SPEC_NAMES or spec.name in COMPLEX_EXEMPT:
        return
    case = data.draw(spec.cases, label="case")
    avals = [ShapedArray(np.shape(a), np.complex128 if np.asarray(a).dtype.kind == "f"
                         else np.asarray(a).dtype) for a in case.operands]
    frame = contextlib.nullcontext()
    if spec.axis_name is not None:
        frame = axis_frame(spec.axis_name, avals[0].shape[0])
        avals = [ShapedArray(a.shape[1:], a.dtype) for a in avals]
    try:
        with frame:
            prim.abstract_eval(*avals, **case.params)
    except Exception:
        return  # real operands only
    pytest.fail(f"{spec.name} accepts complex operands but has no complex spec in "
                "tests/rule_specs.py (complex_spec) and no COMPLEX_EXEMPT entry")
