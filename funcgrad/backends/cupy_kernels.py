"""Compiling and launching the generated CUDA kernels with CuPy (funcgrad/backends/cuda_source.py
writes them): one `cupy.RawKernel` per elementwise fusion group, one `cupy.ReductionKernel` per
group ending in a reduction, each compiled once and shared by source text. A kernel that fails
to compile raises `KernelCompileError` with the compiler's message and the numbered source.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["KernelCompileError", "KERNEL_OPTIONS", "Launcher", "Reducer", "compile_error"]


class KernelCompileError(RuntimeError):
    """A generated kernel did not compile: the message holds the source and the compiler's."""


def compile_error(kernel, message):
    numbered = "\n".join(f"{i + 1:4d}  {line}" for i, line in
                         enumerate(kernel.source.splitlines()))
    return KernelCompileError(
        f"funcgrad could not compile generated CUDA kernel {kernel.name}.\n"
        f"Compiler message:\n{message}\n"
        f"Generated source:\n{numbered}\n"
        "This is a bug in funcgrad's CUDA code generator: please report it with this message. "
        "Meanwhile fg.jit(f, backend='gpu') is unaffected for programs without this kernel, and "
        "eager (un-jitted) calls run without fused kernels.")


_raw_kernels: dict = {}   # source -> cupy.RawKernel, shared by every program that generates it

# No fused multiply-add contraction: each arithmetic operation of a fused chain rounds as it does
# when CuPy runs it alone, so jit and eager calls (and debug_nans' op-by-op re-run) differ only
# where a primitive's kernel formula differs from its CuPy implementation.
KERNEL_OPTIONS = ("--fmad=false",)


class Launcher:
    """Calls one fused kernel: allocates its outputs and launches one thread per element."""

    def __init__(self, cupy, kernel, shape):
        self.cupy = cupy
        self.kernel = kernel
        self.shape = tuple(shape)
        self.size = math.prod(self.shape)
        self.out_dtypes = [np.dtype(dt) for _, dt in kernel.outputs]
        raw = _raw_kernels.get(kernel.source)
        if raw is None:
            raw = cupy.RawKernel(kernel.source, kernel.name, options=KERNEL_OPTIONS)
            try:
                raw.compile()
            except Exception as e:  # cupy.cuda.compiler.CompileException and friends
                raise compile_error(kernel, str(e)) from None
            _raw_kernels[kernel.source] = raw
        self.raw = raw

    def __call__(self, *args):
        cp = self.cupy
        ins = [cp.ascontiguousarray(a) for a in args]
        outs = [cp.empty(self.shape, dt) for dt in self.out_dtypes]
        if self.size:
            block = 256
            grid = min((self.size + block - 1) // block, 65535 * 8)
            self.raw((grid,), (block,), (*ins, *outs, np.int64(self.size)))
        return outs


class Reducer:
    """Calls one fused reduction: a `cupy.ReductionKernel` mapping the group over the elements
    and reducing over the kernel's axes (inputs of rank 0 broadcast)."""

    def __init__(self, cupy, kernel):
        self.axes = tuple(kernel.axes)
        raw = _raw_kernels.get(kernel.source)
        if raw is None:
            raw = _raw_kernels[kernel.source] = cupy.ReductionKernel(
                kernel.in_params, kernel.out_params, kernel.map_expr, kernel.reduce_expr,
                kernel.post_map_expr, kernel.identity, name=kernel.name,
                reduce_type=kernel.reduce_type, preamble=kernel.preamble,
                options=KERNEL_OPTIONS)
        self.kernel = kernel
        self.raw = raw

    def __call__(self, *args):
        try:
            return [self.raw(*args, axis=self.axes)]
        except Exception as e:
            if "compil" in type(e).__name__.lower() or "compil" in str(e).lower()[:200]:
                raise compile_error(self.kernel, str(e)) from None
            raise
