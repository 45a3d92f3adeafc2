"""The "llvm" backend, jit's default on the CPU: the NumPy code generator's straight-line Python
function, in which every fusion group is one call of a compiled kernel.

jit runs the fusion pass with `FUSION` first: elementwise equations the kernels translate
(`llvm_codegen.can_translate`: everything but the float functions NumPy computes faster itself)
are grouped, operands may broadcast (a bias row, a keepdims statistic), and a reduction over
the group's trailing or leading axes joins the group that feeds it. Each `fused` equation of the
program then becomes, in the generated Python code,

    v7 = _empty((128, 512), dt_float32)          # the group's outputs
    fused_3(v2, c1, v7, dims_fused_3) or fused_3(_c(v2), c1, v7, dims_fused_3)

(the arrays, then the loop sizes and range; the kernel returns False without running when an
input is not C-contiguous, and the second call passes contiguous copies of those that may not be)

and everything else is generated exactly as by the "numpy" backend (numpy_backend.py), which
stays the readable reference (`fg.config.update("cpu_backend", "numpy")`). Kernels are compiled
once per process and kept on disk (llvm_runtime.py); a group the generator cannot write runs
its equations through NumPy as part of the same function.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..core import Var
from . import llvm_codegen, llvm_runtime, numpy_backend
from .codegen import Executable

__all__ = ["FUSION", "compile_jaxpr", "PARALLEL_WORK", "PARALLEL_WORK_PYTHON_HELPER",
           "PARALLEL_MATMUL", "PARALLEL_BATCH"]

def _worth_alone(eqn):
    """A lone equation is a kernel when NumPy would take several passes (select_n, logistic)
    or, for a reduction, when the array is large enough to repay a kernel call."""
    if eqn.primitive.name in llvm_codegen.REDUCTIONS:
        return eqn.invars[0].aval.size >= 4096
    return numpy_backend.ufunc_of(eqn) is None


FUSION = dict(fusible=llvm_codegen.can_translate, broadcast_inputs=True, reductions=True,
              horizontal=True, singles=_worth_alone, recompute=llvm_codegen.cheap_to_recompute)

# A kernel call is split across two threads from this much work (elements x equations) on:
# below it, handing half to the other thread costs more than it saves. The native pool's
# helper takes a half within a microsecond or two (llvm_threads); the Python helper thread,
# where the pool does not run, costs tens of microseconds a call.
PARALLEL_WORK = 1 << 16
PARALLEL_WORK_PYTHON_HELPER = 1 << 20

# Where BLAS is single-threaded (OPENBLAS_NUM_THREADS=1) and the kernels have two threads or
# more, a matrix product (dot_general) is split across two threads from this many
# multiply-adds on (about 50 µs of one thread's BLAS). Otherwise products stay BLAS's, with its
# own threads: on a quiet machine OpenBLAS's two threads beat our split (docs/jit.md).
PARALLEL_MATMUL = 1 << 22

# A batch of small products (each at most llvm_runtime.SMALL_GEMM multiply-adds, which
# OpenBLAS runs on the calling thread) is split across the pool's two threads from this many
# multiply-adds in all on (pool_matmul; attention's 16 x 4 heads of 64 x 64 x 32: 8.4e6).
PARALLEL_BATCH = 1 << 20

# Equations that keep a C-contiguous operand C-contiguous (views of the same buffer).
_CONTIGUITY_KEEPING = {"reshape", "squeeze", "expand_dims", "stop_gradient", "name"}


def compile_jaxpr(program, xp=np, donated=(), compile_body=None, profile=False, quiet=True):
    """An Executable for a fused program on NumPy arrays (see the module doc)."""
    jaxpr = getattr(program, "jaxpr", program)
    kernels = {}
    for k, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive.name == "fused":
            try:
                kernels[k] = llvm_codegen.kernel_source(eqn.params["jaxpr"], f"fused_{k}")
            except llvm_codegen.UnsupportedOnCPU:
                pass
    functions = llvm_runtime.compile_kernels(list(kernels.values())) if kernels else {}
    contiguous = _contiguous_vars(jaxpr, kernels)
    nthreads = llvm_runtime.threads()
    # The products go on the kernel threads only where BLAS itself would use one thread
    blas = llvm_runtime.blas_threads() if nthreads > 1 else None
    split_products = blas == 1
    # two threads: the native pool's (its helper waits for work without the GIL), with BLAS's
    # parts on it too where BLAS has two threads (llvm_threads)
    pool = nthreads > 1 and llvm_runtime.start_pool()
    if pool and blas == 2:
        llvm_runtime.blas_on_pool()
    # batches of small products (attention's heads), which BLAS runs on one thread each:
    # half the batch on each of the pool's threads
    batch_products = pool and llvm_runtime.pool_products()
    by_eqn = {id(jaxpr.eqns[k]): kern for k, kern in kernels.items()}

    def special(eqn, fn, ins, outs, namespace, reusable):
        kern = by_eqn.get(id(eqn))
        if kern is None:
            if batch_products and _small_batched_matmul(eqn):
                namespace[fn] = functools.partial(eqn.primitive.impl, llvm_runtime.pool_numpy,
                                                  **eqn.params)
                return [f"    {outs[0]} = {fn}({', '.join(ins)})  # batch on two threads"]
            if split_products and _large_matmul(eqn):
                namespace[fn] = functools.partial(eqn.primitive.impl, llvm_runtime.threaded_numpy,
                                                  **eqn.params)
                return [f"    {outs[0]} = {fn}({', '.join(ins)})  # on two threads"]
            if eqn.primitive.name == "fused":  # not translatable: its equations, by NumPy
                body = eqn.params["jaxpr"]
                namespace[fn] = _numpy_body(body)
                return [f"    {', '.join(outs)}{',' if len(outs) == 1 else ''} = "
                        f"{fn}({', '.join(ins)})"]
            return None
        lines = []
        args, checked = [], []  # checked: with the inputs not known to be contiguous made so
        for a, name in zip(eqn.invars, ins):
            if a.aval.ndim == 0:
                name = f"_asarray({name})"
            args.append(name)
            checked.append(name if a.aval.ndim == 0 or (type(a) is Var and a in contiguous)
                           else f"_c({name})")
        taken = []
        nin = len(eqn.invars)
        for k, (name, v, (shape, dtype)) in enumerate(zip(outs, eqn.outvars, kern.outputs)):
            # (merged groups: only an input of the output's own group, read at the same element)
            # (a deep chain computed in blocks: not an input it reads after writing this output)
            others = [a for i, a in enumerate(eqn.invars)
                      if kern.part_of[i] != kern.part_of[nin + k] or i in kern.late_reads[k]]
            dt = f"dt_{dtype.name}"
            namespace[dt] = dtype
            reuse = reusable(v.aval, taken + others) if kern.elementwise else None
            if reuse is not None:  # a dead input's buffer, read at the same element
                taken.append(reuse)
                src = ins[eqn.invars.index(reuse)]
                lines.append(f"    {name} = {src}" if reuse in contiguous else
                             f"    {name} = _reuse({src}, {dt})")  # a donated argument
            elif kern.init is not None:
                init = f"init_{fn}"
                namespace[init] = kern.init
                lines.append(f"    {name} = _full({shape!r}, {init}, {dt})")
            else:
                lines.append(f"    {name} = _empty({shape!r}, {dt})")
        cfn = functions[kern.name]
        n0 = kern.parts if kern.parts > 1 else (kern.dims[0] if kern.dims else 1)
        split = kern.threadable and nthreads > 1 and n0 >= 2 and kern.work >= (
            PARALLEL_WORK if pool else PARALLEL_WORK_PYTHON_HELPER)
        if split and not pool:
            namespace[fn] = llvm_runtime.Parallel(cfn, kern.dims, n0)
            call = f"{fn}({', '.join(checked + list(outs))})"
        else:
            # the kernel tests the arrays' contiguity itself (False: nothing ran), so the
            # copies (`_c`, a Python call per argument) are only made when one is not; two
            # loop ranges: the halves on the pool's two threads
            namespace[fn] = cfn
            tail = list(outs) + [f"dims_{fn}"]
            if split:
                mid = _balanced_split(kern.part_work) if kern.parts > 1 else n0 // 2
                namespace[f"dims_{fn}"] = llvm_runtime.dims_array(kern.dims, 0, mid)
                namespace[f"dims2_{fn}"] = llvm_runtime.dims_array(kern.dims, mid, n0)
                tail.append(f"dims2_{fn}")
            else:
                namespace[f"dims_{fn}"] = llvm_runtime.dims_array(kern.dims, 0, n0)
            call = f"{fn}({', '.join(args + tail)})"
            if checked != args:
                call += f" or {fn}({', '.join(checked + tail)})"
        lines.append(f"    {call}  # compiled kernel: {_describe(eqn)}")
        return lines

    executable = numpy_backend.compile_jaxpr(jaxpr, xp, donated, compile_body, special,
                                             extra_names=_NAMES, profile=profile, quiet=quiet)
    listing = "".join(f"\n; ---- kernel fused_{k} ({_describe(jaxpr.eqns[k])}) ----\n{kern.ir}"
                      for k, kern in kernels.items())
    source = executable.source + ("\n; compiled LLVM kernels" + listing if kernels else "")
    out = Executable(executable.fn, source, executable.eqn_lines, code=executable.code,
                     kernels=list(kernels.values()))
    out.times = getattr(executable, "times", None)
    return out


def _balanced_split(work):
    """Where to cut a merged kernel's parts (of these amounts of work) in two so that the
    larger half is as small as it can be (an optimizer update's leaves differ in size)."""
    total, best, left = sum(work), (None, 1), 0
    for mid in range(1, len(work)):
        left += work[mid - 1]
        larger = max(left, total - left)
        if best[0] is None or larger < best[0]:
            best = (larger, mid)
    return best[1]


def _float_product(eqn):
    """(multiply-adds, batch size) of a float32/float64 dot_general, else None."""
    if eqn.primitive.name != "dot_general" or eqn.params.get("preferred_element_type") \
            not in (None, eqn.outvars[0].aval.dtype):
        return None
    lhs, rhs = (v.aval for v in eqn.invars)
    if not (lhs.dtype == rhs.dtype and lhs.dtype in (np.float32, np.float64)):
        return None
    (lc, _), (lb, _) = eqn.params["dimension_numbers"]
    k = math.prod(lhs.shape[axis] for axis in lc)
    return eqn.outvars[0].aval.size * k, math.prod(lhs.shape[axis] for axis in lb)


def _large_matmul(eqn):
    """A float32/float64 dot_general with at least PARALLEL_MATMUL multiply-adds."""
    work = _float_product(eqn)
    return work is not None and work[0] >= PARALLEL_MATMUL


def _small_batched_matmul(eqn):
    """A float32/float64 dot_general over a batch of products each small enough for BLAS to
    run on one thread, with at least PARALLEL_BATCH multiply-adds in all."""
    work = _float_product(eqn)
    return (work is not None and work[1] >= 2 and work[0] >= PARALLEL_BATCH
            and work[0] // work[1] <= llvm_runtime.SMALL_GEMM)


def _contiguous(x):
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def _reuse(x, dtype):
    """A donated argument's buffer for a kernel's output, when the kernel reads it in place."""
    return x if x.flags.c_contiguous else np.empty(x.shape, dtype)


_NAMES = {"_empty": np.empty, "_full": np.full, "_c": _contiguous, "_reuse": _reuse}


def _describe(eqn):
    body = eqn.params["jaxpr"].jaxpr
    names = [e.primitive.name for e in body.eqns]
    shape = "x".join(map(str, body.eqns[-1].invars[0].aval.shape if names[-1].startswith(
        "reduce") else body.outvars[0].aval.shape)) or "scalar"
    head = ", ".join(names[:6]) + (f", ... ({len(names)} equations)" if len(names) > 6 else "")
    return f"{head} on {shape}"


def _contiguous_vars(jaxpr, kernels):
    """Variables whose values are C-contiguous arrays whatever the caller passes: the outputs
    of compiled kernels (allocated C-contiguous here) and reshapes of them. NumPy's own results
    are not: ufuncs, concatenate, astype, reductions and matmul lay their result out as their
    operands are (a transposed operand gives a transposed result), so those are checked when
    called (`_c`, one flag read)."""
    out = set()
    for k, eqn in enumerate(jaxpr.eqns):
        keep = eqn.primitive.name in _CONTIGUITY_KEEPING and all(
            type(a) is Var and a in out for a in eqn.invars[:1])
        if k in kernels or keep:
            out.update(eqn.outvars)
    return out


def _numpy_body(body):
    fn = numpy_backend.compile_jaxpr(body.jaxpr).fn
    consts = list(body.consts)
    return (lambda *args: fn(*consts, *args)) if consts else fn
