"""Shared test setup.

* Every test starts from funcgrad's default settings, so a test that turns on debug_nans (or any
  other setting) and fails half-way cannot change the tests after it.
* GPU mode: `FUNCGRAD_BACKEND=gpu pytest` runs the suite with the GPU as the default backend.
  Host inputs the tests make with NumPy are copied to the device by the funcgrad calls that
  take them (DESIGN invariant 1: host data runs on the default backend), results are CuPy
  arrays, and the tests' own NumPy calls (`HostNumPy`: reference values, numpy.testing) fetch
  them first. Tests that check the NumPy backend itself are marked `cpu_only` and skipped.
  Without CuPy or a CUDA device every test is skipped with the reason.
* Compiled CPU kernels (jit's llvm backend) are cached in a temporary folder.
* `FUNCGRAD_SIMULATE_GPU=1` puts `tests/simgpu` (a CuPy simulator: NumPy arrays that refuse
  implicit host conversion, kernels compiled with g++) first on sys.path, so GPU mode and
  tests/test_gpu.py also run, slowly, on machines without a GPU.
"""

import functools
import os
import sys
import tempfile
import types
from pathlib import Path

# Compiled CPU kernels are cached in a temporary folder, not the user's ~/.cache (kept between
# runs, so that a second run does not compile them again).
os.environ.setdefault("FUNCGRAD_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"funcgrad-test-kernels-{getattr(os, 'getuid', lambda: 0)()}"))

if os.environ.get("FUNCGRAD_SIMULATE_GPU", "") not in ("", "0"):
    sys.path.insert(0, str(Path(__file__).parent / "simgpu"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from numeric import gpu_unavailable  # noqa: E402  (tests/ is on sys.path, as for every test)

import funcgrad as fg  # noqa: E402

GPU_MODE = fg.default_backend() == "gpu"


def to_host(x):
    """CuPy arrays (also inside lists, tuples and dicts) fetched to NumPy; the rest as it is."""
    if hasattr(x, "__cuda_array_interface__") and hasattr(x, "get"):
        return x.get()
    if type(x) in (list, tuple):
        return type(x)(to_host(e) for e in x)
    if type(x) is dict:
        return {k: to_host(v) for k, v in x.items()}
    return x


def _fetching(assert_fn):
    @functools.wraps(assert_fn)
    def check(*args, **kwargs):
        return assert_fn(*[to_host(a) for a in args],
                         **{k: to_host(v) for k, v in kwargs.items()})
    return check


class HostNumPy(types.ModuleType):
    """NumPy for the tests' own reference code in GPU mode: every function fetches the device
    arrays among its arguments first. The test modules' `np` is replaced by it, so a test's
    `np.asarray(out)` or `np.stack(outs)` works on CuPy results, while funcgrad's own code keeps
    the real NumPy, on which any implicit device-to-host conversion still fails."""

    def __init__(self, module):
        super().__init__(module.__name__)
        self._module = module

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if isinstance(attr, types.ModuleType):
            return HostNumPy(attr)
        if isinstance(attr, np.ufunc):
            return _HostUfunc(attr)
        if callable(attr) and not isinstance(attr, type):
            return _fetching(attr)
        return attr


class _HostUfunc:
    def __init__(self, ufunc):
        self._ufunc = ufunc

    def __call__(self, *args, **kwargs):
        return _fetching(self._ufunc)(*args, **kwargs)

    def __getattr__(self, name):
        attr = getattr(self._ufunc, name)
        return _fetching(attr) if callable(attr) else attr


def _use_host_numpy_in_tests():
    host = HostNumPy(np)
    tests = Path(__file__).resolve().parent
    for mod in list(sys.modules.values()):
        path = getattr(mod, "__file__", None)
        if (path and Path(path).resolve().parent == tests and mod.__name__ != __name__
                and getattr(mod, "np", None) is np):
            mod.np = host


if GPU_MODE:
    for _name in ("assert_allclose", "assert_array_equal", "assert_array_almost_equal",
                  "assert_equal", "assert_almost_equal", "assert_array_less",
                  "assert_array_max_ulp"):
        setattr(np.testing, _name, _fetching(getattr(np.testing, _name)))


def pytest_collection_modifyitems(config, items):
    if not GPU_MODE:
        return
    reason = gpu_unavailable()
    if reason is not None:
        skip = pytest.mark.skip(reason=f"FUNCGRAD_BACKEND=gpu: {reason}")
        for item in items:
            item.add_marker(skip)
        return
    _use_host_numpy_in_tests()
    cpu_only = pytest.mark.skip(reason="checks the NumPy backend itself (FUNCGRAD_BACKEND=gpu)")
    for item in items:
        if item.get_closest_marker("cpu_only"):
            item.add_marker(cpu_only)


@pytest.fixture(autouse=True)
def _default_settings():
    yield
    fg.config.reset()


# The tests write only to temporary folders: a test that leaves a file in the repository's
# outputs/ (where the examples put their plots by default) fails the run.
_OUTPUTS = Path(__file__).resolve().parent.parent / "outputs"


def _outputs_snapshot():
    if not _OUTPUTS.exists():
        return {}
    return {p: p.stat().st_mtime_ns for p in _OUTPUTS.rglob("*")}


_OUTPUTS_BEFORE = _outputs_snapshot()


def pytest_sessionfinish(session, exitstatus):
    after = _outputs_snapshot()
    written = sorted(str(p) for p, t in after.items() if _OUTPUTS_BEFORE.get(p) != t)
    if written:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"\nFAILED: the tests wrote into the repository: {written[:5]} (write to tmp_path)",
            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
