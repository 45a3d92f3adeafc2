"""funcgrad.numpy.fft: NumPy's discrete Fourier transforms, built on the lax.fft primitive.

fft / ifft / rfft / irfft / hfft / ihfft over one axis (length `n`), fft2 / ifft2 / rfft2 /
irfft2 and fftn / ifftn / rfftn / irfftn over several (lengths `s`, `axes`), with NumPy's `norm`
("backward", the default, "ortho" or "forward"); fftshift / ifftshift, fftfreq / rfftfreq.
An input is cropped or zero-padded to the requested length first, as NumPy does. Dtypes are
NumPy 2's: float32 / complex64 stay single precision, integers and float64 give complex128 (or
float64 from the inverse real transforms). Everything is differentiable, batches under vmap and
compiles under jit, on every backend (the primitive calls the array namespace's `fft` module).
"""

from __future__ import annotations

import operator

import numpy as np

from .. import lax
from ..core import user_line
from ..lax.fft import FftType
from ._core import asarray, convert, inexact_dtype

__all__ = ["fft", "ifft", "rfft", "irfft", "hfft", "ihfft", "fft2", "ifft2", "rfft2", "irfft2",
           "fftn", "ifftn", "rfftn", "irfftn", "fftshift", "ifftshift", "fftfreq", "rfftfreq"]

_NORMS = (None, "backward", "ortho", "forward")


# ---------------------------------------------------------------------------------------------
# Helpers: dtypes, lengths, axes and normalization

def _complex_input(a):
    x = asarray(a)
    return convert(x, np.result_type(inexact_dtype(x.dtype), np.complex64))


def _real_input(a, name):
    x = asarray(a)
    if x.dtype.kind == "c":
        raise TypeError(f"{name} needs a real input, got {x.dtype}{user_line()}; use fft for "
                        "complex data (NumPy discards the imaginary part with a warning).")
    return convert(x, inexact_dtype(x.dtype))


def _resize(x, axis, n):
    """x cropped or zero-padded at the end of `axis` to length n (NumPy's n / s)."""
    size = x.shape[axis]
    if n == size:
        return x
    if n < size:
        limit = list(x.shape)
        limit[axis] = n
        return lax.slice(x, (0,) * x.ndim, tuple(limit))
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (0, n - size, 0)
    return lax.pad(x, np.zeros((), x.dtype), tuple(config))


def _length(n, what="n"):
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"Invalid number of FFT data points ({n}) specified{user_line()}.")
    return n


def _axes_and_lengths(x, s, axes, name):
    """NumPy's rules for s and axes: axes default to the last len(s) axes (all axes without s);
    s defaults to the input's lengths along axes."""
    if axes is None:
        axes = tuple(range(x.ndim)) if s is None else tuple(range(-len(s), 0))
    axes = tuple(operator.index(a) for a in axes)
    for a in axes:
        if not -x.ndim <= a < x.ndim:
            raise np.exceptions.AxisError(f"{name}: axis {a} is out of bounds for an array of "
                                          f"rank {x.ndim}{user_line()}")
    axes = tuple(a % x.ndim for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name}: repeated axes {axes} are not supported{user_line()}.")
    if s is None:
        return axes, None
    s = tuple(s)
    if len(s) != len(axes):
        raise ValueError(f"{name}: s {s} and axes {axes} must have the same length"
                         f"{user_line()}.")
    return axes, tuple(_length(n, "s") for n in s)


def _scale(x, norm, n, inverse, name):
    """Apply NumPy's `norm` to a transform computed with the "backward" convention (forward
    unscaled, inverse scaled by 1/n)."""
    if norm not in _NORMS:
        raise ValueError(f"{name}: invalid norm {norm!r}; use 'backward', 'ortho' or 'forward'"
                         f"{user_line()}.")
    if norm in (None, "backward"):
        return x
    if norm == "ortho":
        factor = np.sqrt(n) if inverse else 1 / np.sqrt(n)
    else:
        factor = n if inverse else 1 / n
    return lax.mul(x, np.asarray(factor, x.dtype))


def _transform(x, axes, fft_type, lengths):
    """The lax transform of x over `axes`; lengths are the fft_lengths (the real output's
    lengths for IRFFT). lax.fft takes up to 3 axes: more are done in steps (a real transform on
    the last axis and complex ones on the others, as rfftn / irfftn factor)."""
    if len(axes) <= 3:
        return _on_axes(x, axes, fft_type, lengths)
    if fft_type == FftType.IRFFT:
        x = _transform(x, axes[:-1], FftType.IFFT, lengths[:-1])
        return _on_axes(x, axes[-1:], FftType.IRFFT, lengths[-1:])
    if fft_type == FftType.RFFT:
        x = _on_axes(x, axes[-1:], FftType.RFFT, lengths[-1:])
        return _transform(x, axes[:-1], FftType.FFT, lengths[:-1])
    for i in range(0, len(axes), 3):
        x = _on_axes(x, axes[i:i + 3], fft_type, lengths[i:i + 3])
    return x


def _on_axes(x, axes, fft_type, lengths):
    """lax.fft over up to 3 axes: moved to the end (in order) and back."""
    perm = [a for a in range(x.ndim) if a not in axes] + list(axes)
    if perm == list(range(x.ndim)):
        return lax.fft(x, fft_type, lengths)
    out = lax.fft(lax.transpose(x, tuple(perm)), fft_type, lengths)
    return lax.transpose(out, tuple(int(i) for i in np.argsort(perm)))


# ---------------------------------------------------------------------------------------------
# One axis

def _one_axis(a, n, axis, norm, kind, name):
    return _n_axes(a, None if n is None else (n,), (axis,), norm, kind, name)


def fft(a, n=None, axis=-1, norm=None):
    """The discrete Fourier transform along `axis` (length n: crop or zero-pad first)."""
    return _one_axis(a, n, axis, norm, "fft", "fft")


def ifft(a, n=None, axis=-1, norm=None):
    """The inverse discrete Fourier transform along `axis`."""
    return _one_axis(a, n, axis, norm, "ifft", "ifft")


def rfft(a, n=None, axis=-1, norm=None):
    """The transform of real input along `axis`: the n // 2 + 1 non-negative frequencies."""
    return _one_axis(a, n, axis, norm, "rfft", "rfft")


def irfft(a, n=None, axis=-1, norm=None):
    """The inverse of rfft: a real signal of length n (default 2 * (m - 1) for m frequencies)."""
    return _one_axis(a, n, axis, norm, "irfft", "irfft")


def hfft(a, n=None, axis=-1, norm=None):
    """The transform of a Hermitian-symmetric signal given by its first half: real output of
    length n (default 2 * (m - 1))."""
    x = _complex_input(a)
    m = x.shape[axis]
    n = 2 * (m - 1) if n is None else _length(n)
    inverse_norm = {None: "forward", "backward": "forward", "forward": "backward",
                    "ortho": "ortho"}.get(norm, norm)
    return irfft(lax.conj(x), n, axis, inverse_norm)


def ihfft(a, n=None, axis=-1, norm=None):
    """The inverse of hfft: the first n // 2 + 1 values of the inverse transform of real a."""
    x = _real_input(a, "ihfft")
    n = x.shape[axis] if n is None else _length(n)
    inverse_norm = {None: "forward", "backward": "forward", "forward": "backward",
                    "ortho": "ortho"}.get(norm, norm)
    return lax.conj(rfft(x, n, axis, inverse_norm))


# ---------------------------------------------------------------------------------------------
# Several axes

def _n_axes(a, s, axes, norm, kind, name):
    if kind in ("fft", "ifft"):
        x = _complex_input(a)
    elif kind == "rfft":
        x = _real_input(a, name)
    else:
        x = _complex_input(a)
    axes, s = _axes_and_lengths(x, s, axes, name)
    if not axes:
        return x
    if kind == "irfft":
        last = axes[-1]
        out_last = 2 * (x.shape[last] - 1) if s is None else s[-1]
        if out_last < 1:
            raise ValueError(f"{name}: invalid number of data points ({out_last}) along axis "
                             f"{last}{user_line()}.")
        lengths = (tuple(x.shape[ax] for ax in axes[:-1]) if s is None else s[:-1]) + (
            out_last,)
        for ax, n in zip(axes[:-1], lengths[:-1]):
            x = _resize(x, ax, n)
        x = _resize(x, last, out_last // 2 + 1)
        out = _transform(x, axes, FftType.IRFFT, lengths)
        return _scale(out, norm, int(np.prod(lengths)), True, name)
    lengths = tuple(x.shape[ax] for ax in axes) if s is None else s
    for ax, n in zip(axes, lengths):
        x = _resize(x, ax, n)
    fft_type = {"fft": FftType.FFT, "ifft": FftType.IFFT, "rfft": FftType.RFFT}[kind]
    out = _transform(x, axes, fft_type, lengths)
    return _scale(out, norm, int(np.prod(lengths)), kind == "ifft", name)


def fftn(a, s=None, axes=None, norm=None):
    """The n-dimensional transform over `axes` (all by default; the last len(s) with s)."""
    return _n_axes(a, s, axes, norm, "fft", "fftn")


def ifftn(a, s=None, axes=None, norm=None):
    """The n-dimensional inverse transform."""
    return _n_axes(a, s, axes, norm, "ifft", "ifftn")


def rfftn(a, s=None, axes=None, norm=None):
    """The n-dimensional transform of real input (the last axis keeps n // 2 + 1 frequencies)."""
    return _n_axes(a, s, axes, norm, "rfft", "rfftn")


def irfftn(a, s=None, axes=None, norm=None):
    """The inverse of rfftn: real output with lengths s (the last by default 2 * (m - 1))."""
    return _n_axes(a, s, axes, norm, "irfft", "irfftn")


def fft2(a, s=None, axes=(-2, -1), norm=None):
    """The transform over two axes (the last two by default)."""
    return _n_axes(a, s, axes, norm, "fft", "fft2")


def ifft2(a, s=None, axes=(-2, -1), norm=None):
    """The inverse transform over two axes."""
    return _n_axes(a, s, axes, norm, "ifft", "ifft2")


def rfft2(a, s=None, axes=(-2, -1), norm=None):
    """The transform of real input over two axes."""
    return _n_axes(a, s, axes, norm, "rfft", "rfft2")


def irfft2(a, s=None, axes=(-2, -1), norm=None):
    """The inverse of rfft2."""
    return _n_axes(a, s, axes, norm, "irfft", "irfft2")


# ---------------------------------------------------------------------------------------------
# Frequencies and shifts

def _shift(x, axes, sign):
    from ._shape import roll
    x = asarray(x)
    if axes is None:
        axes = tuple(range(x.ndim))
    elif isinstance(axes, (int, np.integer)):
        axes = (int(axes),)
    shifts = tuple(sign * (x.shape[a] // 2) for a in axes)
    return roll(x, shifts, tuple(axes)) if axes else x


def fftshift(x, axes=None):
    """The zero frequency moved to the center (a roll by n // 2 along each axis)."""
    return _shift(x, axes, 1)


def ifftshift(x, axes=None):
    """The inverse of fftshift (a roll by -(n // 2))."""
    return _shift(x, axes, -1)


def _freq_dtype(d, dtype):
    if dtype is not None:
        return np.dtype(dtype)
    dt = getattr(d, "dtype", None)
    return np.dtype(np.float64) if dt is None else inexact_dtype(np.dtype(dt))


def fftfreq(n, d=1.0, *, dtype=None, device=None):
    """The sample frequencies of an n-point transform with sample spacing d:
    [0, 1, ..., (n-1)//2, -(n//2), ..., -1] / (d n)."""
    n = _length(n)
    k = np.concatenate([np.arange(0, (n - 1) // 2 + 1), np.arange(-(n // 2), 0)])
    return _frequencies(k, n, d, dtype)


def rfftfreq(n, d=1.0, *, dtype=None, device=None):
    """The sample frequencies of rfft: [0, 1, ..., n // 2] / (d n)."""
    n = _length(n)
    return _frequencies(np.arange(0, n // 2 + 1), n, d, dtype)


def _frequencies(k, n, d, dtype):
    dt = _freq_dtype(d, dtype)
    if isinstance(d, (int, float)):
        return asarray(k / (d * n), dt)  # a constant, created where the default backend is
    from ._arithmetic import true_divide
    return convert(true_divide(asarray(k, dt), lax.mul(convert(asarray(d), dt),
                                                        np.asarray(n, dt))), dt)
