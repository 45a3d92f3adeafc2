"""The core: programs, printing, tracing modes, errors, config."""


import platform
import subprocess
import sys

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lax
from funcgrad.core import ClosedJaxpr, ShapedArray, eval_jaxpr


def test_make_jaxpr_prints_jax_style():
    jaxpr = fg.make_jaxpr(lambda x, y: fnp.sum(fnp.tanh(x @ y)))(np.ones((2, 3)), np.ones((3, 4)))
    text = str(jaxpr)
    assert text.startswith("{ lambda ; a:f64[2,3] b:f64[3,4]. let")
    assert "c:f64[2,4] = dot_general[dimension_numbers=(((1,), (0,)), ((), ()))] a b" in text
    assert "d:f64[2,4] = tanh c" in text
    assert "e:f64[] = reduce_sum[axes=(0, 1)] d" in text
    assert text.rstrip().endswith("in (e,) }")


def test_short_program_prints_on_one_line():
    text = str(fg.make_jaxpr(lambda x: fnp.sin(x))(np.ones(3, np.float32)))
    assert text == "{ lambda ; a:f32[3]. let b:f32[3] = sin a in (b,) }"


def test_constants_and_literals():
    c = np.arange(3.0)
    jaxpr = fg.make_jaxpr(lambda x: x * c + 2.0)(np.ones(3))
    text = str(jaxpr)
    assert text.startswith("{ lambda a:f64[3]; b:f64[3]. let")
    assert "2.0:f64[]" in text
    assert isinstance(jaxpr, ClosedJaxpr) and len(jaxpr.consts) == 1


def test_equations_record_the_users_source_line():
    def f(x):
        return fnp.exp(x)  # this line

    jaxpr = fg.make_jaxpr(f)(np.ones(2))
    info = jaxpr.eqns[0].source_info
    assert info.file == __file__ and info.function == "f"


def test_eval_jaxpr_matches_and_frees_intermediates():
    def f(x):
        a = fnp.sin(x)
        b = a * 2
        return fnp.sum(b)

    jaxpr = fg.make_jaxpr(f)(np.ones(4))
    x = np.linspace(0, 1, 4)
    (out,) = eval_jaxpr(jaxpr.jaxpr, jaxpr.consts, x)
    np.testing.assert_allclose(out, f(x))
    frees = jaxpr.jaxpr.frees()
    # every intermediate is freed at its last use: sin's output after mul, mul's after reduce
    assert [len(f) for f in frees] == [1, 1, 1]




def test_nested_programs_indent():
    inner = fg.make_jaxpr(lambda x: fnp.sin(x) * 2 + 1)(np.ones((2, 2)))
    from funcgrad.core import Eqn, Jaxpr, Primitive, Var
    p = Primitive("call")
    v = Var(ShapedArray((2, 2), np.float64))
    outer = Jaxpr([], [v], [v], [Eqn(p, [v], [Var(v.aval)], {"jaxpr": inner})])
    text = str(outer)
    assert "\n" in text and "sin" in text


def test_shaped_array():
    a = ShapedArray((2, 3), np.float32)
    assert a.str_short() == "f32[2,3]" and a.ndim == 2 and a.size == 6
    assert a == ShapedArray((2, 3), "float32") and hash(a) == hash(ShapedArray((2, 3), np.float32))
    assert ShapedArray((), np.float64, weak_type=True) != ShapedArray((), np.float64)


def test_static_argnums():
    jaxpr = fg.make_jaxpr(lambda x, n: x * n if n > 1 else x, static_argnums=1)(np.ones(2), 3)
    assert "mul" in str(jaxpr)


def test_concretization_error_names_line_and_fixes():
    def f(x):
        if x.sum() > 0:  # control flow on an abstract value
            return x
        return -x

    with pytest.raises(fg.ConcretizationError) as e:
        fg.make_jaxpr(f)(np.ones(3))
    msg = str(e.value)
    assert "test_core.py" in msg and "fnp.where" in msg and "lax.cond" in msg
    assert "static_argnums" in msg
    with pytest.raises(fg.ConcretizationError):
        fg.make_jaxpr(lambda x: np.asarray(x))(np.ones(3))
    with pytest.raises(fg.ConcretizationError):
        fg.make_jaxpr(lambda x: float(x))(1.0)


def test_leaked_tracer_names_transform():
    box = []
    fg.make_jaxpr(lambda x: box.append(x) or x)(np.ones(2))
    with pytest.raises(fg.LeakedTracerError, match="make_jaxpr"):
        fnp.sin(box[0])


def test_tracer_array_surface():
    def f(x):
        y = (x + 1) * 2 - 3 / (x + 5) + x ** 2 @ np.ones((3, 3))
        y = -y + abs(y) + (1 - y) + 2 ** y.astype(np.float32).astype(np.float64)
        return (y.T.reshape(9).sum() + y.mean() + y.max() + y.min() + y.prod()
                + y[0, 1] + y[:, 1:].sum() + (y > 0).sum() + y.shape[0] + y.ndim + y.size
                + y.argmax())

    x = np.arange(9.0).reshape(3, 3) / 10
    np.testing.assert_allclose(fg.make_jaxpr(f)(x).jaxpr.outvars[0].aval.shape, ())
    (out,) = eval_jaxpr(fg.make_jaxpr(f)(x).jaxpr, fg.make_jaxpr(f)(x).consts, x)
    np.testing.assert_allclose(out, f(x))


def test_numpy_ufuncs_and_functions_trace():
    jaxpr = fg.make_jaxpr(lambda x: np.sum(np.tanh(x) + np.ones(3)))(np.ones(3))
    names = [e.primitive.name for e in jaxpr.eqns]
    assert "tanh" in names and "add" in names and "reduce_sum" in names


@pytest.mark.cpu_only
def test_eager_lax_returns_ndarrays():
    out = lax.reduce_sum(np.ones(3), (0,))
    assert type(out) is np.ndarray and out.shape == ()
    assert type(fnp.sum(np.ones(3))) is np.ndarray


def test_config_update_read_and_environment(monkeypatch):
    assert fg.config.read("debug_nans") is False
    monkeypatch.setenv("FUNCGRAD_DEBUG_NANS", "1")
    assert fg.config.read("debug_nans") is True
    fg.config.update("debug_nans", False)
    assert fg.config.read("debug_nans") is False
    fg.config.reset("debug_nans")
    with pytest.raises(KeyError, match="Known settings"):
        fg.config.read("no_such_setting")
    with pytest.raises(TypeError):
        fg.config.update("debug_nans", "yes")
    monkeypatch.setenv("FUNCGRAD_DEBUG_NANS", "maybe")
    with pytest.raises(ValueError, match="FUNCGRAD_DEBUG_NANS"):
        fg.config.read("debug_nans")


_REFAULTS = """
import resource, sys
import numpy as np
import funcgrad as fg
fg.config.update("retain_host_memory", sys.argv[1] == "on")
def faults():  # minor page faults of making a 64 MiB array again after freeing one
    a = np.ones(2**24, np.float32)
    del a
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(2**24, np.float32)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(min(faults() for _ in range(3)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or
                    platform.libc_ver()[0] != "glibc", reason="glibc's malloc setting")
def test_retain_host_memory_reuses_freed_pages():
    """On, a freed large array's pages serve the next one (no page faults); off, glibc unmaps
    it and the new array faults its pages in again."""
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", _REFAULTS, mode], capture_output=True,
                             text=True, timeout=120, check=True)
        return int(out.stdout.split()[-1])
    assert faults("on") < 8 < faults("off")


def test_bad_inputs_are_clear():
    with pytest.raises(TypeError, match="object"):
        fnp.sin(np.array(["a"], dtype=object))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        fnp.add(np.ones((2, 3)), np.ones(4))
    with pytest.raises((ValueError, TypeError), match=r"2, 3"):
        fnp.reshape(np.ones((2, 3)), (4, 2))
    with pytest.raises((ValueError, TypeError), match=r"\(2, 3\).*\(4, 5\)|\(4, 5\).*\(2, 3\)"):
        fnp.matmul(np.ones((2, 3)), np.ones((4, 5)))
