"""Operand specs for the rule harness (tests/test_rules.py): an entry per primitive of funcgrad.lax.

A `Spec` says how to draw valid operands and static params for a differentiable primitive (a
hypothesis strategy of `Case`s): float64 values inside the primitive's domain and away from its
kinks and ties, so central finite differences are a faithful reference. A `NonDiff` entry lists a
primitive with no derivative (comparisons, bitwise ops, argmax, ...) and why; the harness checks
that its rules give zero tangents / cotangents (or, for a derivative not implemented yet, that
they raise a clear error rather than give wrong numbers).

Adding a primitive to funcgrad.lax means adding an entry here: test_every_primitive_has_a_spec
fails until it exists.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

F64 = np.dtype(np.float64)


@dataclasses.dataclass(frozen=True)
class Case:
    """Operands (NumPy arrays) and static params for one application of a primitive."""

    operands: tuple
    params: dict

    def __repr__(self):
        ops = ", ".join(f"{np.asarray(a).dtype}{list(np.shape(a))}={np.asarray(a).tolist()!r}"
                        for a in self.operands)
        return f"Case(operands=[{ops}], params={self.params!r})"


@dataclasses.dataclass
class Spec:
    """How to exercise one differentiable primitive.

    apply(prim, operands, params) -> output(s): defaults to prim.bind(*operands, **params); linalg
    specs wrap the primitive (symmetrize an input, fix eigenvector signs) to make it well posed.
    second_order: True, or a string saying why grad-of-grad is not checked.
    weight: draw `weight` times the default number of examples (primitives with many params).
    axis_name: for collectives (psum, ...): operands carry a leading axis of lanes, and the
      primitive and every transform of it run per lane under fg.vmap(..., axis_name=axis_name).
    frozen: indices of float operands held fixed (the scales of a quantized weight: the
      primitive gives them no derivative, by design).
    """

    name: str
    cases: st.SearchStrategy
    apply: Callable | None = None
    second_order: bool | str = True
    eps: float = 1e-6
    rtol: float = 1e-5
    atol: float = 1e-6
    dot_rtol: float = 1e-10
    weight: int = 1
    axis_name: str | None = None
    frozen: tuple = ()  # operands that are data, never differentiated (a quantized weight's)
    complex: bool = False  # operands are complex128: the complex rules are checked
    forward_mode: bool | str = True  # or why forward mode raises by design (checked to raise)


@dataclasses.dataclass
class NonDiff:
    """A primitive with no derivative: `reason` says why; `cases` (or None when it takes no array
    operands) draws operands to check that its rules give zero tangents and cotangents."""

    name: str
    reason: str
    cases: st.SearchStrategy | None = None
    raises: type | None = None  # derivative not implemented: the rules raise this instead


SPECS: dict[str, Spec] = {}
NONDIFF: dict[str, NonDiff] = {}


def spec(name, cases, **kw):
    assert name not in SPECS and name not in NONDIFF, name
    SPECS[name] = Spec(name, cases, **kw)


def nondiff(name, reason, cases=None, raises=None):
    assert name not in SPECS and name not in NONDIFF, name
    NONDIFF[name] = NonDiff(name, reason, cases, raises)


def complex_spec(name, cases, **kw):
    """A spec drawing complex128 operands, under the key '<name>[complex]'."""
    key = f"{name}[complex]"
    assert key not in SPECS, key
    SPECS[key] = Spec(name, cases, complex=True, **kw)


def complex_nondiff(name, cases):
    """Complex cases for a NonDiff entry (checked for zero derivatives like the real ones)."""
    entry = NONDIFF[name]
    NONDIFF[f"{name}[complex]"] = NonDiff(name, entry.reason, cases, entry.raises)


# ---------------------------------------------------------------------------------------------
# Building blocks: shapes and arrays

def shapes(min_dims=0, max_dims=3, min_side=1, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def floats(shape, lo=-2.0, hi=2.0):
    """float64 arrays with elements in [lo, hi]."""
    return hnp.arrays(F64, shape, elements=st.floats(lo, hi, allow_nan=False,
                                                     allow_infinity=False, allow_subnormal=False))


def signed(shape, lo, hi):
    """float64 arrays with |elements| in [lo, hi], either sign: away from 0."""
    mag = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    return hnp.arrays(F64, shape, elements=st.tuples(st.booleans(), mag).map(
        lambda t: -t[1] if t[0] else t[1]))


def off_grid(shape, lo=-3, hi=3, offset=0.0, margin=0.1):
    """float64 arrays of k + offset + f with integer k and f in [margin, 1 - margin]: away from the
    grid k + offset (integers for floor/ceil, half-integers for round)."""
    el = st.tuples(st.integers(lo, hi), st.floats(margin, 1 - margin)).map(
        lambda t: t[0] + offset + t[1])
    return hnp.arrays(F64, shape, elements=el)


def distinct(shape, spacing=0.1):
    """float64 arrays of pairwise distinct values at least `spacing` apart (no ties for max,
    sort, cummax: their derivative is the derivative of the winner)."""
    size = int(np.prod(shape, dtype=np.int64))
    span = max(2 * size, 20)
    return hnp.arrays(np.int64, shape, elements=st.integers(-span, span), unique=True).map(
        lambda a: (a * spacing + spacing / 3).astype(F64))


def cfloats(shape, lo=-2.0, hi=2.0, im_lo=None, im_hi=None):
    """complex128 arrays with real parts in [lo, hi] and imaginary parts in [im_lo, im_hi]
    (default: the same range)."""
    im_lo = lo if im_lo is None else im_lo
    im_hi = hi if im_hi is None else im_hi
    return st.tuples(floats(shape, lo, hi), floats(shape, im_lo, im_hi)).map(
        lambda t: t[0] + 1j * t[1])


def cmagnitude(shape, lo, hi):
    """complex128 arrays with |elements| in [lo, hi] and any phase: away from 0."""
    el = st.tuples(st.floats(lo, hi), st.floats(-3.1, 3.1)).map(
        lambda t: complex(t[0] * np.cos(t[1]), t[0] * np.sin(t[1])))
    return hnp.arrays(np.complex128, shape, elements=el)


def with_imag(a):
    """A float64 array made complex128 by a smooth, deterministic imaginary part of size <= 0.5
    (keeps what the real strategy guarantees about the real parts: distinct values, ranges)."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        return a
    phase = 1.7 * a + 0.3 * np.arange(a.size, dtype=np.float64).reshape(a.shape)
    return a + 0.5j * np.cos(phase)


def complexified(cases, which=None):
    """A Case strategy whose float operands (those at positions `which`, default all) become
    complex (with_imag)."""
    def convert(case):
        ops = tuple(with_imag(a) if which is None or i in which else a
                    for i, a in enumerate(case.operands))
        return Case(ops, case.params)
    return cases.map(convert)


def ints(shape, lo, hi, dtype=np.int32):
    return hnp.arrays(np.dtype(dtype), shape, elements=st.integers(lo, hi))


def scalar_f64(lo=-2.0, hi=2.0):
    return floats((), lo, hi)


def subset(n, min_size=0):
    """A sorted tuple of distinct axes of range(n)."""
    if n == 0:
        return st.just(())
    return st.lists(st.integers(0, n - 1), min_size=min(min_size, n), max_size=n,
                    unique=True).map(lambda a: tuple(sorted(a)))


# ---------------------------------------------------------------------------------------------
# Elementwise unary

def unary_case(values):
    return shapes().flatmap(values).map(lambda x: Case((x,), {}))


def _range(lo, hi):
    return lambda s: floats(s, lo, hi)


def _away_from_zero(lo, hi):
    return lambda s: signed(s, lo, hi)


for _name, _vals in {
    "neg": _range(-2, 2),
    "exp": _range(-3, 3),
    "exp2": _range(-3, 3),
    "log": _range(0.2, 4),
    "log1p": _range(-0.8, 3),
    "expm1": _range(-3, 3),
    "sin": _range(-3, 3),
    "cos": _range(-3, 3),
    "tan": _range(-1.2, 1.2),
    "asin": _range(-0.9, 0.9),
    "acos": _range(-0.9, 0.9),
    "atan": _range(-3, 3),
    "sinh": _range(-3, 3),
    "cosh": _range(-3, 3),
    "tanh": _range(-3, 3),
    "asinh": _range(-3, 3),
    "acosh": _range(1.1, 4),
    "atanh": _range(-0.9, 0.9),
    "sqrt": _range(0.2, 4),
    "square": _range(-2, 2),
    "rsqrt": _range(0.2, 4),
    "cbrt": _away_from_zero(0.2, 3),
    "logistic": _range(-4, 4),
    "erf": _range(-2.5, 2.5),
    "erf_inv": _range(-0.9, 0.9),
    "abs": _away_from_zero(0.1, 3),  # kink at 0
}.items():
    spec(_name, unary_case(_vals))

spec("integer_pow", st.tuples(shapes(), st.integers(-3, 5)).flatmap(
    lambda t: signed(t[0], 0.3, 2).map(lambda x: Case((x,), {"y": t[1]}))))

_PIECEWISE_CONSTANT = "piecewise constant: its derivative is zero wherever it exists"
nondiff("sign", _PIECEWISE_CONSTANT, unary_case(_away_from_zero(0.1, 3)))
nondiff("floor", _PIECEWISE_CONSTANT, unary_case(lambda s: off_grid(s)))
nondiff("ceil", _PIECEWISE_CONSTANT, unary_case(lambda s: off_grid(s)))
nondiff("round", _PIECEWISE_CONSTANT, unary_case(lambda s: off_grid(s, offset=0.5)))
nondiff("is_finite", "boolean output", unary_case(
    lambda s: hnp.arrays(F64, s, elements=st.floats(allow_subnormal=False))))
nondiff("not", "bitwise: integer or boolean operands", st.one_of(
    unary_case(lambda s: ints(s, -100, 100)), unary_case(lambda s: hnp.arrays(bool, s))))
nondiff("stop_gradient", "the identity with a zero derivative by definition",
        unary_case(_range(-2, 2)))


# ---------------------------------------------------------------------------------------------
# Elementwise binary: equal shapes, or one operand of rank 0 broadcast against the other

def _binary_shapes():
    """(x_shape, y_shape): equal, or one of them ()."""
    return st.tuples(shapes(), st.sampled_from(["same", "x_scalar", "y_scalar"])).map(
        lambda t: (t[0], t[0]) if t[1] == "same" else ((), t[0]) if t[1] == "x_scalar"
        else (t[0], ()))


def binary_case(xs, ys):
    """xs(shape), ys(shape): strategies for each operand."""
    return _binary_shapes().flatmap(
        lambda s: st.tuples(xs(s[0]), ys(s[1])).map(lambda ab: Case(ab, {})))


def _rem_case():
    # fmod jumps where x / y is an integer: draw q = x / y = k + f with f in [0.1, 0.9].
    def build(s):
        x_shape, y_shape = s
        out_shape = x_shape if x_shape else y_shape
        q = off_grid(out_shape, -3, 3)
        if x_shape == () and y_shape != ():
            return st.tuples(signed((), 0.5, 2), q).map(lambda t: Case((t[0], t[0] / t[1]), {}))
        return st.tuples(signed(y_shape, 0.5, 2), q).map(lambda t: Case((t[0] * t[1], t[0]), {}))
    return _binary_shapes().flatmap(build)


def _separated_case():
    # max/min: |x - y| >= 0.1 everywhere, so there are no ties.
    def build(s):
        x_shape, y_shape = s
        out_shape = x_shape if x_shape else y_shape
        if x_shape == () or y_shape == ():
            base_shape = ()
        else:
            base_shape = out_shape
        gap = signed(out_shape, 0.1, 2)

        def make(t):
            base, g = t
            other = base + g
            if x_shape == ():
                return Case((base, other), {})
            if y_shape == ():
                return Case((other, base), {})
            return Case((base, other), {})
        return st.tuples(floats(base_shape), gap).map(make)
    return _binary_shapes().flatmap(build)


spec("add", binary_case(floats, floats))
spec("sub", binary_case(floats, floats))
spec("mul", binary_case(floats, floats))
spec("div", binary_case(floats, lambda s: signed(s, 0.5, 2)))
spec("rem", _rem_case())
spec("pow", binary_case(lambda s: floats(s, 0.3, 2.5), lambda s: floats(s, -2, 2)))
spec("max", _separated_case())
spec("min", _separated_case())
# atan2(x, y) jumps across x = 0 for y < 0: keep x away from 0.
spec("atan2", binary_case(lambda s: signed(s, 0.2, 2), floats))

_COMPARISON = "comparison: boolean output"
_BITWISE = "bitwise: integer or boolean operands"
for _name in ["eq", "ne", "lt", "le", "gt", "ge"]:
    nondiff(_name, _COMPARISON, st.one_of(binary_case(floats, floats),
                                          binary_case(lambda s: ints(s, -3, 3),
                                                      lambda s: ints(s, -3, 3))))
for _name in ["and", "or", "xor"]:
    nondiff(_name, _BITWISE, st.one_of(
        binary_case(lambda s: ints(s, -100, 100), lambda s: ints(s, -100, 100)),
        binary_case(lambda s: hnp.arrays(bool, s), lambda s: hnp.arrays(bool, s))))
for _name in ["shift_left", "shift_right_logical", "shift_right_arithmetic"]:
    nondiff(_name, _BITWISE + " (shifts)",
            binary_case(lambda s: ints(s, -1000, 1000), lambda s: ints(s, 0, 40)))
nondiff("nextafter", "steps to the adjacent float: piecewise constant in y, no useful derivative",
        binary_case(floats, floats))


def _threefry_case():
    """Keys and counters (uint32) that broadcast together: each of the full shape, a trailing
    part of it, or a scalar."""
    def build(shape):
        def operand():
            return st.integers(0, len(shape)).flatmap(
                lambda k: ints(shape[k:], 0, 2 ** 32 - 1, np.uint32))
        return st.tuples(*[operand() for _ in range(4)]).map(lambda ops: Case(ops, {}))
    return shapes(0, 3).flatmap(build)


nondiff("threefry2x32", "a hash of uint32 words: integer operands and outputs", _threefry_case())


def _threefry_iota_case():
    """Keys of one shape (or a key and a scalar), counters from 0, or across 2**32."""
    return st.tuples(shapes(0, 2), shapes(0, 2), st.booleans(),
                     st.sampled_from([0, 5, 2 ** 32 - 3])).flatmap(
        lambda t: st.tuples(ints(t[0], 0, 2 ** 32 - 1, np.uint32),
                            ints(t[0] if t[2] else (), 0, 2 ** 32 - 1, np.uint32)).map(
            lambda ks: Case(ks, {"shape": t[1], "start": t[3]})))


nondiff("threefry2x32_iota", "a hash of uint32 counters: integer keys and outputs",
        _threefry_iota_case())


# ---------------------------------------------------------------------------------------------
# select_n, convert_element_type

def _select_n_case():
    def build(t):
        shape, n, scalar_pred = t
        pshape = () if scalar_pred else shape
        pred = hnp.arrays(bool, pshape) if n <= 2 else ints(pshape, 0, n - 1)
        return st.tuples(pred, *[floats(shape) for _ in range(n)]).map(
            lambda ops: Case(tuple(ops), {}))
    return st.tuples(shapes(), st.integers(1, 3), st.booleans()).flatmap(build)


spec("select_n", _select_n_case(), weight=2)
spec("convert_element_type", st.tuples(shapes(), st.booleans()).flatmap(
    lambda t: floats(t[0]).map(
        lambda x: Case((x,), {"new_dtype": F64, "weak_type": t[1]}))))
# float64 -> float32: rounding to float32 needs a larger step and looser tolerances.
SPECS["convert_element_type_f32"] = Spec(
    "convert_element_type", shapes().flatmap(floats).map(
        lambda x: Case((x,), {"new_dtype": np.dtype(np.float32), "weak_type": False})),
    eps=1e-2, rtol=1e-4, atol=1e-4, dot_rtol=1e-6)



def _bitcast_case():
    """float64 bits read as a type of the same width, a narrower one (a trailing axis of pieces)
    or, from pieces, a wider one (the last axis consumed)."""
    same_or_narrower = shapes(0, 3).flatmap(floats).flatmap(lambda x: st.sampled_from(
        [np.int64, np.uint64, np.uint32, np.int16, np.uint8]).map(
        lambda dt: Case((x,), {"new_dtype": np.dtype(dt)})))
    wider = shapes(0, 2).flatmap(lambda s: ints(s + (2,), -2 ** 31, 2 ** 31 - 1)).map(
        lambda x: Case((x,), {"new_dtype": np.dtype(np.int64)}))
    return st.one_of(same_or_narrower, wider)


nondiff("bitcast_convert_type", "reinterprets bits: a zero derivative, as JAX's",
        _bitcast_case())

# ---------------------------------------------------------------------------------------------
# Structural primitives

def _broadcast_in_dim_case():
    def build(t):
        in_shape, n_new = t
        out_rank = len(in_shape) + n_new
        dims = (st.just(()) if out_rank == 0 else st.lists(
            st.integers(0, out_rank - 1), min_size=len(in_shape), max_size=len(in_shape),
            unique=True).map(lambda d: tuple(sorted(d))))
        return st.tuples(dims, st.lists(st.integers(1, 3), min_size=out_rank, max_size=out_rank),
                         floats(in_shape)).map(lambda u: _bcast_case(in_shape, *u))
    return st.tuples(shapes(0, 2, max_side=3), st.integers(0, 2)).flatmap(build)


def _bcast_case(in_shape, dims, sizes, x):
    out = list(sizes)
    for i, d in enumerate(dims):
        if in_shape[i] != 1:
            out[d] = in_shape[i]
    return Case((x,), {"shape": tuple(out), "broadcast_dimensions": dims})


spec("broadcast_in_dim", _broadcast_in_dim_case(), weight=2)


def _factor_shapes(n):
    """Shapes with n elements."""
    factors, k, m = [], 2, n
    while m > 1:
        while m % k == 0:
            factors.append(k)
            m //= k
        k += 1
    return st.permutations(factors).flatmap(
        lambda fs: st.lists(st.integers(0, 2), min_size=len(fs) + 1, max_size=len(fs) + 1).map(
            lambda ones: _group(fs, ones)))


def _group(fs, ones):
    # Interleave runs of 1s (ones[i] of them before factor i) with the factors, merging pairs.
    out = []
    for i, f in enumerate(fs):
        out += [1] * (ones[i] % 2)
        if out and ones[i] == 2 and out[-1] != 1:
            out[-1] *= f
        else:
            out.append(f)
    out += [1] * (ones[-1] % 2)
    return tuple(out)


spec("reshape", shapes().flatmap(lambda s: st.tuples(floats(s), _factor_shapes(
    int(np.prod(s, dtype=np.int64))))).map(lambda t: Case((t[0],), {"new_sizes": t[1]})), weight=2)
spec("transpose", shapes().flatmap(lambda s: st.tuples(floats(s), st.permutations(
    range(len(s))))).map(lambda t: Case((t[0],), {"permutation": tuple(t[1])})))


def _squeeze_case():
    def build(t):
        base, where, pick = t
        shape = list(base)
        for w in sorted(where):
            shape.insert(min(w, len(shape)), 1)
        ones = [i for i, s in enumerate(shape) if s == 1]
        chosen = tuple(sorted({ones[p % len(ones)] for p in pick}))
        return floats(tuple(shape)).map(lambda x: Case((x,), {"dimensions": chosen}))
    return st.tuples(shapes(0, 2), st.lists(st.integers(0, 3), min_size=1, max_size=2),
                     st.lists(st.integers(0, 3), min_size=1, max_size=3)).flatmap(build)


spec("squeeze", _squeeze_case(), weight=2)
spec("expand_dims", st.tuples(shapes(0, 2), st.integers(1, 2)).flatmap(
    lambda t: st.tuples(floats(t[0]), st.lists(st.integers(0, len(t[0]) + t[1] - 1),
                                               min_size=t[1], max_size=t[1], unique=True))
).map(lambda t: Case((t[0],), {"dimensions": tuple(sorted(t[1]))})))
spec("name", shapes().flatmap(floats).map(lambda x: Case((x,), {"name": "h"})))  # identity
spec("rev", shapes(1, 3).flatmap(lambda s: st.tuples(floats(s), subset(len(s), 1))).map(
    lambda t: Case((t[0],), {"dimensions": t[1]})))


def _reduce_case(values):
    return shapes(0, 3).flatmap(lambda s: st.tuples(values(s), subset(len(s)))).map(
        lambda t: Case((t[0],), {"axes": t[1]}))


spec("reduce_sum", _reduce_case(floats))
spec("reduce_max", _reduce_case(distinct), weight=2)
spec("reduce_min", _reduce_case(distinct), weight=2)
# Exact zeros are drawn on purpose: the rule must not divide by x.
spec("reduce_prod", _reduce_case(lambda s: floats(s, -1.5, 1.5)), weight=2)


def _arg_case():
    return shapes(1, 3).flatmap(lambda s: st.tuples(
        distinct(s), st.integers(0, len(s) - 1),
        st.sampled_from([np.dtype(np.int32), np.dtype(np.int64)]))).map(
        lambda t: Case((t[0],), {"axis": t[1], "index_dtype": t[2]}))


nondiff("argmax", "integer output (an index)", _arg_case())
nondiff("argmin", "integer output (an index)", _arg_case())


def _dot_general_case():
    # Axis kinds: batch, contracting, lhs-free, rhs-free; each side lays its axes out in a random
    # order, so dimension_numbers are not sorted and the transposes in the VJP rule are exercised.
    def build(t):
        nb, nc, nlf, nrf = t
        sizes = st.lists(st.integers(1, 3), min_size=nb + nc + nlf + nrf,
                         max_size=nb + nc + nlf + nrf)
        lhs_axes = [("b", i) for i in range(nb)] + [("c", i) for i in range(nc)] + [
            ("l", i) for i in range(nlf)]
        rhs_axes = [("b", i) for i in range(nb)] + [("c", i) for i in range(nc)] + [
            ("r", i) for i in range(nrf)]
        return st.tuples(sizes, st.permutations(lhs_axes), st.permutations(rhs_axes)).flatmap(
            lambda u: _dot_operands(nb, nc, nlf, *u))
    return st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(0, 2),
                     st.integers(0, 2)).filter(lambda t: sum(t) <= 5).flatmap(build)


def _dot_operands(nb, nc, nlf, sizes, lhs_axes, rhs_axes):
    offset = {"b": 0, "c": nb, "l": nb + nc, "r": nb + nc + nlf}
    size = {ax: sizes[offset[ax[0]] + ax[1]] for ax in set(lhs_axes) | set(rhs_axes)}
    lshape = tuple(size[a] for a in lhs_axes)
    rshape = tuple(size[a] for a in rhs_axes)
    lc = tuple(lhs_axes.index(("c", i)) for i in range(nc))
    rc = tuple(rhs_axes.index(("c", i)) for i in range(nc))
    lb = tuple(lhs_axes.index(("b", i)) for i in range(nb))
    rb = tuple(rhs_axes.index(("b", i)) for i in range(nb))
    params = {"dimension_numbers": ((lc, rc), (lb, rb)), "preferred_element_type": None}
    return st.tuples(floats(lshape), floats(rshape)).map(lambda ab: Case(ab, params))


spec("dot_general", _dot_general_case(), weight=3)


def _slice_case():
    def axis(s):
        return st.tuples(st.integers(0, s), st.integers(0, s), st.integers(1, 3)).map(
            lambda t: (min(t[0], t[1]), max(t[0], t[1]), t[2]))

    def build(shape):
        return st.tuples(floats(shape), st.tuples(*[axis(s) for s in shape]),
                         st.booleans()).map(lambda t: Case((t[0],), {
                             "start_indices": tuple(a[0] for a in t[1]),
                             "limit_indices": tuple(a[1] for a in t[1]),
                             "strides": None if t[2] else tuple(a[2] for a in t[1])}))
    return shapes(1, 3, max_side=5).flatmap(build)


spec("slice", _slice_case(), weight=3)


def _pad_case():
    # Negative low/high crop; interior padding inserts values between elements.
    def build(shape):
        cfg = st.tuples(*[st.tuples(st.integers(-2, 2), st.integers(-2, 2), st.integers(0, 2))
                          for _ in shape]).filter(
            lambda c: all(lo + hi + s + max(s - 1, 0) * it >= 0
                          for s, (lo, hi, it) in zip(shape, c)))
        return st.tuples(floats(shape), scalar_f64(), cfg).map(
            lambda t: Case((t[0], t[1]), {"padding_config": t[2]}))
    return shapes(1, 3).flatmap(build)


spec("pad", _pad_case(), weight=3)


def _concatenate_case():
    def build(t):
        shape, n, dim_pick, sizes = t
        dim = dim_pick % len(shape)
        shs = []
        for k in range(n):
            s = list(shape)
            s[dim] = sizes[k]
            shs.append(tuple(s))
        return st.tuples(*[floats(s) for s in shs]).map(
            lambda ops: Case(tuple(ops), {"dimension": dim}))
    return st.tuples(shapes(1, 3), st.integers(1, 3), st.integers(0, 2),
                     st.lists(st.integers(1, 3), min_size=3, max_size=3)).flatmap(build)


spec("concatenate", _concatenate_case(), weight=2)
nondiff("iota", "takes no array operands; integer output",
        st.just(Case((), {"dtype": np.dtype(np.int32), "shape": (2, 3), "dimension": 1})))


# ---------------------------------------------------------------------------------------------
# Indexing: gather / scatter (indices of shape batch + (k,)), dynamic slices, cumulative
# reductions, sort

_INDEX_DTYPES = st.sampled_from([np.dtype(np.int32), np.dtype(np.int64)])


def _index_array(batch, dims, dtype, lo_pad=1, hi_pad=1):
    """Indices of shape batch + (len(dims),): column i in [-lo_pad, dims[i] - 1 + hi_pad], so a
    few are out of range (gather clamps them, scatter drops them)."""
    cols = [ints(batch, -lo_pad, d - 1 + hi_pad, dtype) for d in dims]
    return st.tuples(*cols).map(
        lambda cs: np.stack(cs, axis=-1).astype(dtype) if cs
        else np.zeros(tuple(batch) + (0,), dtype))


def _unique_indices(batch_size, dims, dtype):
    """batch_size distinct in-range index tuples (scatter_mul's derivative assumes unique ones)."""
    total = int(np.prod(dims, dtype=np.int64))
    return st.permutations(range(total)).map(
        lambda p: np.stack(np.unravel_index(np.asarray(p[:batch_size], np.int64), dims),
                           axis=-1).astype(dtype).reshape(batch_size, len(dims)))


def _gather_case():
    def build(t):
        shape, k_pick, batch, dtype = t
        k = k_pick % (len(shape) + 1)
        return st.tuples(floats(shape), _index_array(batch, shape[:k], dtype)).map(
            lambda ops: Case(ops, {}))
    return st.tuples(shapes(1, 3), st.integers(0, 3), shapes(0, 2, max_side=3),
                     _INDEX_DTYPES).flatmap(build)


def _scatter_case(kind):
    """kind: 'any' (duplicates and out-of-range indices), 'unique' (distinct in-range indices),
    'distinct' (duplicates allowed, but operand and update values pairwise distinct: no ties)."""
    def build(t):
        shape, k_pick, batch, dtype = t
        k = k_pick % (len(shape) + 1)
        dims = shape[:k]
        if kind == "unique":
            k = max(k, 1)
            dims = shape[:k]
            n = min(int(np.prod(batch, dtype=np.int64)), int(np.prod(dims, dtype=np.int64)))
            batch = (n,)
            idx = _unique_indices(n, dims, dtype)
        else:
            idx = _index_array(batch, dims, dtype)
        upd_shape = tuple(batch) + tuple(shape[k:])
        if kind == "distinct":
            n_op = int(np.prod(shape, dtype=np.int64))
            vals = distinct((n_op + int(np.prod(upd_shape, dtype=np.int64)),)).map(
                lambda v: (v[:n_op].reshape(shape), v[n_op:].reshape(upd_shape)))
        else:
            vals = st.tuples(floats(shape), floats(upd_shape))
        return st.tuples(vals, idx).map(lambda u: Case((u[0][0], u[1], u[0][1]), {}))
    return st.tuples(shapes(1, 3), st.integers(0, 3), shapes(1, 2, max_side=3),
                     _INDEX_DTYPES).flatmap(build)


spec("gather", _gather_case(), weight=3)
spec("scatter", _scatter_case("any"), weight=3)
spec("scatter_add", _scatter_case("any"), weight=3)
spec("scatter_mul", _scatter_case("unique"), weight=2)
spec("scatter_min", _scatter_case("distinct"), weight=2)
spec("scatter_max", _scatter_case("distinct"), weight=2)


def _starts(shape, dtype):
    # Out-of-range starts are clamped so that the slice fits.
    return st.tuples(*[st.integers(-2, n + 1).map(lambda i: np.asarray(i, dtype))
                       for n in shape])


def _dynamic_slice_case():
    def build(t):
        shape, dtype = t
        sizes = st.tuples(*[st.integers(0, n) for n in shape])
        return st.tuples(floats(shape), _starts(shape, dtype), sizes).map(
            lambda u: Case((u[0],) + u[1], {"slice_sizes": u[2]}))
    return st.tuples(shapes(1, 3), _INDEX_DTYPES).flatmap(build)


def _dynamic_update_slice_case():
    def build(t):
        shape, dtype = t
        return st.tuples(*[st.integers(0, n) for n in shape]).flatmap(
            lambda us: st.tuples(floats(shape), floats(us), _starts(shape, dtype))).map(
            lambda u: Case((u[0], u[1]) + u[2], {}))
    return st.tuples(shapes(1, 3), _INDEX_DTYPES).flatmap(build)


spec("dynamic_slice", _dynamic_slice_case(), weight=2)
spec("dynamic_update_slice", _dynamic_update_slice_case(), weight=2)


def _cumulative_case(values):
    return shapes(1, 3).flatmap(lambda s: st.tuples(
        values(s), st.integers(0, len(s) - 1), st.booleans())).map(
        lambda t: Case((t[0],), {"axis": t[1], "reverse": t[2]}))


spec("cumsum", _cumulative_case(floats))
# Exact zeros are drawn on purpose: the rules must not divide by x.
spec("cumprod", _cumulative_case(lambda s: floats(s, -1.5, 1.5)), weight=2)
spec("cummax", _cumulative_case(distinct), weight=2)
spec("cummin", _cumulative_case(distinct), weight=2)
spec("cumlogsumexp", _cumulative_case(lambda s: floats(s, -3, 3)), weight=2)


def _sort_case():
    # The first float key has distinct values, so no perturbation reorders ties. With several
    # keys the first is an integer key full of ties (held fixed), so the next key breaks them.
    def build(t):
        shape, n_ops, num_keys_pick, dim_pick = t
        num_keys = 1 + num_keys_pick % n_ops
        ops = []
        if num_keys >= 2:
            ops.append(ints(shape, 0, 2))
        ops.append(distinct(shape))
        while len(ops) < n_ops:
            ops.append(floats(shape))
        return st.tuples(*ops).map(lambda o: Case(o, {
            "dimension": dim_pick % len(shape), "is_stable": True, "num_keys": num_keys}))
    return st.tuples(shapes(1, 3), st.integers(1, 3), st.integers(0, 2),
                     st.integers(0, 2)).flatmap(build)


spec("sort", _sort_case(), weight=3)


# ---------------------------------------------------------------------------------------------
# Collectives over a named axis: the operand has a leading axis of 2 or 3 lanes, mapped by
# fg.vmap(..., axis_name="lanes"), and the primitive applies to one lane's value.

LANES = "lanes"


class SameValueGroup:
    """Rank 0 of `size` processes that all hold the same value: binding a collective's axis to it
    runs the collective's process implementation on one lane's operand (psum_scatter has no
    other eager implementation: which block a lane keeps depends on the lane)."""

    rank = 0

    def __init__(self, size):
        self.size = size

    def allreduce(self, x, op="sum"):
        return x * self.size if op == "sum" else x

    def allgather(self, x):
        return [x] * self.size

    def reduce_scatter(self, x):
        return (x * self.size)[:x.shape[0] // self.size]


def _lanes_case(values, extra=lambda shape: st.just({})):
    return st.tuples(st.integers(2, 3), shapes(0, 2, max_side=3)).flatmap(
        lambda t: st.tuples(values((t[0],) + t[1]), extra(t[1]))).map(
        lambda u: Case((u[0],), {"axis_name": LANES, **u[1]}))


spec("psum", _lanes_case(floats), axis_name=LANES)
# Distinct across lanes, so that one lane wins each element.
spec("pmax", _lanes_case(distinct), axis_name=LANES)
spec("pmin", _lanes_case(distinct), axis_name=LANES)
spec("all_gather", _lanes_case(floats, lambda shape: st.integers(0, len(shape)).map(
    lambda a: {"axis": a})), axis_name=LANES)


def _scatter_case():
    """psum_scatter: the scattered dimension holds one block per lane (tiled: k elements each)."""
    def build(t):
        lanes, rest, pick, tiled, k = t
        d = pick % (len(rest) + 1)
        shape = rest[:d] + ((lanes * k) if tiled else lanes,) + rest[d:]
        return floats((lanes,) + shape).map(lambda x: Case(
            (x,), {"axis_name": LANES, "scatter_dimension": d, "tiled": tiled}))
    return st.tuples(st.integers(2, 3), shapes(0, 1, max_side=3), st.integers(0, 1),
                     st.booleans(), st.integers(1, 2)).flatmap(build)


spec("psum_scatter", _scatter_case(), axis_name=LANES)


# ---------------------------------------------------------------------------------------------
# Linear algebra: matrices or stacks of them, built well conditioned (diagonally dominant,
# positive definite, or with well separated eigen/singular values) from hypothesis-drawn floats

_BATCH = st.sampled_from([(), (2,)])


def _orthogonal(m):
    """An orthogonal matrix (or stack): the Q factor of a drawn matrix m plus a fixed generic one
    (hypothesis favours constant arrays, whose Q factors have special structure)."""
    n = m.shape[-1]
    generic = np.sin(np.arange(1.0, n * n + 1)).reshape(n, n)
    q, r = np.linalg.qr(m + generic)
    d = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
    return q * np.where(d == 0, 1.0, d)[..., None, :]


def _well_conditioned(batch, n, shift=3.0):
    """Random entries in [-1, 1] plus shift * I: diagonally dominant, far from singular."""
    return floats(tuple(batch) + (n, n), -1, 1).map(lambda m: m + shift * np.eye(n))


def _spd(batch, n):
    return floats(tuple(batch) + (n, n), -1, 1).map(
        lambda m: m @ np.swapaxes(m, -1, -2) / n + np.eye(n))


def _spread(batch, k, lo=0.5, gap=0.5):
    """(batch + (k,)) values, pairwise at least `gap` apart and at least `lo` (eigen/singular
    values whose derivatives divide by their differences)."""
    return hnp.arrays(F64, tuple(batch) + (k,), elements=st.floats(0, 0.3)).map(
        lambda j: lo + gap * np.arange(k)[::-1] + j)


def _signs_fixed(cols, *others):
    """Column signs of eigen/singular vectors are arbitrary: flip each column (and the matching
    column/row of `others`) so that its dot product with a fixed generic vector is positive.
    sign is locally constant, so this does not change derivatives, and it makes the finite
    differences well defined."""
    from funcgrad import lax
    from funcgrad.core.avals import numpy_dtype
    nb = cols.ndim - 2
    complex_cols = numpy_dtype(cols.dtype).kind == "c"
    r = np.sqrt(np.arange(2.0, cols.shape[-2] + 2)).astype(
        np.complex128 if complex_cols else np.float64)
    r = lax.broadcast_in_dim(r, cols.shape, (nb,))
    c = lax.reduce_sum(lax.mul(cols, r), (nb,))                  # (..., k)
    if complex_cols:
        # Complex vectors have an arbitrary phase: rotate each column so that c is real and
        # positive (the matching rows of `others` rotate back). Smooth, so the derivatives of
        # the fixed vectors are well defined and independent of the phase the rule picks.
        s = lax.mul(lax.conj(c), lax.rsqrt(lax.mul(c, lax.conj(c))))  # conj(c) / |c|
        back = lax.conj(s)
    else:
        s = back = lax.sign(c)
    col = lax.broadcast_in_dim(s, cols.shape, tuple(range(nb)) + (nb + 1,))
    return (lax.mul(cols, col),) + tuple(lax.mul(o, lax.broadcast_in_dim(
        back, o.shape, tuple(range(nb)) + (nb + d,))) for o, d in others)


def _solve_case():
    return st.tuples(_BATCH, st.integers(1, 3), st.integers(1, 3)).flatmap(
        lambda t: st.tuples(_well_conditioned(t[0], t[1]),
                            floats(tuple(t[0]) + (t[1], t[2])))).map(lambda ab: Case(ab, {}))


def _triangular_solve_case():
    return st.tuples(_BATCH, st.integers(1, 3), st.integers(1, 3), st.booleans(),
                     st.booleans()).flatmap(
        lambda t: st.tuples(_well_conditioned(t[0], t[1]), floats(tuple(t[0]) + (t[1], t[2])))
        .map(lambda ab: Case(ab, {"lower": t[3], "transpose_a": t[4]})))


def _eigh_case():
    def build(t):
        batch, n, lower = t
        return st.tuples(floats(tuple(batch) + (n, n), -1, 1), _spread(batch, n, lo=-1)).map(
            lambda u: Case((_sym(_orthogonal(u[0]), u[1]),), {"lower": lower}))
    return st.tuples(_BATCH, st.integers(1, 3), st.booleans()).flatmap(build)


def _sym(q, w):
    return (q * w[..., None, :]) @ np.swapaxes(q, -1, -2)


def _apply_eigh(prim, ops, params):
    w, v = prim.bind(*ops, **params)
    return (w,) + _signs_fixed(v)


def _svd_case():
    def build(t):
        batch, m, n, full, compute_uv = t
        k = min(m, n)
        full = full and m == n  # full_matrices of a non-square matrix has no derivative
        return st.tuples(floats(tuple(batch) + (m, m), -1, 1), floats(tuple(batch) + (n, n), -1, 1),
                         _spread(batch, k)).map(lambda u: Case(
                             (_orthogonal(u[0])[..., :, :k] * u[2][..., None, :]
                              @ np.swapaxes(_orthogonal(u[1])[..., :, :k], -1, -2),),
                             {"full_matrices": full, "compute_uv": compute_uv}))
    return st.tuples(_BATCH, st.integers(1, 3), st.integers(1, 3), st.booleans(),
                     st.booleans()).flatmap(build)


def _apply_svd(prim, ops, params):
    out = prim.bind(*ops, **params)
    if not params["compute_uv"]:
        return out
    u, s, vh = out
    u, vh = _signs_fixed(u, (vh, 0))
    return u, s, vh


spec("solve", _solve_case(), weight=2)
spec("triangular_solve", _triangular_solve_case(), weight=2)
# a = M M^T / n + I: positive definite; cholesky reads its lower triangle only.
spec("cholesky", st.tuples(_BATCH, st.integers(1, 3)).flatmap(lambda t: _spd(*t)).map(
    lambda a: Case((a,), {})), weight=2)
# The sign output is locally constant: its tangent is zero, as are its finite differences.
spec("slogdet", st.tuples(_BATCH, st.integers(1, 3)).flatmap(
    lambda t: st.tuples(_well_conditioned(*t), st.booleans())).map(
    lambda u: Case((u[0] * (-1 if u[1] else 1),), {})), weight=2)
spec("eigh", _eigh_case(), apply=_apply_eigh, weight=2)
spec("svd", _svd_case(), apply=_apply_svd, weight=3)
nondiff("qr", "derivative not implemented yet: its rules raise NotImplementedError",
        st.tuples(_BATCH, st.integers(1, 3), st.integers(1, 3), st.booleans()).flatmap(
            lambda t: floats(tuple(t[0]) + (t[1], t[2]))
            .map(lambda a: Case((a,), {"full_matrices": t[3]}))), raises=NotImplementedError)


def _hermitian_case():
    def build(t):
        batch, n, lower = t
        return st.tuples(cfloats(tuple(batch) + (n, n), -1, 1), _spread(batch, n, lo=-1)).map(
            lambda u: Case((_herm(_orthogonal(u[0]), u[1]),), {"lower": lower}))
    return st.tuples(_BATCH, st.integers(1, 3), st.booleans()).flatmap(build)


def _herm(q, w):
    return (q * w[..., None, :]) @ np.conj(np.swapaxes(q, -1, -2))


def _complex_svd_case():
    def build(t):
        batch, m, n, full, compute_uv = t
        k = min(m, n)
        full = full and m == n
        return st.tuples(cfloats(tuple(batch) + (m, m), -1, 1),
                         cfloats(tuple(batch) + (n, n), -1, 1), _spread(batch, k)).map(
            lambda u: Case((_orthogonal(u[0])[..., :, :k] * u[2][..., None, :]
                            @ np.swapaxes(_orthogonal(u[1])[..., :, :k], -1, -2),),
                           {"full_matrices": full, "compute_uv": compute_uv}))
    return st.tuples(_BATCH, st.integers(1, 3), st.integers(1, 3), st.booleans(),
                     st.booleans()).flatmap(build)


def _eig_case(values):
    """a = P diag(w) P^{-1} with well separated real w and a well-conditioned P (I plus a small
    drawn matrix): distinct eigenvalues, so their derivatives exist."""
    def build(t):
        batch, n = t
        return st.tuples(values(tuple(batch) + (n, n), -0.3, 0.3), _spread(batch, n, lo=-1)).map(
            lambda u: Case((_conjugated(np.eye(n) + u[0], u[1]),), {"compute_eigenvectors": False}))
    return st.tuples(_BATCH, st.integers(1, 3)).flatmap(build)


def _conjugated(p, w):
    return (p * w[..., None, :]) @ np.linalg.inv(p)


def _apply_eig(prim, ops, params):
    """The eigenvalues in a fixed (lexicographic) order: LAPACK's order is not a smooth function
    of the matrix."""
    from funcgrad import lax
    w = prim.bind(*ops, **params)[0]
    return (lax.sort(w, dimension=w.ndim - 1),)


_EIG_SECOND = "second derivatives need the eigenvectors' derivative, which raises (as in JAX)"
spec("eig", _eig_case(floats), apply=_apply_eig, weight=2, second_order=_EIG_SECOND)
complex_spec("eig", _eig_case(cfloats), apply=_apply_eig, weight=2, second_order=_EIG_SECOND)
NONDIFF["eig[eigenvectors]"] = NonDiff(
    "eig", "the derivative of eigenvectors is not implemented (as in JAX), only of eigenvalues",
    _eig_case(floats).map(lambda c: Case(c.operands, {"compute_eigenvectors": True})),
    raises=NotImplementedError)


# Hermitian positive definite: M M^H / n + I.
complex_spec("cholesky", st.tuples(_BATCH, st.integers(1, 3)).flatmap(
    lambda t: cfloats(tuple(t[0]) + (t[1], t[1]), -1, 1)).map(
    lambda m: Case((m @ np.conj(np.swapaxes(m, -1, -2)) / m.shape[-1] + np.eye(m.shape[-1]),),
                   {})), weight=2)
complex_spec("slogdet", complexified(SPECS["slogdet"].cases), weight=2)
complex_spec("eigh", _hermitian_case(), apply=_apply_eigh, weight=2)
complex_spec("svd", _complex_svd_case(), apply=_apply_svd, weight=3)
complex_nondiff("qr", complexified(NONDIFF["qr"].cases))


# ---------------------------------------------------------------------------------------------
# fft: 1 to 3 trailing axes (lengths up to 5, odd and even), with or without a batch axis in
# front. RFFT takes real operands; FFT, IFFT and IRFFT complex ones (their specs are complex).

def _fft_case(kind):
    from funcgrad.lax import FftType

    def build(t):
        lead, tail = t
        in_tail = tail[:-1] + (tail[-1] // 2 + 1,) if kind == "IRFFT" else tail
        values = floats if kind == "RFFT" else cfloats
        return values(tuple(lead) + tuple(in_tail)).map(
            lambda x: Case((x,), {"fft_type": FftType[kind], "fft_lengths": tuple(tail)}))
    return st.tuples(shapes(0, 1, max_side=3), shapes(1, 3, max_side=5)).flatmap(build)


spec("fft", _fft_case("RFFT"))
for _kind in ["FFT", "IFFT", "IRFFT"]:
    SPECS[f"fft[{_kind}]"] = Spec("fft", _fft_case(_kind), complex=True)


# ---------------------------------------------------------------------------------------------
# Complex operands (complex128): each primitive that accepts them, drawn inside the domain where
# it is holomorphic (away from branch cuts and poles) or, for structural and linear primitives,
# the real strategy with an imaginary part added (complexified).

for _name, _vals in {
    "neg": lambda s: cfloats(s),
    "exp": lambda s: cfloats(s),
    "exp2": lambda s: cfloats(s),
    "expm1": lambda s: cfloats(s),
    "log": lambda s: cfloats(s, 0.2, 3),           # cut: the negative real axis
    "log1p": lambda s: cfloats(s, -0.5, 3),        # cut: real axis below -1
    "sin": lambda s: cfloats(s, -2, 2, -1, 1),
    "cos": lambda s: cfloats(s, -2, 2, -1, 1),
    "tan": lambda s: cfloats(s, -1, 1, -1, 1),     # poles at +-pi/2
    "asin": lambda s: cfloats(s, -0.8, 0.8, -1, 1),  # cuts: real axis, |x| > 1
    "acos": lambda s: cfloats(s, -0.8, 0.8, -1, 1),
    "atan": lambda s: cfloats(s, -2, 2, -0.7, 0.7),  # cuts: imaginary axis, |y| > 1
    "sinh": lambda s: cfloats(s, -2, 2, -1, 1),
    "cosh": lambda s: cfloats(s, -2, 2, -1, 1),
    "tanh": lambda s: cfloats(s, -1, 1, -1, 1),    # poles at +-i pi/2
    "asinh": lambda s: cfloats(s, -2, 2, -0.7, 0.7),
    "acosh": lambda s: cfloats(s, 1.2, 3, -2, 2),  # cut: real axis below 1
    "atanh": lambda s: cfloats(s, -0.8, 0.8, -1, 1),
    "sqrt": lambda s: cfloats(s, 0.2, 3),
    "rsqrt": lambda s: cfloats(s, 0.2, 3),
    "logistic": lambda s: cfloats(s, -2, 2, -1, 1),  # poles at +-i pi
    "abs": lambda s: cmagnitude(s, 0.2, 3),        # kink at 0
    "real": lambda s: cfloats(s),
    "imag": lambda s: cfloats(s),
    "conj": lambda s: cfloats(s),
    "square": lambda s: cfloats(s),
}.items():
    complex_spec(_name, unary_case(_vals))
complex_spec("integer_pow", st.tuples(shapes(), st.integers(-3, 5)).flatmap(
    lambda t: cmagnitude(t[0], 0.3, 2).map(lambda x: Case((x,), {"y": t[1]}))))
complex_nondiff("sign", unary_case(lambda s: cmagnitude(s, 0.1, 3)))
# complex(x, y) takes real operands and gives a complex output.
spec("complex", binary_case(floats, floats))

complex_spec("add", binary_case(cfloats, cfloats))
complex_spec("sub", binary_case(cfloats, cfloats))
complex_spec("mul", binary_case(cfloats, cfloats))
complex_spec("div", binary_case(cfloats, lambda s: cmagnitude(s, 0.5, 2)))
complex_spec("pow", binary_case(lambda s: cfloats(s, 0.3, 2.5, -1, 1),
                                lambda s: cfloats(s, -1.5, 1.5, -1, 1)))
for _name in ["eq", "ne"]:
    complex_nondiff(_name, binary_case(cfloats, cfloats))
complex_spec("select_n", complexified(_select_n_case()), weight=2)
for _src, _dst in [(np.complex128, np.complex128), (np.float64, np.complex128),
                   (np.complex128, np.float64)]:
    SPECS[f"convert_element_type[{np.dtype(_src).name}->{np.dtype(_dst).name}]"] = Spec(
        "convert_element_type", shapes().flatmap(
            cfloats if _src == np.complex128 else floats).map(
            lambda x, d=_dst: Case((x,), {"new_dtype": np.dtype(d), "weak_type": False})),
        complex=True)
SPECS["convert_element_type[complex128->complex64]"] = Spec(
    "convert_element_type", shapes().flatmap(cfloats).map(
        lambda x: Case((x,), {"new_dtype": np.dtype(np.complex64), "weak_type": False})),
    eps=1e-2, rtol=1e-4, atol=1e-4, dot_rtol=1e-6, complex=True)

# Structural, indexing and linear primitives: the real cases with imaginary parts added.
for _key in ["broadcast_in_dim", "reshape", "transpose", "squeeze", "expand_dims", "name", "rev",
             "reduce_sum", "reduce_prod", "dot_general", "slice", "pad", "concatenate", "gather",
             "scatter", "scatter_add", "scatter_mul", "scatter_min", "scatter_max",
             "dynamic_slice", "dynamic_update_slice", "cumsum", "cumprod", "sort", "psum",
             "psum_scatter", "all_gather", "solve", "triangular_solve"]:
    _real = SPECS[_key]
    complex_spec(_real.name, complexified(_real.cases), weight=_real.weight,
                 axis_name=_real.axis_name, apply=_real.apply)


# ---------------------------------------------------------------------------------------------
# Control flow (funcgrad/lax/conditionals.py, while_loops.py, scans.py, remat.py): primitives
# holding sub-programs. The params (the traced bodies) are taken from a make_jaxpr of the public
# function on fixed shapes.

def _cf_params(prim_name, fn, *example):
    import funcgrad as fg
    closed = fg.make_jaxpr(fn)(*example)
    eqn = [e for e in closed.eqns if e.primitive.name == prim_name][-1]
    assert eqn.invars == closed.jaxpr.invars, (prim_name, eqn)
    return eqn.params


def _cf_specs():
    import funcgrad.numpy as fnp
    from funcgrad import lax
    from funcgrad.transforms.checkpoint import checkpoint

    def scan_fn(w, init, xs):
        return lax.scan(lambda c, x: (fnp.sin(c * w) + x, c * x), init, xs)
    scan_params = _cf_params("scan", scan_fn, 0.5, np.ones(3), np.ones((4, 3)))
    spec("scan", st.tuples(floats(()), floats((3,)), floats((4, 3))).map(
        lambda t: Case(t, scan_params)))

    def cond_fn(i, x, w):
        return lax.switch(i, [lambda x, w: fnp.sin(x) * w, lambda x, w: x * x + w], x, w)
    cond_params = _cf_params("cond", cond_fn, np.int32(0), np.ones(3), np.ones(3))
    spec("cond", st.tuples(ints((), 0, 1), floats((3,)), floats((3,))).map(
        lambda t: Case(t, cond_params)))

    def remat_fn(x, w):
        return checkpoint(lambda x, w: fnp.sin(x * w) * x)(x, w)
    remat_params = _cf_params("checkpoint", remat_fn, np.ones(3), np.ones(3))
    spec("checkpoint", st.tuples(floats((3,)), floats((3,))).map(
        lambda t: Case(t, remat_params)))

    def while_fn(n, x, k0):
        return lax.while_loop(lambda c: c[1] < n, lambda c: (fnp.sin(c[0]) * 1.2, c[1] + 1),
                              (x, k0))
    while_params = _cf_params("while", while_fn, np.int32(3), np.ones(3), np.int32(0))
    # operands: the cond's const n, then the carry (x, counter)
    spec("while", st.tuples(ints((), 0, 3), floats((3,)), st.just(np.int32(0))).map(
        lambda t: Case(t, while_params)), second_order="reverse mode raises by design")

    # Custom derivative rules (funcgrad/lax/custom_derivatives.py), with rules that are the true
    # derivatives, so that finite differences check that the rule is what is applied.
    import funcgrad as fg

    @fg.custom_jvp
    def sin_times(x, w):
        return fnp.sin(x) * w

    @sin_times.defjvp
    def sin_times_jvp(primals, tangents):
        (x, w), (tx, tw) = primals, tangents
        return sin_times(x, w), fnp.cos(x) * tx * w + fnp.sin(x) * tw

    jvp_params = _cf_params("custom_jvp_call", sin_times, np.ones(3), np.ones(3))
    spec("custom_jvp_call", st.tuples(floats((3,)), floats((3,))).map(
        lambda t: Case(t, jvp_params)))

    @fg.custom_vjp
    def cos_times(x, w):
        return fnp.cos(x) * w

    cos_times.defvjp(lambda x, w: (fnp.cos(x) * w, (x, w)),
                     lambda r, g: (-fnp.sin(r[0]) * r[1] * g, fnp.cos(r[0]) * g))
    vjp_params = _cf_params("custom_vjp_call", cos_times, np.ones(3), np.ones(3))
    spec("custom_vjp_call", st.tuples(floats((3,)), floats((3,))).map(
        lambda t: Case(t, vjp_params)),
        forward_mode="a custom_vjp rule is reverse-mode only: jvp raises, as in JAX")


_cf_specs()


# ---------------------------------------------------------------------------------------------
# Quantized weights (funcgrad/lax/quantized.py): the weight's arrays are data (frozen operands)

def _quantized_cases(kind, with_x=True):
    """(x, *weight arrays) for a weight [rows, cols] quantized by funcgrad.quant."""
    from funcgrad import quant

    def build(t):
        rows, cols, lead, layout, w = t
        q = quant.quantize_nf4(w) if kind == "nf4" else quant.quantize_int8(w, axis=rows % 2)
        arrays = ((q.packed, q.absmax, q.absmax_scale, q.absmax_offset) if kind == "nf4"
                  else (q.q, q.scale))
        meta = ({"shape": q.shape, "block_size": q.block_size} if kind == "nf4"
                else {"shape": q.shape, "axis": q.axis})
        return w, arrays, meta, lead, layout

    weights = st.tuples(st.integers(1, 5), st.sampled_from([32, 64, 96]), shapes(0, 2),
                        st.sampled_from(["in_out", "out_in"])).flatmap(
        lambda t: floats((t[0], t[1]), -1.0, 1.0).map(lambda w: t + (w,))).map(build)
    if with_x:
        return weights.flatmap(lambda b: floats(
            b[3] + ((b[2]["shape"][0] if b[4] == "in_out" else b[2]["shape"][1]),)).map(
            lambda x: Case((x,) + b[1], dict(b[2], layout=b[4]))))
    return weights


def _quantized_specs():
    for kind, n in (("nf4", 4), ("int8", 2)):
        spec(f"quantized_matmul_{kind}", _quantized_cases(kind), frozen=tuple(range(1, 1 + n)),
             rtol=1e-4, atol=1e-5)
        nondiff(f"dequantize_{kind}", "the weight's arrays are frozen data (codes and scales)",
                _quantized_cases(kind, with_x=False).map(
                    lambda b: Case(b[1], dict(b[2], dtype=np.dtype(np.float64)))))
        nondiff(f"quantized_take_{kind}", "integer ids and frozen weight arrays",
                _quantized_cases(kind, with_x=False).flatmap(lambda b: ints(
                    (3,), 0, b[2]["shape"][0] - 1).map(
                    lambda ids: Case((ids,) + b[1], dict(b[2], dtype=np.dtype(np.float64))))))


_quantized_specs()
