"""The fft primitive: discrete Fourier transforms over an array's trailing axes (JAX's lax.fft).

`fft(x, fft_type, fft_lengths)` transforms the last len(fft_lengths) axes of x:
  FFT    complex -> complex, unscaled         (numpy.fft.fftn)
  IFFT   complex -> complex, scaled by 1/N    (numpy.fft.ifftn)
  RFFT   real -> complex, the last axis keeps n // 2 + 1 frequencies   (numpy.fft.rfftn)
  IRFFT  complex -> real, fft_lengths are the real output's lengths    (numpy.fft.irfftn)
funcgrad.numpy.fft builds NumPy's functions (n / s, axes, norm) on it.

Derivatives follow JAX's convention for complex numbers (a cotangent pairs with a tangent by
Re(sum(ct * t))). The transform is linear, so its JVP applies it to the tangent. Its VJP is its
transpose: the DFT matrix is symmetric, so FFT and IFFT are their own transposes; RFFT's is the
real part of the FFT of the cotangent zero-padded to the full length; IRFFT's is the conjugated
RFFT of the cotangent, scaled by 1/N and doubled on the frequencies a half spectrum stands in for
twice (as JAX's rules).
"""

from __future__ import annotations

import enum
import math

import numpy as np

from ..core import Primitive, ShapedArray, bind
from ..core.avals import dtype_kind
from . import elementwise as ew
from ._batching import move_to_front
from ._util import astype, dtype_of, shape_error, small_floats_in_float32
from .structural import broadcast_in_dim, pad

__all__ = ["FftType", "fft", "fft_p"]


class FftType(enum.IntEnum):
    """The four transforms of lax.fft (the names of JAX's and XLA's FftType)."""

    FFT = 0
    IFFT = 1
    RFFT = 2
    IRFFT = 3

    def __repr__(self):  # as programs print it: fft[fft_type=RFFT fft_lengths=(8,)]
        return self.name


def _fft_type(fft_type):
    if isinstance(fft_type, FftType):
        return fft_type
    if isinstance(fft_type, str):
        try:
            return FftType[fft_type.upper()]
        except KeyError:
            pass
    name = getattr(fft_type, "name", None)  # jax.lax.FftType members and the like
    if isinstance(name, str) and name.upper() in FftType.__members__:
        return FftType[name.upper()]
    raise ValueError(f"fft: unknown fft_type {fft_type!r}; use one of 'fft', 'ifft', 'rfft', "
                     "'irfft' (or lax.FftType).")


def _complex_of(dtype):
    return np.result_type(dtype, np.complex64)


def _fft_abstract(x, *, fft_type, fft_lengths):
    k = len(fft_lengths)
    if not 1 <= k <= 3:
        raise shape_error("fft", f"transforms 1 to 3 trailing axes, got fft_lengths "
                          f"{fft_lengths}")
    if x.ndim < k:
        raise shape_error("fft", f"operand {x.str_short()} has fewer than {k} axes to transform")
    lead, tail = x.shape[:-k], x.shape[-k:]
    if fft_type in (FftType.FFT, FftType.IFFT):
        if x.dtype.kind != "c":
            raise TypeError(f"fft: {fft_type.name} needs a complex operand, got {x.str_short()}"
                            " (funcgrad.numpy.fft converts for you)")
        if tail != fft_lengths:
            raise shape_error("fft", f"{fft_type.name} of {x.str_short()}: the trailing axes "
                              f"must equal fft_lengths {fft_lengths}")
        return ShapedArray(x.shape, x.dtype)
    if fft_type == FftType.RFFT:
        if dtype_kind(x.dtype) != "f":
            raise TypeError(f"fft: RFFT needs a real floating operand, got {x.str_short()}")
        if tail != fft_lengths:
            raise shape_error("fft", f"RFFT of {x.str_short()}: the trailing axes must equal "
                              f"fft_lengths {fft_lengths}")
        return ShapedArray(lead + tail[:-1] + (tail[-1] // 2 + 1,), _complex_of(x.dtype))
    if x.dtype.kind != "c":
        raise TypeError(f"fft: IRFFT needs a complex operand, got {x.str_short()}")
    want = fft_lengths[:-1] + (fft_lengths[-1] // 2 + 1,)
    if tail != want:
        raise shape_error("fft", f"IRFFT of {x.str_short()} to lengths {fft_lengths}: the "
                          f"trailing axes must be {want}")
    return ShapedArray(lead + fft_lengths, ew.real_dtype(x.dtype))


def _fft_impl(xp, x, *, fft_type, fft_lengths):
    axes = tuple(range(-len(fft_lengths), 0))
    if fft_type == FftType.FFT:
        out, dtype = xp.fft.fftn(x, axes=axes), dtype_of(x)
    elif fft_type == FftType.IFFT:
        out, dtype = xp.fft.ifftn(x, axes=axes), dtype_of(x)
    elif fft_type == FftType.RFFT:
        out, dtype = xp.fft.rfftn(x, axes=axes), _complex_of(dtype_of(x))
    else:
        out, dtype = xp.fft.irfftn(x, s=fft_lengths, axes=axes), ew.real_dtype(dtype_of(x))
    return astype(xp, out, dtype, copy=False)  # NumPy < 2 and some backends widen float32


def _fft_jvp(primals, tangents, out, *, fft_type, fft_lengths):
    return fft(tangents[0], fft_type, fft_lengths)


def _rfft_transpose(ct, fft_lengths):
    """The adjoint of RFFT: zero-pad the half spectrum to the full length, FFT, real part."""
    n = fft_lengths[-1]
    missing = n - ct.shape[-1]
    config = [(0, 0, 0)] * (ct.ndim - 1) + [(0, missing, 0)]
    full = pad(ct, np.zeros((), ct.dtype), tuple(config))
    return ew.real(fft(full, FftType.FFT, fft_lengths))


def _irfft_transpose(ct, fft_lengths):
    """The adjoint of IRFFT: conj(RFFT(ct)) / N, doubled on the frequencies 1 .. n/2 - 1 (each
    stands for itself and its mirror image in the full spectrum)."""
    x = fft(ct, FftType.RFFT, fft_lengths)
    m, odd = x.shape[-1], fft_lengths[-1] % 2
    weights = np.concatenate([[1.0], np.full(m - 2 + odd, 2.0), np.ones(1 - odd)])[:m]
    weights = weights / math.prod(fft_lengths)
    scale = broadcast_in_dim(np.asarray(weights, x.dtype), x.shape, (x.ndim - 1,))
    return ew.conj(ew.mul(x, scale))


def _fft_vjp(ct, primals, out, active, *, fft_type, fft_lengths):
    if fft_type == FftType.RFFT:  # (a 16-bit float operand: its cotangent rounded back)
        return (ew.convert_element_type(_rfft_transpose(ct, fft_lengths), primals[0].dtype),)
    if fft_type == FftType.IRFFT:
        return (_irfft_transpose(ct, fft_lengths),)
    return (fft(ct, fft_type, fft_lengths),)  # the DFT matrix is symmetric


def _fft_batch(vals, dims, *, fft_type, fft_lengths):
    x, d = vals[0], dims[0]
    if d >= x.ndim - len(fft_lengths):  # the batch axis is among the transformed ones
        x, d = move_to_front(x, d), 0
    return bind(fft_p, x, fft_type=fft_type, fft_lengths=fft_lengths), d


fft_p = Primitive("fft", impl=_fft_impl, abstract_eval=_fft_abstract, jvp=_fft_jvp,
                  vjp=_fft_vjp, batch=_fft_batch, residuals="none")
fft_p.impl = small_floats_in_float32(fft_p.impl)  # 16-bit floats: pocketfft has none


def fft(x, fft_type, fft_lengths):
    """The fft_type transform (FftType or 'fft' / 'ifft' / 'rfft' / 'irfft') of x over its last
    len(fft_lengths) axes (1 to 3): fft_lengths are the input's trailing lengths, except for
    IRFFT, where they are the real output's."""
    fft_type = _fft_type(fft_type)
    fft_lengths = tuple(int(n) for n in np.atleast_1d(fft_lengths))
    return bind(fft_p, x, fft_type=fft_type, fft_lengths=fft_lengths)

