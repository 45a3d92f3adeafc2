"""funcgrad.numpy.fft: NumPy's values and dtypes; derivatives (finite differences), vmap, jit.

The lax.fft primitive's own rules (JVP, transpose, second order, with real and complex operands)
are checked in tests/test_rules.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lax

RNG = np.random.default_rng(0)
X = RNG.normal(size=(4, 6, 5))
Z = X + 1j * RNG.normal(size=X.shape)

ONE_AXIS = ["fft", "ifft", "rfft", "irfft", "hfft", "ihfft"]
MANY_AXES = ["fft2", "ifft2", "rfft2", "irfft2", "fftn", "ifftn", "rfftn", "irfftn"]
REAL_INPUT = {"rfft", "ihfft", "rfft2", "rfftn"}


def _input(name):
    return X if name in REAL_INPUT else Z


def _close(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ONE_AXIS)
@pytest.mark.parametrize("n", [None, 3, 8])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("norm", [None, "ortho", "forward"])
def test_one_axis_matches_numpy(name, n, axis, norm):
    a = _input(name)
    want = getattr(np.fft, name)(a, n=n, axis=axis, norm=norm)
    _close(getattr(fnp.fft, name)(a, n=n, axis=axis, norm=norm), want)
    jitted = fg.jit(lambda x: getattr(fnp.fft, name)(x, n=n, axis=axis, norm=norm))
    _close(jitted(a), want)


@pytest.mark.parametrize("name", MANY_AXES)
@pytest.mark.parametrize("s, axes", [(None, None), ((3, 4), (-2, -1)), (None, (0, 2)),
                                     ((5, 2), (2, 0)), ((4, 7, 3), (0, 1, 2))])
@pytest.mark.parametrize("norm", [None, "ortho", "forward"])
def test_many_axes_match_numpy(name, s, axes, norm):
    two = name.endswith("2")
    if two and ((axes is not None and len(axes) != 2) or (s is not None and len(s) != 2)):
        pytest.skip("the 2-D functions take two axes")
    kw = {"s": s, "norm": norm}
    if axes is not None or two:
        kw["axes"] = axes if axes is not None else (-2, -1)
    a = _input(name)
    want = getattr(np.fft, name)(a, **kw)
    _close(getattr(fnp.fft, name)(a, **kw), want)
    _close(fg.jit(lambda x: getattr(fnp.fft, name)(x, **kw))(a), want)


def test_more_than_three_axes():
    a = RNG.normal(size=(2, 3, 2, 4, 3))
    _close(fnp.fft.fftn(a + 0j), np.fft.fftn(a + 0j))
    _close(fnp.fft.rfftn(a), np.fft.rfftn(a))
    spectrum = np.fft.rfftn(a)
    axes = tuple(range(a.ndim))
    _close(fnp.fft.irfftn(spectrum, s=a.shape), np.fft.irfftn(spectrum, s=a.shape, axes=axes))


def test_dtypes_follow_numpy():
    assert fnp.fft.fft(np.ones(4, np.float32)).dtype == np.complex64
    assert fnp.fft.rfft(np.ones(4, np.float32)).dtype == np.complex64
    assert fnp.fft.irfft(np.ones(3, np.complex64)).dtype == np.float32
    assert fnp.fft.fft(np.arange(4)).dtype == np.complex128
    assert fnp.fft.irfft(np.arange(3)).dtype == np.float64


def test_shifts_and_frequencies_match_numpy():
    for name in ["fftshift", "ifftshift"]:
        for axes in [None, 0, (1, 2)]:
            np.testing.assert_array_equal(getattr(fnp.fft, name)(X, axes),
                                          getattr(np.fft, name)(X, axes))
    for n in [1, 4, 5]:
        for d in [1.0, 0.25]:
            for name in ["fftfreq", "rfftfreq"]:
                got, want = getattr(fnp.fft, name)(n, d), getattr(np.fft, name)(n, d)
                assert got.dtype == want.dtype
                np.testing.assert_allclose(got, want)
    # a traced spacing: differentiable in d
    g = fg.grad(lambda d: fnp.sum(fnp.fft.fftfreq(4, d) ** 2))(0.5)
    np.testing.assert_allclose(g, -2 * np.sum(np.fft.fftfreq(4, 1.0) ** 2) / 0.5 ** 3)


def test_errors_name_the_problem():
    with pytest.raises(TypeError, match="real input"):
        fnp.fft.rfft(Z)
    with pytest.raises(ValueError, match="norm"):
        fnp.fft.fft(Z, norm="unitary")
    with pytest.raises(ValueError, match="Invalid number of FFT data points"):
        fnp.fft.fft(Z, n=0)
    with pytest.raises(ValueError, match="s .* and axes"):
        fnp.fft.fftn(Z, s=(2, 3), axes=(0,))


def _real_loss(name, kw):
    def loss(a):
        out = getattr(fnp.fft, name)(a, **kw)
        w = np.cos(np.arange(out.size)).reshape(out.shape)
        if out.dtype.kind == "c":
            return fnp.sum(fnp.real(fnp.multiply(out, w + 0.5j)))
        return fnp.sum(fnp.multiply(out, w))
    return loss


def _fd_grad(f, a, eps=1e-6):
    """JAX's gradient convention by central differences (d/dRe - i d/dIm for complex a)."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        e = np.zeros_like(a)
        e[i] = eps
        g[i] = (float(f(a + e)) - float(f(a - e))) / (2 * eps)
        if np.iscomplexobj(a):
            g[i] -= 1j * (float(f(a + 1j * e)) - float(f(a - 1j * e))) / (2 * eps)
    return g


@pytest.mark.parametrize("name, kw", [
    ("fft", {"n": 5}), ("ifft", {"axis": 0, "norm": "ortho"}), ("rfft", {"n": 4}),
    ("irfft", {}), ("irfft", {"n": 5}), ("hfft", {}), ("ihfft", {"norm": "forward"}),
    ("fft2", {"s": (3, 4)}), ("rfft2", {}), ("irfft2", {"s": (2, 5)}), ("ifftn", {}),
    ("irfftn", {"axes": (0, 1)}),
], ids=lambda v: str(v))
def test_gradients_match_finite_differences(name, kw):
    a = (X if name in REAL_INPUT else Z)[:2, :3, :4]
    loss = _real_loss(name, kw)
    want = _fd_grad(loss, a)
    for g in (fg.grad(loss), fg.jit(fg.grad(loss)), fg.grad(fg.jit(loss))):
        np.testing.assert_allclose(g(a), want, rtol=1e-6, atol=1e-7)
    rows = fg.vmap(fg.grad(loss))(np.stack([a, 2 * a]))
    np.testing.assert_allclose(rows[0], want, rtol=1e-6, atol=1e-7)
    # forward mode agrees: <grad, t> = jvp along t
    t = np.sin(np.arange(a.size)).reshape(a.shape) * (1 + 1j if np.iscomplexobj(a) else 1)
    _, tangent = fg.jvp(loss, (a,), (t,))
    np.testing.assert_allclose(tangent, np.sum(want * t).real, rtol=1e-6, atol=1e-7)


def test_vmap_over_any_axis():
    f = lambda a: fnp.fft.rfft2(a, s=(4, 6))  # noqa: E731
    for axis in (0, 1, 2):
        got = fg.vmap(f, in_axes=axis)(X)
        want = np.stack([np.fft.rfft2(np.take(X, i, axis), s=(4, 6))
                         for i in range(X.shape[axis])])
        np.testing.assert_allclose(got, want, atol=1e-10)


def test_roundtrips_and_hermitian_half_spectrum():
    np.testing.assert_allclose(fnp.fft.ifft(fnp.fft.fft(Z)), Z, atol=1e-12)
    np.testing.assert_allclose(fnp.fft.irfftn(fnp.fft.rfftn(X), s=X.shape), X, atol=1e-12)
    # irfft reads only the real part of the zero frequency: its derivative ignores the rest
    g = fg.grad(lambda a: fnp.sum(fnp.fft.irfft(a, n=4) ** 2))(np.array([1 + 2j, 0.5j, 3 - 1j]))
    assert g[0].imag == 0 and g[2].imag == 0


def test_lax_fft_program_and_numpy_dispatch():
    jaxpr = fg.make_jaxpr(lambda a: lax.fft(a, "rfft", (6, 5)))(X)
    assert "fft[fft_type=RFFT fft_lengths=(6, 5)]" in str(jaxpr)
    # np.fft functions applied to a tracer route to funcgrad.numpy.fft
    g = fg.grad(lambda a: np.real(np.fft.fft(a)).sum())(Z)
    np.testing.assert_allclose(g, fg.grad(lambda a: fnp.real(fnp.fft.fft(a)).sum())(Z))
