"""erf and erf_inv (funcgrad/lax/_erf.py) against the standard library and round trips.

erf: within a few ulps of math.erf in float64 on a dense grid (tails to |x| = 6 and beyond, tiny
arguments near 0), and of float32 precision for float32 inputs. erf_inv: within 1e-13 relative
error of the true inverse on (-1, 1), checked with math.erf / math.erfc (one Newton step of the
exact function measures the distance to the root), +-inf at +-1 and NaN outside.
"""

import math
import warnings

import numpy as np
import pytest

from funcgrad.lax import _erf

GRID = np.concatenate([np.linspace(-7, 7, 140001), np.geomspace(1e-300, 1, 2000),
                       -np.geomspace(1e-300, 1, 2000), [0.5, 4.0, np.nextafter(0.5, 1),
                                                        np.nextafter(4.0, 5)]])


def _ulps(got, want, dtype):
    spacing = np.spacing(np.maximum(np.abs(want), np.finfo(dtype).tiny).astype(dtype))
    return np.abs(got.astype(np.float64) - want) / spacing.astype(np.float64)


def test_erf_float64_matches_math_erf():
    want = np.array([math.erf(v) for v in GRID])
    got = _erf.erf(np, GRID)
    assert got.dtype == np.float64
    assert np.max(np.abs(got - want)) <= 1e-15
    assert np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-300)) <= 1e-15
    assert np.max(_ulps(got, want, np.float64)) <= 4


def test_erfc_tail_is_relatively_accurate():
    a = np.linspace(0.5, 26.0, 20001)
    _, erfc = _erf._erf_erfc(np, a)
    want = np.array([math.erfc(v) for v in a])
    assert np.max(np.abs(erfc - want) / want) <= 2e-15


def test_erf_float32_and_float16_keep_their_dtype():
    x32 = GRID.astype(np.float32)
    got = _erf.erf(np, x32)
    assert got.dtype == np.float32
    want = np.array([math.erf(float(v)) for v in x32])
    assert np.max(_ulps(got, want, np.float32)) <= 4
    assert _erf.erf(np, np.float16([0.25, -3.0])).dtype == np.float16


def test_erf_special_values():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no branch may divide by zero or overflow
        got = _erf.erf(np, np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 30.0, 1e300]))
    np.testing.assert_array_equal(got[:2], [1.0, -1.0])
    assert np.isnan(got[2])
    assert got[3] == 0 and not np.signbit(got[3]) and np.signbit(got[4])
    np.testing.assert_array_equal(got[5:], [1.0, 1.0])
    assert _erf.erf(np, np.array(0.5)).shape == ()


def _inverse_error(y, x):
    """|y - erfinv(x)| / |erfinv(x)| from one Newton step of the exact erf (erfc near +-1)."""
    err = []
    for yi, xi in zip(y, x):
        d = 2 / math.sqrt(math.pi) * math.exp(-yi * yi)
        if abs(xi) <= 0.5:
            step = (math.erf(yi) - xi) / d
        else:  # erfc and 1 - |x| (exact) keep the residual accurate near +-1
            step = -(math.erfc(abs(yi)) - (1 - abs(xi))) / d * math.copysign(1, xi)
        err.append(abs(step) / max(abs(yi), 1e-300))
    return np.array(err)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 1e-6)])
def test_erf_inv_is_accurate_on_the_open_interval(dtype, tol):
    tiny = 2.0 ** -53 if dtype == np.float64 else 2.0 ** -24
    x = np.concatenate([np.linspace(-1, 1, 20001)[1:-1], 1 - np.geomspace(tiny, 0.5, 2000),
                        -1 + np.geomspace(tiny, 0.5, 500), np.geomspace(1e-300, 0.5, 500),
                        -np.geomspace(1e-30, 0.5, 100)]).astype(dtype)
    x = x[(np.abs(x) < 1) & ((x == 0) | (np.abs(x) >= np.finfo(dtype).tiny))]  # no subnormals
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = _erf.erf_inv(np, x)
    assert y.dtype == dtype
    assert np.max(_inverse_error(y.astype(np.float64), x.astype(np.float64))) <= tol


def test_erf_inv_ends_and_outside():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _erf.erf_inv(np, np.array([1.0, -1.0, 1.5, -2.0, np.nan, np.inf, 0.0, -0.0]))
    np.testing.assert_array_equal(got[:2], [np.inf, -np.inf])
    assert np.all(np.isnan(got[2:6]))
    assert got[6] == 0 and np.signbit(got[7])
    assert _erf.erf_inv(np, np.float16([0.5])).dtype == np.float16


def test_erf_inv_round_trips_through_erf():
    x = np.linspace(-0.999, 0.999, 1001)
    np.testing.assert_allclose(_erf.erf(np, _erf.erf_inv(np, x)), x, rtol=1e-15, atol=1e-16)
