"""jit: the signature cache, inspection, generated code, donation, and composition."""

import logging

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad.transforms.jit import jit

rng = np.random.default_rng(0)


def test_jit_matches_eager_and_caches_per_signature():
    calls = []

    def f(x, y):
        calls.append(1)
        return fnp.sum(fnp.tanh(x @ y)) + 1.0

    jf = jit(f)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
    np.testing.assert_allclose(jf(x, y), f(x, y))
    jf(x + 1, y)
    assert len(calls) == 2  # one trace + one eager reference call
    jf(x.astype(np.float32), y.astype(np.float32))
    assert len(calls) == 3 and jf._cache_size() == 2
    jf(np.ones((5, 4)), y)
    assert jf._cache_size() == 3


@pytest.mark.cpu_only
def test_outputs_are_plain_arrays_and_pytrees():
    jf = jit(lambda p: {"s": p["a"] * 2, "t": (p["a"].sum(),)})
    out = jf({"a": np.arange(3.0)})
    assert type(out["s"]) is np.ndarray and type(out["t"][0]) is np.ndarray
    np.testing.assert_allclose(out["t"][0], 3.0)


def test_static_argnums_and_argnames():
    def f(x, n, *, mode="sum"):
        for _ in range(n):
            x = x * 2
        return fnp.sum(x) if mode == "sum" else fnp.max(x)

    jf = jit(f, static_argnums=1, static_argnames="mode")
    x = np.arange(4.0)
    assert float(jf(x, 3)) == 48.0
    assert float(jf(x, 3, mode="max")) == 24.0
    assert jf._cache_size() == 2


def test_static_argument_errors():
    jf = jit(lambda x, n: x * n, static_argnums=1)
    with pytest.raises(TypeError, match="not hashable"):
        jf(np.ones(2), [1, 2])
    with pytest.raises(TypeError, match="static argument 1 is an array"):
        jf(np.ones(2), np.ones(2))


def test_concretization_error_under_jit_names_function_and_fixes():
    def f(x):
        if x.sum() > 0:
            return x
        return -x

    with pytest.raises(fg.ConcretizationError) as e:
        jit(f)(np.ones(3))
    msg = str(e.value)
    assert "jit(f)" in msg and "test_jit.py" in msg
    assert "fnp.where" in msg and "lax.cond" in msg and "static_argnums" in msg


def test_explain_cache_misses(caplog):
    jf = jit(lambda x: x * 2)
    fg.config.update("explain_cache_misses", True)
    try:
        with caplog.at_level(logging.WARNING, logger="funcgrad.jit"):
            jf(np.ones(3))
            jf(np.ones(4))
    finally:
        fg.config.reset("explain_cache_misses")
    assert any("float64[3] to float64[4]" in r.getMessage() for r in caplog.records)


def test_lower_gives_optimized_program_and_source():
    def f(x):
        return fnp.sum(fnp.exp(x) * 1.0 + 0.0)

    lowered = jit(f).lower(np.ones(3))
    text = str(lowered)
    assert "exp" in text and "mul" not in text and "add" not in text
    src = lowered.as_text()
    assert src.startswith("def run(") and "return" in src


@pytest.mark.cpu_only
def test_generated_code_works_in_place_and_frees_buffers():
    def chain(x):
        y = fnp.sin(x)
        y = fnp.tanh(y) * 2.0
        return fnp.exp(y) + 1.0

    x = rng.normal(size=1000)
    lowered = jit(chain).lower(x)
    src = lowered.as_text()
    assert "out=" in src  # elementwise chain reuses its own buffers
    assert "out=a0" not in src  # never the caller's array
    assert "del " in src
    x_copy = x.copy()
    np.testing.assert_allclose(jit(chain)(x), chain(x))
    np.testing.assert_array_equal(x, x_copy)


def test_no_in_place_write_into_a_buffer_a_view_still_sees():
    def f(x):
        y = x * 2.0
        v = y.reshape(2, 2)
        z = fnp.exp(y)  # y dies here, but v (a view of y) is still alive
        return z.reshape(2, 2) + v

    x = fnp.arange(4.0)  # on the default backend, where f's eager reference runs
    np.testing.assert_allclose(jit(f)(x), f(x))


@pytest.mark.cpu_only
def test_donate_argnums_updates_in_place():
    def step(params, grads):
        return [p - 0.1 * g for p, g in zip(params, grads)]

    jstep = jit(step, donate_argnums=0)
    params = [np.ones(5), np.ones(3)]
    grads = [np.ones(5), np.ones(3)]
    expected = step(params, grads)
    given = [p.copy() for p in params]
    new = jstep(given, grads)
    for a, b in zip(new, expected):
        np.testing.assert_allclose(a, b)
    assert any(np.shares_memory(a, b) for a, b in zip(new, given))  # written in place
    with fg.config.setting("cpu_backend", "numpy"):
        src = jit(step, donate_argnums=0).lower(params, grads).as_text()
    assert "out=a0" in src or "out=a1" in src


def test_jit_composes_with_grad_vmap_and_itself():
    from funcgrad.transforms.vmap import vmap

    def f(w, x):
        return fnp.sum(fnp.tanh(x @ w) ** 2)

    w, x = rng.normal(size=(3, 2)), rng.normal(size=(4, 3))
    g = fg.grad(f)(w, x)
    np.testing.assert_allclose(jit(fg.grad(f))(w, x), g, rtol=1e-12)
    np.testing.assert_allclose(fg.grad(jit(f))(w, x), g, rtol=1e-12)
    v, g2 = jit(fg.value_and_grad(f))(w, x)
    np.testing.assert_allclose(g2, g, rtol=1e-12)
    per_example = jit(vmap(fg.grad(f), in_axes=(None, 0)))(w, x[:, None, :])
    loop = np.stack([fg.grad(f)(w, x[i:i + 1]) for i in range(4)])
    np.testing.assert_allclose(per_example, loop, rtol=1e-10)
    np.testing.assert_allclose(vmap(jit(lambda r: fnp.sum(r ** 2)))(x), (x ** 2).sum(1))
    inner = jit(lambda x: x * 2)
    np.testing.assert_allclose(jit(lambda x: inner(x) + inner(x + 1))(x), 4 * x + 2)
    np.testing.assert_allclose(fg.grad(fg.grad(jit(fnp.sin)))(0.3), -np.sin(0.3))


def test_jit_decorator_form_and_python_scalars():
    @jit
    def f(x, s):
        return x * s

    np.testing.assert_allclose(f(np.ones(2, np.float32), 3.0), [3.0, 3.0])
    assert f(np.ones(2, np.float32), 3.0).dtype == np.float32  # Python scalars are weak
    f(np.ones(2, np.float32), 4.0)
    assert f._cache_size() == 1  # a new Python scalar value does not retrace


@pytest.mark.cpu_only  # checks the NumPy code generator's source
def test_broadcasts_feeding_ufuncs_are_left_to_numpy_broadcasting():
    # x[:, None] * y and x[:, None] + x[:, None] (no full-shape operand: must be materialized)
    def f(x, y):
        bx = fnp.broadcast_to(x[:, None], y.shape)
        twice = fnp.broadcast_to(x[:, None], y.shape) + fnp.broadcast_to(x[:, None], y.shape)
        return bx * y + fnp.sin(bx), twice
    x = np.arange(3, dtype=np.float32)
    y = np.ones((3, 4), np.float32) * 2
    src = jit(f).lower(x, y).as_text()
    out, twice = jit(f)(x, y)
    ref_out, ref_twice = f(x, y)
    np.testing.assert_allclose(out, ref_out, rtol=1e-6)
    np.testing.assert_allclose(twice, ref_twice)
    assert out.shape == twice.shape == (3, 4)
    assert "reshape((3, 1))" in src


def test_outer_product_dot_general_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3, 2)), rng.normal(size=(2, 4, 5))
    dn = (((), ()), ((0,), (2,)))  # batch a0 with b2, no contraction
    out = fg.lax.dot_general(a, b, dn)
    np.testing.assert_allclose(out, np.einsum("bij,klb->bijkl", a, b), rtol=1e-12)
    got = jit(lambda a, b: fg.lax.dot_general(a, b, dn))(a, b)
    np.testing.assert_allclose(got, out, rtol=1e-12)


@pytest.mark.cpu_only
def test_rank0_float_arithmetic_runs_on_scalars_and_returns_arrays():
    def f(t, x):
        c = (1 - 0.9 ** t) / 2.0 - (-t) * 0.5
        return c, x * c
    t = np.asarray(3.0, np.float32)
    x = np.ones(3, np.float32)
    src = jit(f).lower(t, x).as_text()
    assert " ** " in src and " / " in src  # operators on NumPy scalars, not ufunc calls
    c, y = jit(f)(t, x)
    rc, ry = f(t, x)
    assert type(c) is np.ndarray and c.shape == () and c.dtype == np.float32
    np.testing.assert_array_equal(c, rc)
    np.testing.assert_array_equal(y, ry)


def test_disable_jit_runs_python_and_eval_shape_computes_nothing():
    seen = []

    def f(x):
        seen.append(type(x).__name__)
        return x * 2
    jf = jit(f)
    jf(np.ones(2))
    with fg.disable_jit():
        np.testing.assert_array_equal(jf(np.ones(2)), [2.0, 2.0])
    jf(np.ones(2))  # cached again once re-enabled
    assert seen == ["Tracer", "ndarray"]

    calls = []

    def g(a, b):
        calls.append(1)
        return {"prod": a @ b, "n": (a.sum(), 3)}
    out = fg.eval_shape(g, fg.ShapeDtypeStruct((2, 3), np.float32), np.ones((3, 4), np.float32))
    assert out["prod"].shape == (2, 4) and out["prod"].dtype == np.float32
    assert out["n"][0].shape == () and calls == [1]  # traced once, abstractly
    assert fg.jacobian is fg.jacrev


# ---------------------------------------------------------------------------------------------
# Stages, costs, the bounded cache, profiles

def test_trace_lower_compile_stages():
    def f(x, n):
        return fnp.tanh(x @ x) * n

    jf = jit(f, static_argnums=1)
    x = rng.normal(size=(4, 4)).astype(np.float32)
    traced = jf.trace(x, 2)
    assert "dot_general" in str(traced.jaxpr)
    lowered = traced.lower()
    assert str(lowered) == str(jf.lower(x, 2))
    compiled = lowered.compile()
    assert compiled is lowered.compile()          # compiled once
    np.testing.assert_allclose(compiled(x), f(x, 2), rtol=1e-5)  # static arguments left out
    assert compiled.as_text() == lowered.as_text()
    with pytest.raises(TypeError, match="compiled for f32\\[4,4\\]"):
        compiled(np.ones((3, 3), np.float32))
    with pytest.raises(TypeError, match="static arguments left out"):
        compiled(x, 2)


def test_cost_analysis_counts_flops_transcendentals_and_bytes():
    x = np.ones((4, 4), np.float32)
    lowered = jit(lambda x: fnp.tanh(x @ x) * 2.0).lower(x)
    cost = lowered.cost_analysis()
    # as JAX: 2*4*4*4 for the matmul, 16 for the multiply; tanh counts as a transcendental
    assert cost["flops"] == 144 and cost["transcendentals"] == 16
    # every equation's operands and results: matmul 64+64+64, tanh 64+64, mul 64+64
    assert cost["bytes accessed"] == 64 * 7
    compiled = lowered.compile().cost_analysis()
    assert compiled["flops"] == 144 and compiled["transcendentals"] == 16
    assert compiled["bytes accessed"] <= cost["bytes accessed"]  # fused: tanh*2 reads x@x once


def test_scan_costs_count_every_iteration():
    def f(c, xs):
        return fg.lax.scan(lambda c, x: (c * x + 1.0, c), c, xs)[0]

    cost = jit(f).lower(np.ones(3), np.ones((5, 3))).cost_analysis()
    assert cost["flops"] == 5 * 2 * 3


def test_jit_cache_is_a_bounded_lru_over_all_functions():
    f = jit(lambda x: x + 1.0)
    g = jit(lambda x: x * 2.0)
    with fg.config.setting("jit_cache_size", 3):
        for n in range(1, 4):
            f(np.ones(n))
        g(np.ones(1))                      # a 4th program: f's least recently used one goes
        assert f._cache_size() + g._cache_size() == 3 and f._cache_size() == 2
        f(np.ones(2))                      # still cached: no trace
        np.testing.assert_array_equal(f(np.ones(1)), [2.0])  # traced again, correct
        assert f._cache_size() + g._cache_size() == 3


@pytest.mark.cpu_only
def test_clear_cache_frees_the_compiled_programs():
    import gc
    import weakref
    f = jit(lambda x: fnp.exp(x) * 2.0 + 1.0)
    f(np.ones(5, np.float32))
    entries = list(f._cache.table.values())
    refs = [weakref.ref(e.compiled.executable) for e in entries]
    del entries
    f.clear_cache()
    gc.collect()
    assert f._cache_size() == 0 and all(r() is None for r in refs)
    g = jit(lambda x: x - 1.0)
    g(np.ones(2))
    fg.clear_caches()
    assert g._cache_size() == 0
    np.testing.assert_array_equal(g(np.ones(2)), [0.0, 0.0])


def test_explain_cache_misses_names_the_varying_argument_and_the_fix(caplog):
    f = jit(lambda x, y: x * y)
    with fg.config.setting("explain_cache_misses", True), \
            caplog.at_level(logging.WARNING, logger="funcgrad.jit"):
        for n in range(1, 9):
            f(np.ones(n), 2.0)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "argument 0 changed from float64[7] to float64[8]" in text
    assert "has traced and compiled 8 times" in text
    assert "argument 0 took 8 different types: float64[1]" in text
    assert "bucket" in text and "static_argnums" in text
    assert "argument 1" not in text.split("has traced")[1]  # a Python float never retraces


@pytest.mark.cpu_only
def test_profile_lists_steps_with_source_lines():
    def f(x, w):
        h = fnp.tanh(x @ w)
        return fnp.sum(h * h + 1.0)

    x, w = rng.normal(size=(64, 32)), rng.normal(size=(32, 16))
    prof = jit(f).profile(x, w)
    kinds = {r["primitive"] for r in prof.rows}
    assert "dot_general" in kinds
    assert all(r["time"] >= 0 for r in prof.rows)
    assert [r["time"] for r in prof.rows] == sorted((r["time"] for r in prof.rows), reverse=True)
    assert abs(sum(r["share"] for r in prof.rows) - 1) < 1e-6
    dot = next(r for r in prof.rows if r["primitive"] == "dot_general")
    assert "test_jit.py" in dot["where"] and "f64[64,32]" in dot["what"]
    text = str(prof)
    assert "profile of jit(f)" in text and "dot_general" in text


def test_fast_argument_flattening_follows_structure_changes():
    """Calls reuse a generated flattener of the last structure; any other structure (lengths,
    keys, a leaf turned container, None) takes the general path and traces as it should."""
    from collections import namedtuple
    Pair = namedtuple("Pair", "a b")
    f = jit(lambda t: fg.tree_util.tree_map(lambda x: x * 2, t))
    calls = [
        ([np.ones(2), np.ones(3)], {"a": 1.0, "b": None}),
        ([np.ones(2), np.ones(3)], {"a": 1.0, "b": None}),
        ([np.ones(2)], {"a": 1.0, "b": None}),
        ([np.ones(2), np.ones(3)], {"a": 1.0, "c": None}),
        ([np.ones(2), (np.ones(3), np.ones(1))], {"a": 1.0, "b": None}),
        ([np.ones(2), np.ones(3)], {"a": 1.0, "b": 2.0}),
        Pair(np.ones(2), [3.0]),
        (np.ones(2), [3.0]),
    ]
    for t in calls:
        got = f(t)
        assert fg.tree_util.tree_structure(got) == fg.tree_util.tree_structure(t)
        for g, x in zip(fg.tree_util.tree_leaves(got), fg.tree_util.tree_leaves(t)):
            np.testing.assert_array_equal(g, np.asarray(x) * 2)
    assert f._cache_size() == 7


def test_programs_traced_under_named_axes_are_cached_per_axes():
    """A program traced while named axes are bound (a data-parallel step) bakes in their sizes
    and collectives: the axes are part of the cache key."""
    from funcgrad.core.trace import axis_frame
    f = jit(lambda x: x * fg.lax.axis_size("i"))
    with axis_frame("i", 3):
        np.testing.assert_array_equal(f(np.ones(2)), [3.0, 3.0])
    with axis_frame("i", 5):
        np.testing.assert_array_equal(f(np.ones(2)), [5.0, 5.0])
    assert f._cache_size() == 2


def test_inline_jit_runs_its_python_inside_other_transforms():
    calls = []

    def inner(x):
        calls.append(type(x).__name__)
        return fnp.sin(x) * 2.0

    g = jit(inner, inline=True)
    np.testing.assert_allclose(g(np.ones(3)), 2 * np.sin(np.ones(3)))   # compiled
    outer = jit(lambda x: g(x) + 1.0)
    np.testing.assert_allclose(outer(np.ones(3)), 2 * np.sin(np.ones(3)) + 1)
    np.testing.assert_allclose(fg.grad(lambda x: fnp.sum(g(x)))(np.ones(3)), 2 * np.cos(1.0))
    assert calls[0] == "Tracer" and len(calls) == 3   # its own trace, then inlined twice


@pytest.mark.cpu_only  # tracemalloc sees NumPy's allocations
def test_eval_shape_records_operations_on_constants():
    """A function of constants (an init from a seed) computes nothing under eval_shape: its
    operations are recorded, as JAX's; also inside grad, vmap and a jitted function called in
    it. jit itself keeps computing constants at trace time."""
    import tracemalloc

    from funcgrad import models, random
    n = 1 << 26  # a 256 MiB draw
    jitted = fg.jit(lambda k: random.normal(k, (n,)))
    tracemalloc.start()
    try:
        out = fg.eval_shape(lambda: random.normal(random.key(0), (n,)))
        inside = fg.eval_shape(lambda: (
            fg.grad(lambda w: fnp.sum(w * random.normal(random.key(1), (n,))))(np.float32(1)),
            fg.vmap(lambda k: random.uniform(k, (n // 4,)))(random.split(random.key(2), 4)),
            jitted(random.key(3))))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (out.shape, out.dtype) == ((n,), np.float32)
    assert [(o.shape, o.dtype) for o in inside] == [((), np.float32), ((4, n // 4), np.float32),
                                                    ((n,), np.float32)]
    # a draw alone is 256 MiB; the margin is for allocations of other threads, which
    # tracemalloc counts too (a full suite run measured 9 MiB)
    assert peak < (64 << 20), peak

    def init():
        return models.transformer_lm.init(0, vocab_size=50, max_len=8, d_model=16, d_mlp=32,
                                          num_layers=2)
    shapes, real = fg.eval_shape(init), init()
    got = fg.tree_util.tree_leaves(fg.tree_util.tree_map(lambda a: (a.shape, a.dtype), shapes))
    want = fg.tree_util.tree_leaves(fg.tree_util.tree_map(lambda a: (a.shape, a.dtype), real))
    assert got == want

    # As in JAX: a Python decision on a value computed from constants needs it concrete.
    def decides():
        return 1 if random.uniform(random.key(0)) > 0.5 else 0
    assert decides() in (0, 1)
    with pytest.raises(fg.ConcretizationError):
        fg.eval_shape(decides)
    # Per thread: eager work in one thread while another is inside eval_shape stays eager.
    import threading
    inside_now, done = threading.Event(), threading.Event()

    def waits():
        inside_now.set()
        done.wait(10)
        return random.normal(random.key(0), (3,))
    worker = threading.Thread(target=lambda: fg.eval_shape(waits))
    worker.start()
    inside_now.wait(10)
    try:
        assert type(fnp.sin(np.ones(3)) * 2) is np.ndarray
    finally:
        done.set()
        worker.join()
    # jit's semantics are unchanged: constants are computed while tracing, and baked in.
    seen = []

    @fg.jit
    def g(x):
        c = fnp.arange(3.0) * 2
        seen.append(type(c).__name__)
        return x + c
    g(np.ones(3))
    assert seen == ["ndarray"]


def test_outputs_that_are_constants_are_fresh_arrays():
    # Regression: the program returned its constant itself, so a caller's write changed what
    # every later call returned.
    x = np.ones((3, 4), np.float32)
    f = fg.jit(lambda x: (fnp.zeros_like(x), np.full((3, 4), 2.0, np.float32), x + 1))
    a, b, _ = f(x)
    a[0, 0], b[0, 0] = 5.0, 7.0
    a2, b2, _ = f(x)
    assert a2[0, 0] == 0.0 and b2[0, 0] == 2.0 and a2.flags.writeable


@pytest.mark.cpu_only   # (on a GPU the constant is copied to the device whole)
def test_zeros_like_of_a_traced_value_is_not_a_large_constant():
    # fnp.zeros_like/ones_like/full_like of a traced value broadcast one element, so a program
    # (a masked optimizer update, softmax's derivative) carries no array of zeros.
    x = np.ones((256, 256), np.float32)
    closed = fg.make_jaxpr(lambda x: fnp.where(x > 0, x, fnp.zeros_like(x)) + fnp.ones_like(x)
                           + fnp.full_like(x, 3.0))(x)
    for c in closed.consts:
        assert np.asarray(c).strides == (0, 0) or np.asarray(c).size == 1
    np.testing.assert_array_equal(fg.jit(lambda x: fnp.where(x > 0, x, fnp.zeros_like(x)))(-x),
                                  np.zeros_like(x))
    eager = fnp.zeros_like(x)
    assert eager.flags.writeable and eager.strides == (1024, 4)
