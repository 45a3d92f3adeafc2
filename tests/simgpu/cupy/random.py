"""cupy.random, simulated with NumPy's generators: every sample is a device array.

The legacy functions (`cupy.random.normal`, `rand`, `randint`, ...) draw from one global
RandomState (`seed` reseeds it); `RandomState(seed)` and `default_rng(seed)` make new ones. As in
CuPy, the float distributions take `dtype=` (e.g. float32 samples). The streams differ from real
CuPy's (its generators are cuRAND's), so no test may rely on the exact numbers.
"""

from __future__ import annotations

import numpy as np

from ._core import unwrap, wrap

_GENERATOR_DTYPES = {"random", "standard_normal", "standard_exponential", "standard_gamma",
                     "integers"}


class _Sampler:
    """NumPy generator `gen`, with methods taking and returning device arrays."""

    def __init__(self, gen):
        self._gen = gen

    def __getattr__(self, name):
        fn = getattr(self._gen, name)
        if name.startswith("_") or not callable(fn):
            return fn
        native = name == "randint" or (isinstance(self._gen, np.random.Generator)
                                       and name in _GENERATOR_DTYPES)

        def call(*args, **kwargs):
            dtype = None if native else kwargs.pop("dtype", None)
            found = []
            out = fn(*unwrap(args, found), **unwrap(kwargs, found))
            if dtype is not None:
                out = np.asarray(out).astype(dtype)
            return wrap(out, found)
        call.__name__ = name
        return call


class RandomState(_Sampler):
    """cupy.random.RandomState(seed): a legacy generator of device arrays."""

    def __init__(self, seed=None):
        super().__init__(np.random.RandomState(seed))

    def seed(self, seed=None):
        self._gen.seed(seed)


class Generator(_Sampler):
    """cupy.random.Generator: NumPy's Generator API on device arrays."""


def default_rng(seed=None):
    return Generator(np.random.default_rng(seed))


_global = RandomState()


def get_random_state():
    return _global


def seed(seed=None):
    _global.seed(seed)


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(_global, name)
