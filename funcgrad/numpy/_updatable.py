"""Functional updates on values: the arrays fnp.asarray and fnp.array return have JAX's `.at`.

`fnp.asarray(x).at[i].set(v)` is how a JAX user writes an update everywhere, transform or not.
Under a transform fnp.asarray returns a tracer, which has `.at`. Outside one, called from user
code, it returns an `UpdatableArray`: a zero-copy view of the NumPy array as an ndarray subclass
whose only addition is `.at` (the same code as the tracers', so every method, `mode=` and
out-of-bound behaviour agree). Its updates return UpdatableArrays too, so they chain.

Everything else stays a plain numpy.ndarray (DESIGN invariant 1): funcgrad's own modules get
plain arrays from fnp.asarray (it checks its caller's module), NumPy's ufuncs and functions
applied to an UpdatableArray return plain arrays (`__array_ufunc__` / `__array_function__` unwrap
it), funcgrad's functions and transforms convert it on entry, and it prints as an array. Only
ndarray's own view methods (x.T, x.reshape, x[1:]) keep the subclass, so those views have `.at`
too. (On a GPU default backend fnp.asarray returns CuPy arrays, which have no `.at`: use
functional updates inside jit there.)
"""

from __future__ import annotations

import numpy as np

from ._indexing import IndexUpdateHelper

__all__ = ["UpdatableArray"]


class UpdatableArray(np.ndarray):
    """A numpy.ndarray with JAX's functional updates: x.at[idx].set / add / multiply / ... / get
    return new arrays and never modify x."""

    @property
    def at(self):
        return IndexUpdateHelper(self.view(np.ndarray), wrap=updatable)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(_plain(a) for a in inputs)
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return func(*_plain_tree(args), **_plain_tree(kwargs))

    def __repr__(self):
        return repr(self.view(np.ndarray))

    def __reduce__(self):  # pickles (and deep-copies) as a plain array
        return self.view(np.ndarray).__reduce__()


def updatable(x):
    """x (a NumPy array) as an UpdatableArray view; anything else as it is."""
    return x.view(UpdatableArray) if isinstance(x, np.ndarray) else x


def _plain(a):
    return a.view(np.ndarray) if isinstance(a, UpdatableArray) else a


def _plain_tree(x):
    if isinstance(x, UpdatableArray):
        return x.view(np.ndarray)
    if type(x) in (list, tuple):
        return type(x)(_plain_tree(e) for e in x)
    if type(x) is dict:
        return {k: _plain_tree(v) for k, v in x.items()}
    return x
