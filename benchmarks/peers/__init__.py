"""Cross-library comparison of the BENCHMARKS.md workloads: funcgrad, hand-written NumPy (the
floor), and autograd, JAX and PyTorch when installed, each implementation in its own process.

    python -m benchmarks.peers [--quick] [--workloads mlp-small,hessian] [--impls numpy,jax]
                               [--markdown FILE] [--threads N]
    python -m benchmarks.peers.worker --impl jax --workload mlp-train --steps 20   # one process

Layout: `common.py` holds the workload definitions and the shared data (weights from
`default_rng(0)`, data from `default_rng(1)`, float32); `<impl>_impl.py` exposes, for each
workload it supports, a builder that returns a zero-argument `step()`; `worker.py` runs one
implementation of one workload in a process and reports JSON; `driver.py` starts the workers,
interleaves them and prints the tables. Nothing here imports a library at module level, so this
package can be imported (and the driver can list what each implementation supports) without
any peer installed.
"""
