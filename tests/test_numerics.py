"""Quiet numerics: funcgrad computes inf and NaN as JAX does, without NumPy RuntimeWarnings,
eagerly, under grad and in jit's generated code (debug_nans is the way to hear about them).
Expected values were recorded from JAX 0.10 (float32)."""

import warnings

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp

inf, nan = np.inf, np.nan
z = np.zeros(3, np.float32)
ones = np.ones(2, np.float32)
ninf = np.array([-inf, -inf], np.float32)

CASES = {  # name: (thunk, JAX's result)
    "log(0)": (lambda: fnp.log(z), [-inf] * 3),
    "log(-1)": (lambda: fnp.log(-ones), [nan] * 2),
    "sqrt(-1)": (lambda: fnp.sqrt(-ones), [nan] * 2),
    "x/0": (lambda: fnp.divide(np.ones(3, np.float32), z), [inf] * 3),
    "0/0": (lambda: fnp.divide(z, z), [nan] * 3),
    "exp overflow": (lambda: fnp.exp(ones * np.float32(1000)), [inf] * 2),
    "log1p(-1)": (lambda: fnp.log1p(-ones), [-inf] * 2),
    "arctanh(1)": (lambda: fnp.arctanh(ones), [inf] * 2),
    "arcsin(2)": (lambda: fnp.arcsin(2 * ones), [nan] * 2),
    "0 ** -1": (lambda: fnp.power(z, np.float32(-1)), [inf] * 3),
    "reciprocal(0)": (lambda: fnp.reciprocal(z), [inf] * 3),
    "f32 overflow": (lambda: fnp.multiply(np.full(2, 1e30, np.float32), np.float32(1e30)),
                     [inf] * 2),
    "mean of empty": (lambda: fnp.mean(np.zeros(0, np.float32)), nan),
    "grad sqrt at 0": (lambda: fg.grad(lambda x: fnp.sqrt(x).sum())(z), [inf] * 3),
    "grad log at 0": (lambda: fg.grad(lambda x: fnp.log(x).sum())(z), [inf] * 3),
    "grad x**0.5 at 0": (lambda: fg.grad(lambda x: (x ** 0.5).sum())(z), [inf] * 3),
    "grad norm at 0": (lambda: fg.grad(fnp.linalg.norm)(z), [nan] * 3),
    "logsumexp all -inf": (lambda: fg.nn.logsumexp(ninf), -inf),
    "grad logsumexp all -inf": (lambda: fg.grad(fg.nn.logsumexp)(ninf), [nan] * 2),
    "grad logsumexp one -inf": (lambda: fg.grad(fg.nn.logsumexp)(np.array([-inf, 1.0])),
                                [0.0, 1.0]),
    "softmax all -inf": (lambda: fg.nn.softmax(ninf), [nan] * 2),
    "grad softmax all -inf": (lambda: fg.grad(lambda x: fg.nn.softmax(x)[0])(ninf), [nan] * 2),
    "log_softmax all -inf": (lambda: fg.nn.log_softmax(ninf), [nan] * 2),
}


@pytest.mark.parametrize("wrap", ["eager", "jit"])
@pytest.mark.parametrize("name", list(CASES))
def test_edge_cases_match_jax_without_warnings(name, wrap):
    thunk, want = CASES[name]
    run = thunk if wrap == "eager" else fg.jit(lambda: thunk())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = fg.device_get(run())
    np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))


def test_control_flow_bodies_are_quiet_too():
    def f(x):
        return fg.lax.fori_loop(0, 3, lambda i, c: c + fnp.log(x - x), x)

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert np.all(np.isneginf(fg.device_get(fg.jit(f)(np.ones(2)))))
        assert np.all(np.isneginf(fg.device_get(f(np.ones(2)))))


def test_the_users_numpy_error_state_is_left_alone():
    fnp.log(z)
    fg.jit(fnp.log)(z)
    assert np.geterr()["divide"] == "warn"
    with np.errstate(divide="raise"):
        fnp.log(z)                                     # funcgrad's own computation: quiet
        with pytest.raises(FloatingPointError):
            np.log(z)                                  # the user's NumPy: as they set it


def test_grad_of_logsumexp_on_an_all_minus_inf_slice_is_nan_in_both_modes():
    """The derivative of logsumexp is the softmax, undefined (NaN) on an all -inf slice, as in
    JAX and PyTorch; finite slices are unaffected and -inf entries of them get 0."""
    x = np.array([[-inf, -inf], [-inf, 0.0]])
    g = fg.grad(lambda x: fg.nn.logsumexp(x, axis=1).sum())(x)
    np.testing.assert_array_equal(g, [[nan, nan], [0.0, 1.0]])
    _, t = fg.jvp(lambda x: fg.nn.logsumexp(x, axis=1), (x,), (np.ones_like(x),))
    np.testing.assert_array_equal(t, [nan, 1.0])
    np.testing.assert_array_equal(fg.jit(fg.grad(lambda x: fg.nn.logsumexp(x, axis=1).sum()))(x),
                                  g)
