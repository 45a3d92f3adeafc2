"""cupy.fft, simulated with numpy.fft (device arrays in and out)."""

import sys

import numpy as np

from ._core import module_attr

_cache: dict = {}


def __getattr__(name):
    return module_attr(sys.modules[__name__], np.fft, name, _cache)
