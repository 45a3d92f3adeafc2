"""Sorting conveniences of jax.lax composed from the sort primitive (which is defined, with its
rules, in funcgrad/lax/indexing.py): sort_key_val.
"""

from __future__ import annotations

from . import indexing as ix
from ._util import _arr, normalize_axis

__all__ = ["sort_key_val"]


def sort_key_val(keys, values, dimension=-1, is_stable=True):
    """(sorted keys, values permuted alike) along `dimension`."""
    keys, values = _arr(keys), _arr(values)
    dimension = normalize_axis(dimension, keys.ndim)
    return tuple(ix.sort(keys, values, dimension=dimension, is_stable=is_stable, num_keys=1))
