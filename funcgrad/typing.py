"""Types for annotations, as `jax.Array` and `jax.typing`: `fg.Array`, `fg.typing.ArrayLike`,
`fg.typing.DTypeLike`.

funcgrad's arrays are plain NumPy or CuPy arrays (DESIGN.md, invariant 1), and inside a
transform a tracer stands for one; `fg.Array` names all three, for annotations and for
`isinstance(x, fg.Array)` (NumPy scalars, Python numbers and lists are ArrayLike, not Array).
"""

from __future__ import annotations

import abc
from typing import Union

import numpy as np

from .core import Tracer

__all__ = ["Array", "ArrayLike", "DTypeLike"]


class Array(abc.ABC):  # noqa: B024 (an ABC for isinstance and annotations only)
    """A funcgrad array: a `numpy.ndarray`, a `cupy.ndarray`, or a tracer standing for one
    inside grad / jit / vmap. Not instantiable: arrays are made by `fnp` functions."""

    @classmethod
    def __subclasshook__(cls, C):
        if cls is Array and any(k.__name__ == "ndarray" and k.__module__.split(".")[0] == "cupy"
                                for k in C.__mro__):
            return True
        return NotImplemented


Array.register(np.ndarray)
Array.register(Tracer)

ArrayLike = Union[Array, np.ndarray, np.generic, bool, int, float, complex]
DTypeLike = Union[str, type, np.dtype]
