"""Optimization passes: each pass on small programs, asserting on the program it returns, on its
unchanged signature and values, and on the input program staying untouched."""

import contextlib

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lax
from funcgrad.backends import llvm_backend
from funcgrad.core import (
    ClosedJaxpr,
    Eqn,
    Jaxpr,
    Literal,
    Primitive,
    ShapedArray,
    Var,
    eval_jaxpr,
)
from funcgrad.transforms import fusion as F
from funcgrad.transforms import passes as P

rng = np.random.default_rng(0)


# ---------------------------------------------------------------------------------------------
# Helpers

class Builder:
    """Writes a program by hand (for literal broadcasts and the like, which tracing computes
    eagerly)."""

    def __init__(self):
        self.invars, self.eqns, self.constvars, self.consts = [], [], [], []

    def arg(self, shape, dtype=np.float32):
        v = Var(ShapedArray(shape, dtype))
        self.invars.append(v)
        return v

    def const(self, value):
        v = Var(ShapedArray(np.shape(value), np.asarray(value).dtype))
        self.constvars.append(v)
        self.consts.append(value)
        return v

    def __call__(self, prim, *ins, **params):
        out = prim.abstract_eval(*[a.aval for a in ins], **params)
        outs = [Var(a) for a in out] if prim.multiple_results else [Var(out)]
        self.eqns.append(Eqn(prim, ins, outs, params))
        return outs if prim.multiple_results else outs[0]

    def build(self, *outs):
        return ClosedJaxpr(Jaxpr(self.constvars, self.invars, outs, self.eqns), self.consts)


def lit(value, dtype=np.float32):
    return Literal(np.asarray(value, dtype), ShapedArray((), dtype))


def random_args(closed):
    out = []
    for a in closed.in_avals:
        if a.dtype.kind == "f":
            out.append(rng.normal(size=a.shape).astype(a.dtype))
        elif a.dtype.kind in "iu":
            out.append(rng.integers(-5, 5, size=a.shape).astype(a.dtype))
        else:
            out.append(rng.random(a.shape) < 0.5)
    return out


def run(closed, args):
    return eval_jaxpr(closed.jaxpr, closed.consts, *args)


def snapshot(closed):
    j = closed.jaxpr
    return (str(j), list(j.constvars), list(j.invars), list(j.outvars), list(j.eqns),
            [(list(e.invars), list(e.outvars), dict(e.params)) for e in j.eqns],
            [id(c) for c in closed.consts])


def check(pass_fn, closed, *args, **kwargs):
    """Apply a pass; check signature, trees, values, and that the input was not mutated."""
    before = snapshot(closed)
    out = pass_fn(closed, **kwargs)
    assert snapshot(closed) == before, "the pass mutated its input"
    assert out is not closed and out.jaxpr is not closed.jaxpr
    assert out.in_avals == closed.in_avals and out.out_avals == closed.out_avals
    assert out.in_tree == closed.in_tree and out.out_tree == closed.out_tree
    assert len(out.consts) == len(out.jaxpr.constvars)
    args = list(args) or random_args(closed)
    for a, b in zip(run(closed, args), run(out, args)):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(a, b)
    return out


def prims(closed):
    return [e.primitive.name for e in closed.eqns]


x34 = rng.normal(size=(3, 4)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# simplify

def test_mul_one_add_zero_vanish():
    closed = fg.make_jaxpr(lambda x: x * 1.0 + 0.0)(x34)
    assert prims(closed) == ["mul", "add"]
    out = check(P.simplify, closed)
    assert out.eqns == [] and out.jaxpr.outvars == out.jaxpr.invars


def test_one_on_the_left_and_sub_zero():
    closed = fg.make_jaxpr(lambda x: 1.0 * (x - 0.0))(x34)
    assert check(P.simplify, closed).eqns == []


def test_mul_zero_is_kept():
    closed = fg.make_jaxpr(lambda x: x * 0.0)(x34)
    x = x34.copy()
    x[0, 0] = np.inf
    with np.errstate(invalid="ignore"):
        assert prims(check(P.simplify, closed, x)) == ["mul"]


def test_zero_minus_x_is_neg():
    closed = fg.make_jaxpr(lambda x: 0.0 - x)(x34)
    assert prims(check(P.simplify, closed)) == ["neg"]


def test_add_broadcast_zeros_from_unused_cotangent():
    b = Builder()
    x = b.arg((3, 4))
    zeros = b(lax.broadcast_in_dim_p, lit(0.0), shape=(3, 4), broadcast_dimensions=())
    ones = b(lax.broadcast_in_dim_p, lit(1.0), shape=(3, 4), broadcast_dimensions=())
    y = b(lax.add_p, zeros, x)
    z = b(lax.mul_p, y, ones)
    out = check(P.simplify, b.build(z))
    assert out.jaxpr.outvars == [x]
    assert prims(P.dce(out)) == []


def test_add_of_zeros_that_change_the_shape_is_kept():
    b = Builder()
    s = b.arg(())
    zeros = b(lax.broadcast_in_dim_p, lit(0.0), shape=(3,), broadcast_dimensions=())
    y = b(lax.add_p, s, zeros)
    assert prims(check(P.simplify, b.build(y))) == ["broadcast_in_dim", "add"]


def test_constant_arrays_of_ones_and_zeros():
    b = Builder()
    x = b.arg((2, 3))
    ones = b.const(np.ones((2, 3), np.float32))
    zeros = b.const(np.zeros((2, 3), np.float32))
    twos = b.const(np.full((2, 3), 2, np.float32))
    y = b(lax.mul_p, ones, b(lax.add_p, x, zeros))
    z = b(lax.mul_p, y, twos)
    out = P.dce(check(P.simplify, b.build(z)))
    assert prims(out) == ["mul"] and out.consts == []  # the twos became a literal 2.0
    assert float(out.eqns[0].invars[1].val) == 2.0


def test_uniform_operands_become_rank0():
    b = Builder()
    x, s = b.arg((2, 3)), b.arg(())
    sb = b(lax.broadcast_in_dim_p, s, shape=(2, 3), broadcast_dimensions=())
    three = b(lax.broadcast_in_dim_p, lit(3.0), shape=(2, 3), broadcast_dimensions=())
    ramp = b.const(np.arange(6, dtype=np.float32).reshape(2, 3))
    y = b(lax.div_p, b(lax.sub_p, sb, x), three)
    z = b(lax.mul_p, y, ramp)
    out = P.dce(check(P.simplify, b.build(z)))
    assert prims(out) == ["sub", "div", "mul"]
    assert out.eqns[0].invars[0] is s and type(out.eqns[1].invars[1]) is Literal
    assert out.eqns[2].invars[1] is out.jaxpr.constvars[0]  # not uniform: kept


def test_uniform_operand_of_a_smaller_shape_becomes_rank0():
    b = Builder()
    x = b.arg((4, 1, 3))
    quarter = b.const(np.full((1, 3), 0.25, np.float32))  # broadcast against x by the mul
    out = P.dce(check(P.simplify, b.build(b(lax.mul_p, x, quarter))))
    assert prims(out) == ["mul"] and out.consts == []
    assert float(out.eqns[0].invars[1].val) == 0.25


@pytest.mark.parametrize("dims,perm", [
    ((((1,), (1,)), ((), ())), None),      # x @ I.T: x itself
    ((((1,), (0,)), ((), ())), None),      # x @ I
    ((((0,), (0,)), ((), ())), (1, 0)),    # x.T @ I: a transpose
])
def test_dot_with_a_constant_identity_is_a_reordering(dims, perm):
    b = Builder()
    x = b.arg((3, 3))
    eye = b.const(np.eye(3, dtype=np.float32))
    closed = b.build(b(lax.dot_general_p, x, eye, dimension_numbers=dims))
    out = P.dce(check(P.simplify, closed))
    assert prims(out) == ([] if perm is None else ["transpose"]) and out.consts == []
    # and on the left: I @ x contracts I's axis 1 with x's axis 0
    b = Builder()
    x = b.arg((3, 5))
    eye = b.const(np.eye(3, dtype=np.float32))
    closed = b.build(b(lax.dot_general_p, eye, x, dimension_numbers=(((1,), (0,)), ((), ()))))
    assert prims(P.dce(check(P.simplify, closed))) == []
    # not an identity: kept
    b = Builder()
    x = b.arg((3, 3))
    m = b.const(2 * np.eye(3, dtype=np.float32))
    closed = b.build(b(lax.dot_general_p, x, m, dimension_numbers=dims))
    assert prims(P.dce(check(P.simplify, closed))) == ["dot_general"]


def test_hessian_program_has_no_identity_matmul():
    X = rng.normal(size=(8, 3)).astype(np.float32)

    def loss(w):
        return fnp.mean(fg.nn.softplus(X @ w))
    w = rng.normal(size=3).astype(np.float32)
    low = fg.jit(fg.hessian(loss)).lower(w)
    assert str(low).count("dot_general") == 2  # X @ w and the final contraction
    s = 1 / (1 + np.exp(-(X @ w)))
    want = (X.T * (s * (1 - s))) @ X / len(X)
    np.testing.assert_allclose(fg.jit(fg.hessian(loss))(w), want, rtol=1e-5, atol=1e-6)


def test_neg_neg():
    closed = fg.make_jaxpr(lambda x: lax.neg(lax.neg(x)))(x34)
    out = check(P.simplify, closed)
    assert out.jaxpr.outvars == out.jaxpr.invars and P.dce(out).eqns == []
    closed = fg.make_jaxpr(lambda x: lax.neg(lax.neg(lax.neg(x))))(x34)
    assert prims(P.dce(check(P.simplify, closed))) == ["neg"]


def test_double_transpose():
    closed = fg.make_jaxpr(lambda x: x.T.T)(x34)
    assert prims(closed) == ["transpose", "transpose"]
    out = check(P.simplify, closed)
    assert out.jaxpr.outvars == out.jaxpr.invars and P.dce(out).eqns == []

    x = rng.normal(size=(2, 3, 4))
    closed = fg.make_jaxpr(lambda x: lax.transpose(lax.transpose(x, (1, 2, 0)), (1, 2, 0)))(x)
    out = P.dce(check(P.simplify, closed))
    assert prims(out) == ["transpose"]
    assert out.eqns[0].params["permutation"] == (2, 0, 1)
    np.testing.assert_array_equal(run(out, [x])[0], np.transpose(x, (2, 0, 1)))


def test_broadcast_of_broadcast():
    v = rng.normal(size=(3,))
    closed = fg.make_jaxpr(
        lambda v: lax.broadcast_in_dim(lax.broadcast_in_dim(v, (3, 1), (0,)), (2, 3, 5), (1, 2)))(v)
    out = P.dce(check(P.simplify, closed))
    assert prims(out) == ["broadcast_in_dim"]
    assert out.eqns[0].params["broadcast_dimensions"] == (1,)


def test_identity_broadcast_and_reshapes():
    b = Builder()
    x = b.arg((2, 6))
    y = b(lax.broadcast_in_dim_p, x, shape=(2, 6), broadcast_dimensions=(0, 1))
    r = b(lax.reshape_p, y, new_sizes=(2, 6))
    out = check(P.simplify, b.build(r))
    assert out.eqns == [] and out.jaxpr.outvars == [x]

    closed = fg.make_jaxpr(lambda x: x.reshape(3, 4).reshape(12))(rng.normal(size=(2, 6)))
    out = P.dce(check(P.simplify, closed))
    assert prims(out) == ["reshape"] and out.eqns[0].params["new_sizes"] == (12,)
    closed = fg.make_jaxpr(lambda x: x.reshape(3, 4).reshape(2, 6))(rng.normal(size=(2, 6)))
    assert P.dce(check(P.simplify, closed)).eqns == []


def test_converts():
    f32 = rng.normal(size=4).astype(np.float32)
    to = lax.convert_element_type
    closed = fg.make_jaxpr(lambda x: to(to(x, np.float64), np.float32))(f32)
    assert P.dce(check(P.simplify, closed)).eqns == []
    # lossy first step: both stay
    closed = fg.make_jaxpr(lambda x: to(to(x, np.float32), np.float64))(f32.astype(np.float64))
    assert prims(P.dce(check(P.simplify, closed))) == ["convert_element_type"] * 2
    big = np.array([2**62 + 1, -3], np.int64)
    closed = fg.make_jaxpr(lambda x: to(to(x, np.float64), np.int64))(big)
    assert len(P.dce(check(P.simplify, closed, big)).eqns) == 2
    # exact first step: one conversion from the source
    closed = fg.make_jaxpr(lambda x: to(to(x, np.float64), np.float16))(f32)
    out = P.dce(check(P.simplify, closed))
    assert prims(out) == ["convert_element_type"] and out.eqns[0].invars == out.jaxpr.invars
    i32 = np.array([1, -7, 2**30], np.int32)
    closed = fg.make_jaxpr(lambda x: to(to(x, np.float64), np.int32))(i32)
    assert P.dce(check(P.simplify, closed, i32)).eqns == []


def test_convert_to_own_dtype():
    b = Builder()
    x = b.arg((3,))
    y = b(lax.convert_element_type_p, x, new_dtype=np.dtype(np.float32), weak_type=False)
    w = b(lax.convert_element_type_p, x, new_dtype=np.dtype(np.float32), weak_type=True)
    out = check(P.simplify, b.build(y, w))
    assert out.jaxpr.outvars[0] is x and prims(out) == ["convert_element_type"]


def test_outvar_becomes_literal_and_repeated_outputs():
    b = Builder()
    x = b.arg((2,))
    two = b(lax.mul_p, lit(2.0), lit(1.0))
    y = b(lax.add_p, x, lit(0.0))
    out = check(P.simplify, b.build(two, y, y, x))
    assert out.eqns == []
    o = out.jaxpr.outvars
    assert type(o[0]) is Literal and float(o[0].val) == 2.0
    assert o[1] is x and o[2] is x and o[3] is x


def test_select_n_of_equal_cases_and_empty_reduce():
    b = Builder()
    p, x = b.arg((3,), np.bool_), b.arg((3,))
    y = b(lax.select_n_p, p, x, x)
    z = b(lax.reduce_sum_p, y, axes=())
    assert P.dce(check(P.simplify, b.build(z))).eqns == []


# ---------------------------------------------------------------------------------------------
# dce

def test_dce_removes_unused_results_keeps_signature():
    def f(x, unused):
        a = fnp.sin(x)
        fnp.exp(a)  # unused
        return fnp.cos(x)

    closed = fg.make_jaxpr(f)(x34, x34)
    out = check(P.dce, closed)
    assert prims(out) == ["cos"] and len(out.jaxpr.invars) == 2


def test_dce_drops_unused_constvars():
    c1, c2 = np.ones(3), np.arange(3.0)
    closed = fg.make_jaxpr(lambda x: (x + c1, (x * c2) * 0.0)[0])(np.ones(3))
    assert len(closed.consts) == 2
    out = check(P.dce, closed)
    assert prims(out) == ["add"] and len(out.consts) == 1 and out.consts[0] is c1


def test_dce_keeps_multiple_result_equations_with_one_used_output():
    closed = fg.make_jaxpr(lambda x: call(lambda x: [fnp.sin(x), fnp.cos(x)], x)[1])(x34)
    assert prims(check(P.dce, closed)) == ["test_call"]


def test_passes_on_bare_jaxprs():
    closed = fg.make_jaxpr(lambda x: (fnp.sin(x) * 1.0, fnp.cos(x) + fnp.cos(x))[1])(x34)
    out = P.dce(closed.jaxpr)
    assert isinstance(out, Jaxpr) and [e.primitive.name for e in out.eqns] == ["cos", "cos", "add"]
    for p in (P.inline, P.cse, P.fold_constants, P.simplify, P.optimize, F.fuse):
        assert isinstance(p(closed.jaxpr), Jaxpr)
    opt = P.optimize(closed.jaxpr)
    args = random_args(closed)
    np.testing.assert_array_equal(eval_jaxpr(opt, [], *args)[0], run(closed, args)[0])
    assert [e.primitive.name for e in opt.eqns] == ["cos", "add"]


# ---------------------------------------------------------------------------------------------
# cse

def test_cse_merges_identical_equations():
    closed = fg.make_jaxpr(lambda x: fnp.sin(x) + fnp.sin(x))(x34)
    out = P.dce(check(P.cse, closed))
    assert prims(out) == ["sin", "add"]
    assert out.eqns[1].invars[0] is out.eqns[1].invars[1]


def test_cse_literals_by_value_and_dtype_params_by_value():
    b = Builder()
    x = b.arg((3,))
    xi = b.arg((3,), np.int32)
    a1 = b(lax.mul_p, x, lit(2.0))
    a2 = b(lax.mul_p, x, lit(2.0))   # another Literal object, same value: merged
    a3 = b(lax.mul_p, x, lit(-2.0))  # other value: kept
    i1 = b(lax.mul_p, xi, lit(2, np.int32))
    c1 = b(lax.convert_element_type_p, x, new_dtype=np.dtype("float64"), weak_type=False)
    c2 = b(lax.convert_element_type_p, x, new_dtype=np.dtype("float64"), weak_type=False)
    c3 = b(lax.convert_element_type_p, x, new_dtype=np.dtype("float16"), weak_type=False)
    s1 = b(lax.reduce_sum_p, x, axes=(0,))
    s2 = b(lax.reduce_sum_p, x, axes=(0,))
    out = P.dce(check(P.cse, b.build(a1, a2, a3, i1, c1, c2, c3, s1, s2)))
    assert len(out.eqns) == 6
    o = out.jaxpr.outvars
    assert o[0] is o[1] and o[4] is o[5] and o[7] is o[8] and o[2] is not o[0]


def test_cse_skips_unhashable_params():
    weird = Primitive("weird", impl=lambda xp, x, *, table: x + table[0],
                      abstract_eval=lambda x, *, table: x)
    b = Builder()
    x = b.arg((2,))
    t = np.array([1.0], np.float32)
    y1 = b(weird, x, table=t)
    y2 = b(weird, x, table=t)
    assert len(check(P.cse, b.build(y1, y2)).eqns) == 2


def test_cse_merges_constvars_bound_to_the_same_array():
    c = np.arange(4.0)
    b = Builder()
    x = b.arg((4,), np.float64)
    k1, k2, k3 = b.const(c), b.const(c), b.const(np.arange(4.0))
    y = b(lax.add_p, b(lax.add_p, b(lax.mul_p, x, k1), b(lax.mul_p, x, k2)),
          b(lax.mul_p, x, k3))
    out = P.dce(check(P.cse, b.build(y)))
    assert len(out.consts) == 1 and prims(out) == ["mul", "add", "add"]


# ---------------------------------------------------------------------------------------------
# Effects

log = []
effect_p = Primitive("debug_effect", impl=lambda xp, x: (log.append(1), x)[1],
                     abstract_eval=lambda x: x)
effect_p.effectful = True


def test_effectful_equations_are_never_removed_merged_or_folded():
    b = Builder()
    x = b.arg((2,))
    b(effect_p, x)
    b(effect_p, x)
    b(effect_p, lit(1.0))
    closed = b.build(x)
    for p in (P.dce, P.cse, P.fold_constants, P.simplify, P.optimize):
        out = check(p, closed)
        assert prims(out) == ["debug_effect"] * 3


def test_effects_inside_call_bodies_count():
    def f(x):
        call(lambda x: [effect_p.bind(x)], x)
        call(lambda x: [effect_p.bind(x)], x)
        return x

    closed = fg.make_jaxpr(f)(x34)
    for p in (P.dce, P.cse, P.fold_constants):
        assert prims(check(p, closed)) == ["test_call"] * 2
    assert prims(check(P.optimize, closed)) == ["debug_effect"] * 2


# ---------------------------------------------------------------------------------------------
# fold_constants

def test_fold_constants_of_closed_over_arrays():
    b = Builder()
    x = b.arg((2, 3), np.float64)
    c = b.const(np.arange(6.0).reshape(2, 3))
    y = b(lax.add_p, x, b(lax.mul_p, b(lax.sin_p, c), lit(2.0, np.float64)))
    y = b(lax.add_p, y, b(lax.reduce_sum_p, c, axes=(0, 1)))
    closed = b.build(y)
    out = P.dce(check(P.fold_constants, closed))
    assert prims(out) == ["add", "add"]
    assert type(out.eqns[1].invars[1]) is Literal  # the folded scalar sum
    assert len(out.consts) == 1


def test_fold_literals_and_scalar_consts():
    b = Builder()
    x = b.arg(())
    k = b.const(np.array(3.0, np.float32))
    y = b(lax.mul_p, x, b(lax.add_p, k, lit(1.0)))
    out = check(P.fold_constants, b.build(y))
    assert prims(out) == ["mul"] and out.jaxpr.constvars == []
    assert float(out.eqns[0].invars[1].val) == 4.0


def test_fold_keeps_large_broadcasts_and_iotas():
    b = Builder()
    x = b.arg((1000, 1000))
    big = b(lax.broadcast_in_dim_p, lit(2.0), shape=(1000, 1000), broadcast_dimensions=())
    small = b(lax.broadcast_in_dim_p, lit(2.0), shape=(3,), broadcast_dimensions=())
    idx = b(lax.iota_p, dtype=np.dtype(np.float32), shape=(1000, 1000), dimension=0)
    y = b(lax.add_p, b(lax.mul_p, x, big), idx)
    out = check(P.fold_constants, b.build(y, small))
    assert prims(out) == ["broadcast_in_dim", "iota", "mul", "add"]
    assert out.jaxpr.outvars[1] in out.jaxpr.constvars


def test_fold_respects_max_size():
    b = Builder()
    x = b.arg((50,), np.float64)
    closed = b.build(b(lax.add_p, x, b(lax.exp_p, b.const(np.arange(50.0)))))
    assert prims(P.dce(check(P.fold_constants, closed, max_size=10))) == ["exp", "add"]
    assert prims(P.dce(check(P.fold_constants, closed))) == ["add"]


def test_fold_leaves_failing_equations_to_fail_at_run_time():
    b = Builder()
    y = b(lax.integer_pow_p, b.const(np.arange(3)), y=-1)
    out = P.fold_constants(b.build(y))
    assert prims(out) == ["integer_pow"]


# ---------------------------------------------------------------------------------------------
# inline

def _call_abstract(*avals, jaxpr):
    return list(jaxpr.out_avals)


call_p = Primitive("test_call", multiple_results=True, abstract_eval=_call_abstract,
                   impl=lambda xp, *args, jaxpr: eval_jaxpr(jaxpr.jaxpr, jaxpr.consts, *args))
call_p.inline_call = True


def call(f, *args):
    body = fg.make_jaxpr(f)(*[np.zeros(a.shape, a.dtype) for a in args])
    return call_p.bind(*args, jaxpr=body)


def test_inline_call_with_consts_twice_and_nested():
    c = np.arange(4.0)

    def inner(x):
        return [fnp.sin(x) * c, x]

    def outer(x, y):
        a, _ = call(inner, x)
        (b,) = call(lambda y: [call(inner, y)[0] + 1.0], y)
        return a + b, a

    x = rng.normal(size=4)
    closed = fg.make_jaxpr(outer)(x, x)
    assert "test_call" in prims(closed)
    out = check(P.inline, closed)
    assert "test_call" not in prims(out)
    assert prims(out).count("sin") == 2
    assert len(out.consts) == 2 and all(k is c for k in out.consts)
    defined = [v for e in out.eqns for v in e.outvars]
    assert len(set(defined)) == len(defined)  # the body was renamed at each call
    opt = check(P.optimize, closed)
    assert len(opt.consts) == 1 and "test_call" not in prims(opt)


# ---------------------------------------------------------------------------------------------
# fusion

def test_fusion_groups_of_an_elementwise_chain():
    closed = fg.make_jaxpr(lambda x: fnp.exp(fnp.sin(x) * 2.0) + fnp.cos(x))(x34)
    groups = F.fusion_groups(closed)
    assert len(groups) == 1
    g = groups[0]
    assert g.eqns == list(range(len(closed.eqns))) and g.shape == (3, 4)
    assert g.inputs == closed.jaxpr.invars and g.outputs == closed.jaxpr.outvars


def test_fusion_groups_split_at_reductions_and_expose_used_values():
    def f(x):
        a = fnp.sin(x) * 2.0
        s = fnp.sum(a)             # reads `a` outside the group: `a` is an output
        return fnp.exp(a) * s      # s depends on the group: this mul cannot join it (cycle)

    closed = fg.make_jaxpr(f)(x34)
    assert prims(closed) == ["sin", "mul", "reduce_sum", "exp", "mul"]
    groups = F.fusion_groups(closed, min_size=1)
    assert [g.eqns for g in groups] == [[0, 1, 3], [4]]
    e = closed.eqns
    assert groups[0].outputs == [e[1].outvars[0], e[3].outvars[0]]
    assert groups[1].inputs == [e[3].outvars[0], e[2].outvars[0]]
    assert [g.eqns for g in F.fusion_groups(closed)] == [[0, 1, 3]]
    fused = check(F.fuse, closed)
    assert prims(fused) == ["fused", "reduce_sum", "mul"]
    assert sorted(prims(check(P.inline, fused))) == sorted(prims(closed))


def test_fusion_merges_sibling_groups_and_fuse_reorders():
    def f(x, w):
        a = fnp.sin(x)
        m = x @ w                   # not elementwise, between the members
        b = fnp.cos(x)
        return a * b, m

    closed = fg.make_jaxpr(f)(x34, rng.normal(size=(4, 2)).astype(np.float32))
    groups = F.fusion_groups(closed)
    assert len(groups) == 1 and [closed.eqns[i].primitive.name for i in groups[0].eqns] == [
        "sin", "cos", "mul"]
    fused = check(F.fuse, closed)
    assert sorted(prims(fused)) == ["dot_general", "fused"]


def test_fusion_respects_custom_predicate_and_shapes():
    v = rng.normal(size=(4,)).astype(np.float32)
    closed = fg.make_jaxpr(lambda x, v: fnp.sin(x) * v)(x34, v)  # v is broadcast first
    groups = F.fusion_groups(closed, min_size=1)
    assert all(closed.eqns[i].primitive.name != "broadcast_in_dim"
               for g in groups for i in g.eqns)
    assert F.fusion_groups(closed, fusible=lambda eqn: False) == []


def _layer_norm_times(x, g):
    mu = fnp.mean(x, axis=-1, keepdims=True)
    xc = x - mu
    return xc * lax.rsqrt(fnp.mean(fnp.square(xc), axis=-1, keepdims=True) + 1e-5) * g


@pytest.mark.parametrize("options", [dict(broadcast_inputs=True), dict(),
                                     dict(broadcast_inputs=True, reductions=True, singles=None)])
def test_fusion_of_a_scaled_layer_norm_gradient_has_no_cycle(options):
    # Regression: a group entered at one member and left at another (the rsqrt statistic read
    # by one multiply, a sibling multiply feeding a reduction that comes back to the statistic's
    # group) was not seen as a path through it: fuse raised "fusion groups form a cycle".
    x = rng.normal(size=(4, 8)).astype(np.float32)
    g = rng.normal(size=(8,)).astype(np.float32)
    f = fg.grad(lambda x, g: fnp.sum(_layer_norm_times(x, g)), argnums=(0, 1))
    closed = P.optimize(fg.make_jaxpr(f)(x, g))
    options = {k: v for k, v in options.items() if v is not None}
    fused = check(F.fuse, closed, x, g, **options)
    assert "fused" in prims(fused)


def test_fusion_keeps_the_order_of_effects():
    # A group read by one collective and reading a later one: with the collectives kept in
    # program order, that group cannot run as one unit (it did: "fusion groups form a cycle").
    import funcgrad.distributed as dist

    class TwoRanks(dist.ProcessGroup):
        size, rank = 2, 0

        def allreduce(self, x, op="sum"):
            return x * 2

    def f(x):
        a = x * 2.0
        e1 = lax.psum(a, "data")
        e2 = lax.psum(x, "data")
        return a + e2, e1

    x = rng.normal(size=3).astype(np.float32)
    closed = P.optimize(fg.make_jaxpr(dist.data_parallel(f, "data", TwoRanks()))(x))
    for options in (dict(), dict(broadcast_inputs=True, horizontal=True)):
        fused = F.fuse(closed, **options)
        assert [e.primitive.name for e in fused.eqns if e.primitive.name == "psum"] == ["psum"] * 2


def _peak_live_bytes(program):
    """The most bytes of values alive at once when the program runs its equations in order
    (values the equations make; each freed after its last use, `Jaxpr.frees`)."""
    jaxpr = program.jaxpr
    read = {a for eqn in jaxpr.eqns for a in eqn.invars} | set(jaxpr.outvars)
    made = {v for eqn in jaxpr.eqns for v in eqn.outvars}

    def nbytes(vs):
        return sum(v.aval.size * v.aval.dtype.itemsize for v in vs)

    live = peak = 0
    for eqn, dead in zip(jaxpr.eqns, jaxpr.frees()):
        live += nbytes(eqn.outvars)
        peak = max(peak, live)
        live -= nbytes([v for v in dead if v in made]) + nbytes(
            [v for v in eqn.outvars if v not in read])
    return peak


def test_fusion_keeps_the_programs_memory():
    # Regression: fused groups were placed by their first member, and a group waiting for a
    # late input (a running logsumexp over vocabulary tiles, with a late read of its first
    # tile's values; or a group read only by groups that compute it again) let everything else
    # run ahead: every tile's transposed weight and logits of the backward pass at once, and
    # the recomputed forward of every checkpointed layer. Here the fused program's live values
    # peaked at 1.79x the unfused program's then, 1.33x now: the rest is a gradient sum over
    # the tiles holding its terms, which HOLD_LIMIT bounds (16 MiB; with two terms' worth
    # here, 1.08x).
    from funcgrad.models import layers

    r = np.random.default_rng(0)
    w1 = r.normal(size=(3, 32, 32)).astype(np.float32) * 0.1
    table = r.normal(size=(512, 32)).astype(np.float32)
    x = r.normal(size=(64, 32)).astype(np.float32)
    labels = r.integers(0, 512, size=64)

    def block(h, w):
        return h + fnp.tanh(layers.layer_norm_fn(h, None, None, 1e-5) @ w)

    def loss(w1, x):
        h = x
        for k in range(3):
            h = fg.checkpoint(block)(h, w1[k])
        return fnp.mean(layers.linear_cross_entropy(h, table, labels, tile_rows=64))

    closed = P.optimize(fg.make_jaxpr(fg.grad(loss))(w1, x))
    fused = F.fuse(closed, **llvm_backend.FUSION)
    assert _peak_live_bytes(fused) <= 1.5 * _peak_live_bytes(closed)
    np.testing.assert_allclose(run(fused, [w1, x])[0], run(closed, [w1, x])[0], rtol=1e-5,
                               atol=1e-6)
    with _hold_limit(2 * 64 * 32 * 4):  # (a held sum: at most two [64, 32] terms held)
        fused = F.fuse(closed, **llvm_backend.FUSION)
    assert _peak_live_bytes(fused) <= 1.1 * _peak_live_bytes(closed)
    np.testing.assert_allclose(run(fused, [w1, x])[0], run(closed, [w1, x])[0], rtol=1e-5,
                               atol=1e-6)


@contextlib.contextmanager
def _hold_limit(nbytes):
    saved, F.HOLD_LIMIT = F.HOLD_LIMIT, nbytes
    try:
        yield
    finally:
        F.HOLD_LIMIT = saved


def _sum_of_products(n):
    def f(x, ws):
        s = x @ ws[0]
        for k in range(1, n):
            s = s + fnp.tanh(x @ ws[k])
        return s
    return f


def test_a_sum_of_terms_made_one_after_another_is_not_kept_whole():
    # Regression: a gradient summing 24 vocabulary tiles' terms (linear_cross_entropy's, for the
    # hidden states) was one fused group, first of 24 adds, then, with the adds split, a group
    # computing the first group's sum again from its terms: every term waited for the last,
    # 34 MiB of a GPT-2 LoRA step's 66. (Traced only: [512, 768] float32 terms, 1.5 MiB each.)
    f = _sum_of_products(24)
    x, ws = fg.ShapeDtypeStruct((512, 768), np.float32), fg.ShapeDtypeStruct((24, 768, 768),
                                                                               np.float32)
    closed = P.optimize(fg.make_jaxpr(f)(x, ws))
    fused = F.fuse(closed, **llvm_backend.FUSION)
    assert _peak_live_bytes(fused) <= _peak_live_bytes(closed) + F.HOLD_LIMIT + 4 * 512 * 768 * 4
    # the limit scales: a small one splits a small program's sum the same way
    r = np.random.default_rng(0)
    x, ws = r.normal(size=(8, 16)).astype(np.float32), r.normal(size=(24, 16, 16)).astype(
        np.float32)
    closed = P.optimize(fg.make_jaxpr(f)(x, ws))
    whole = F.fuse(closed, **llvm_backend.FUSION)
    with _hold_limit(4 * 8 * 16 * 4):
        split = F.fuse(closed, **llvm_backend.FUSION)
    assert _peak_live_bytes(split) < _peak_live_bytes(whole)
    assert _peak_live_bytes(split) <= _peak_live_bytes(closed) + 6 * 8 * 16 * 4
    want = run(closed, [x, ws])[0]
    for program in (whole, split):
        np.testing.assert_allclose(run(program, [x, ws])[0], want, rtol=1e-5, atol=1e-5)


def _random_program(seed, n=14):
    """A random program over [4, 8] arrays and their [4, 1] row statistics: elementwise
    operations, reductions, broadcasts, each reading random earlier values."""
    r = np.random.default_rng(seed)

    def f(x, s):
        big, small = [x, fnp.sin(x)], [s]
        for _ in range(n):
            k = r.integers(5)
            a, b = big[r.integers(len(big))], small[r.integers(len(small))]
            if k == 0:
                big.append(a * b + big[r.integers(len(big))])
            elif k == 1:
                small.append(fnp.sum(a, axis=1, keepdims=True) * b)
            elif k == 2:
                small.append(lax.rsqrt(b * b + 1.0) - small[r.integers(len(small))])
            elif k == 3:
                big.append(fnp.tanh(a) - b)
            else:
                small.append(fnp.max(a * b, axis=1, keepdims=True))
        return fnp.sum(big[-1]) + fnp.sum(small[-1]), big[r.integers(len(big))]

    return f


@pytest.mark.parametrize("seed", range(40))
def test_fusion_groups_never_form_a_cycle(seed):
    """Random programs (and their gradients): every fusion setting gives a program that runs
    the groups in a valid order and computes the same values."""
    x = rng.normal(size=(4, 8)).astype(np.float32)
    s = rng.normal(size=(4, 1)).astype(np.float32)
    f = _random_program(seed)
    for fn in (f, fg.grad(lambda x, s: f(x, s)[0], argnums=(0, 1))):
        closed = P.optimize(fg.make_jaxpr(fn)(x, s))
        for options in (dict(), dict(broadcast_inputs=True),
                        dict(broadcast_inputs=True, reductions=True, horizontal=True),
                        llvm_backend.FUSION):
            fused = F.fuse(closed, **options)
            for a, b in zip(run(closed, [x, s]), run(fused, [x, s])):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# optimize

def loss(w, x):
    h = fnp.tanh(x @ w) * 1.0 + 0.0
    return fnp.sum(h * h) + fnp.sum(fnp.sin(x @ w))


def test_optimize_grad_program():
    w = rng.normal(size=(4, 2)).astype(np.float32)
    closed = fg.make_jaxpr(fg.grad(loss))(w, x34)
    out = check(P.optimize, closed)
    assert len(out.eqns) < len(closed.eqns)
    assert prims(closed).count("dot_general") == 4
    assert prims(out).count("dot_general") == 3  # the forward x @ w is computed once
    assert "reduce_sum" not in prims(out)  # the unused loss value is gone
    np.testing.assert_allclose(run(out, [w, x34])[0], fg.grad(loss)(w, x34), rtol=1e-5)


def test_optimize_value_and_grad_and_idempotent():
    w = rng.normal(size=(4, 2))
    x = rng.normal(size=(3, 4))
    closed = fg.make_jaxpr(fg.value_and_grad(loss, argnums=(0, 1)))(w, x)
    once = check(P.optimize, closed)
    twice = check(P.optimize, once)
    assert str(twice) == str(once) and len(twice.consts) == len(once.consts)
    for p in (P.inline, P.dce, P.cse, P.fold_constants, P.simplify):
        assert str(p(once)) == str(once)


@pytest.mark.parametrize("p", [P.inline, P.dce, P.cse, P.fold_constants, P.simplify, P.optimize,
                               F.fuse])
def test_passes_do_not_mutate_and_keep_the_signature(p):
    c = np.arange(12.0, dtype=np.float32).reshape(3, 4)

    def f(x, y):
        a = fnp.sin(x) * 1.0 + fnp.sin(x)
        return {"a": a.T.T, "b": (x * c + 0.0, fnp.sum(c))}, y

    closed = fg.make_jaxpr(f)(x34, 2.0)
    check(p, closed)


def test_select_of_a_comparison_with_its_own_bound_becomes_max_or_min():
    for cmp, want in ((lax.le_p, "max"), (lax.lt_p, "max"), (lax.ge_p, "min"), (lax.gt_p, "min")):
        b = Builder()
        x = b.arg((5,))
        pred = b(cmp, x, lit(0.0))
        closed = b.build(b(lax.select_n_p, pred, x, lit(0.0)))
        out = P.dce(check(P.simplify, closed))
        assert prims(out) == [want]
        vals = np.array([np.nan, -1, 0, 2, np.inf], np.float32)
        np.testing.assert_array_equal(run(out, [vals])[0], run(closed, [vals])[0])
    # the other orientation (x > 0 ? x : 0 drops NaN) and a different bound are kept
    b = Builder()
    x = b.arg((5,))
    closed = b.build(b(lax.select_n_p, b(lax.gt_p, x, lit(0.0)), lit(0.0), x))
    assert "select_n" in prims(P.dce(check(P.simplify, closed)))
    b = Builder()
    x = b.arg((5,))
    closed = b.build(b(lax.select_n_p, b(lax.le_p, x, lit(0.0)), x, lit(1.0)))
    assert "select_n" in prims(P.dce(check(P.simplify, closed)))
