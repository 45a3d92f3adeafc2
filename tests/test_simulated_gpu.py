"""The GPU code paths, run in CI on the CuPy simulator (tests/simgpu) in child processes:

* tests/test_gpu.py (eager, grad, vmap, jit with generated kernels, placement), once as it is
  and once with the GPU as the default backend;
* benchmarks/gpu.py --quick, which must run end to end and get the CPU's first-step loss;
* the whole suite in GPU mode (`FUNCGRAD_BACKEND=gpu`, see tests/conftest.py).

Each runs in its own process because the simulator takes the name `cupy`. Skipped where a real
CuPy is installed (there the GPU tests run on the device instead), inside a GPU-mode run (no
nesting), or without g++ (the simulator compiles the generated CUDA kernels with it).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIM = ROOT / "tests" / "simgpu"


def _skip_reason():
    spec = importlib.util.find_spec("cupy")
    if spec is not None and SIM not in Path(spec.origin).resolve().parents:
        return "a real CuPy is installed: the GPU tests run on the device"
    if os.environ.get("FUNCGRAD_BACKEND", "").lower() == "gpu":
        return "already in GPU mode"
    if shutil.which("g++") is None:
        return "g++ not found (the simulator compiles the generated kernels with it)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def _run(args, gpu_default=False, timeout=600):
    env = dict(os.environ, FUNCGRAD_SIMULATE_GPU="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(SIM), str(ROOT),
                                           os.environ.get("PYTHONPATH", "")]))
    env.pop("FUNCGRAD_BACKEND", None)
    if gpu_default:
        env["FUNCGRAD_BACKEND"] = "gpu"
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc, proc.stdout + proc.stderr


def _counts(output):
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", output)}


@pytest.mark.parametrize("gpu_default", [False, True], ids=["cpu-default", "gpu-default"])
def test_gpu_tests_pass_on_the_simulator(gpu_default):
    proc, out = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                      "tests/test_gpu.py"], gpu_default)
    assert proc.returncode == 0, out[-4000:]
    assert _counts(out).get("passed", 0) >= 8, out[-2000:]


def test_gpu_benchmark_runs_on_the_simulator():
    proc, out = _run(["-m", "benchmarks.gpu", "--quick"])
    assert proc.returncode == 0, out[-4000:]
    assert "fused kernels" in out and "transformer" in out, out
    rel = float(re.search(r"relative difference ([0-9.e+-]+)", out).group(1))
    assert rel < 1e-5, out


def test_the_suite_passes_with_the_gpu_as_default_backend():
    """`FUNCGRAD_BACKEND=gpu pytest` on the simulator: every test runs with CuPy arrays, the
    MPI runs and the notebooks included (the examples run in the test below; the tests marked
    cpu_only skip)."""
    proc, out = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-x",
                      "tests/", "--ignore=tests/test_examples.py",
                      "--ignore=tests/test_simulated_gpu.py"],
                     gpu_default=True, timeout=1200)
    assert proc.returncode == 0, out[-6000:]
    assert _counts(out).get("passed", 0) > 1500, out[-2000:]


@pytest.mark.parametrize("name", ["demo", "digits_finetune", "newton_logistic",
                                  "per_example_grads", "adversarial", "data_parallel"])
def test_examples_run_with_the_gpu_as_default_backend(name, tmp_path):
    # plots go to a temporary folder: the tests write nothing into the repository
    proc, out = _run([f"examples/{name}.py", "--quick", "--quiet", "--out", str(tmp_path)],
                     gpu_default=True)
    assert proc.returncode == 0, out[-4000:]
