"""jit's tests on the other CPU backend: the suite runs with the compiled "llvm" backend (the
default); this runs the jit, pass, control-flow and optimizer-update tests again with the NumPy
code generator (`FUNCGRAD_CPU_BACKEND=numpy`), the reference and fallback, in a child process.
Skipped inside such a run, and in GPU mode.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import funcgrad as fg

ROOT = Path(__file__).resolve().parent.parent
FILES = ["tests/test_jit.py", "tests/test_passes.py", "tests/test_control_flow.py",
         "tests/test_fused_updates.py", "tests/test_checkpoint.py"]

pytestmark = pytest.mark.skipif(
    fg.config.read("cpu_backend") == "numpy" or fg.default_backend() == "gpu",
    reason="already on the NumPy backend (or in GPU mode)")


def test_jit_tests_pass_on_the_numpy_backend():
    env = dict(os.environ, FUNCGRAD_CPU_BACKEND="numpy",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-o", "addopts=", *FILES], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed)", out)}
    assert counts.get("passed", 0) > 100 and not counts.get("failed"), out[-2000:]
