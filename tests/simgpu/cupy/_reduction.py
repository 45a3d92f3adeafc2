"""cupy.ReductionKernel, simulated: the user's CUDA snippets compiled with g++ (`cupy._kernel`).

CuPy builds a reduction kernel from parts: `in_params` / `out_params` ("float32 x, T y";
single-letter types are placeholders bound by the arguments' dtypes), `map_expr` (one value per
element, from the inputs by name), `reduce_expr` (combining `a` and `b`), `post_map_expr`
(writing the outputs from the reduced `a`), `identity`, `reduce_type` and a `preamble` (e.g.
`__device__` functions). The simulator keeps that contract: the inputs are broadcast, the
reduced axes moved last, and a generated C++ loop maps and reduces each output element in
order. It checks arguments as CuPy does (count, exact dtypes of typed array parameters, no host
arrays). Not simulated: CuPy's block-wise tree order of the reduction (float sums round
differently), `raw` parameters and the special variables (`_in_ind`, `_J`, ...).
"""

from __future__ import annotations

import ctypes
import math

import numpy as np

from ._core import PY_SCALARS, from_numpy, ndarray, poisoned, unsupported
from ._kernel import C_NAMES, FLAGS, SHIM, build

_REDUCE_ARGS = [ctypes.c_longlong, ctypes.c_longlong, ctypes.POINTER(ctypes.c_void_p),
                ctypes.POINTER(ctypes.c_void_p)]


class _Param:
    def __init__(self, text):
        words = text.split()
        if len(words) != 2:
            raise NotImplementedError(f"parameter {text!r}: the simulator takes 'type name' "
                                      "only (no raw parameters)")
        t, self.name = words
        self.placeholder = t if len(t) == 1 else None
        self.dtype = None if self.placeholder else np.dtype(t)
        if self.dtype is not None and self.dtype.name != t:
            raise ValueError(f"Wrong type {t}")


def _params(spec):
    return [_Param(p) for p in spec.split(",") if p.strip()]


class ReductionKernel:
    """cupy.ReductionKernel(in_params, out_params, map_expr, reduce_expr, post_map_expr,
    identity, name, reduce_type, preamble): a user-defined reduction (module doc)."""

    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                 name="reduce_kernel", reduce_type=None, reduce_dims=True, preamble="",
                 options=()):
        self.in_params, self.out_params = _params(in_params), _params(out_params)
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.map_expr, self.reduce_expr, self.post_map_expr = map_expr, reduce_expr, post_map_expr
        self.identity = identity
        self.name = self.__name__ = name
        self.reduce_type = reduce_type
        self.preamble = preamble
        self.options = tuple(options)
        self._libs = {}

    def _types(self, ins):
        """dtype of every parameter (placeholders bound by array arguments), checked."""
        bound = {}
        for p, a in zip(self.in_params, ins):
            if isinstance(a, ndarray):
                if p.dtype is not None and a.dtype != p.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype.type} "
                                    f"{p.dtype.type}")
                if p.placeholder and bound.setdefault(p.placeholder, a.dtype) != a.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype.type} "
                                    f"{bound[p.placeholder].type} {p.placeholder}")
            elif not (type(a) in PY_SCALARS or isinstance(a, np.generic)):
                raise unsupported(a)
        params = self.in_params + self.out_params
        missing = sorted({p.placeholder for p in params if p.placeholder} - set(bound))
        if missing:
            raise TypeError(f"{self.name}: type placeholder(s) {missing} bound by no array")
        return bound, [p.dtype or bound[p.placeholder] for p in params]

    def _source(self, bound, dtypes):
        ctype = {k: C_NAMES[dt.name] for k, dt in bound.items()}
        names = [f"type_{p.name}_raw" for p in self.in_params + self.out_params]
        defs = "".join(f"typedef {c} {k};\n" for k, c in sorted(ctype.items()))
        defs += "".join(f"typedef {C_NAMES[dt.name]} {n};\n" for n, dt in zip(names, dtypes))
        red = self.reduce_type or names[self.nin]
        loads = "".join(f"            const type_{p.name}_raw {p.name} = ((const type_{p.name}"
                        f"_raw*)ins[{k}])[o * n_red + j];\n"
                        for k, p in enumerate(self.in_params))
        stores = "".join(f"        type_{p.name}_raw& {p.name} = ((type_{p.name}_raw*)outs[{k}])"
                         f"[o];\n" for k, p in enumerate(self.out_params))
        first = "true" if self.identity is None else "false"
        init = "" if self.identity is None else f"({self.identity})"
        return f"""{SHIM}
{defs}typedef {red} _type_reduce;
#line 1 "{self.name}_preamble.cu"
{self.preamble}
#line 1 "{self.name}_body.cu"
extern "C" void _sim_reduce(long long n_out, long long n_red, void** ins, void** outs) {{
    for (long long o = 0; o < n_out; ++o) {{
        _type_reduce a = _type_reduce{init};
        bool first = {first};
        for (long long j = 0; j < n_red; ++j) {{
{loads}            const _type_reduce b = static_cast<_type_reduce>({self.map_expr});
            if (first) {{ a = b; first = false; }}
            else a = static_cast<_type_reduce>({self.reduce_expr});
        }}
{stores}        {self.post_map_expr};
    }}
}}
"""

    def __call__(self, *args, out=None, axis=None, keepdims=False, stream=None):
        if len(args) not in (self.nin, self.nin + self.nout):
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be either "
                            f"{self.nin} or {self.nin + self.nout} (with outputs), but given "
                            f"{len(args)}.")
        ins, outs = args[:self.nin], list(args[self.nin:])
        if out is not None:
            outs = [out]
        bound, dtypes = self._types(ins)
        arrays = [a for a in ins if isinstance(a, ndarray)]
        if not arrays:
            raise ValueError("Loop size is undecided.")
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        ndim = len(shape)
        axes = tuple(range(ndim)) if axis is None else tuple(
            sorted(a % ndim for a in ((axis,) if np.ndim(axis) == 0 else axis)))
        kept = [d for d in range(ndim) if d not in axes]
        out_shape = tuple(1 if d in axes else shape[d] for d in range(ndim)) if keepdims \
            else tuple(shape[d] for d in kept)
        n_out, n_red = math.prod(shape[d] for d in kept), math.prod(shape[d] for d in axes)
        if n_red == 0 and self.identity is None:
            raise ValueError(f"zero-size array to reduction operation {self.name} which has "
                             "no identity")
        host = [np.ascontiguousarray(np.broadcast_to(
            a._a if isinstance(a, ndarray) else np.asarray(a).astype(dt), shape)
            .transpose(kept + list(axes)).reshape(n_out, n_red)) for a, dt in zip(ins, dtypes)]
        out_dtypes = dtypes[self.nin:]
        if outs:
            for o, dt in zip(outs, out_dtypes):
                if not isinstance(o, ndarray) or o.shape != out_shape or o.dtype != dt:
                    raise ValueError(f"Out shape or type is mismatched ({out_shape}, {dt})")
        else:
            outs = [from_numpy(poisoned(out_shape, dt)) for dt in out_dtypes]
        key = tuple(sorted((k, v.name) for k, v in bound.items()))
        lib = self._libs.get(key)
        if lib is None:
            flags = FLAGS + tuple(o for o in self.options if o.startswith("-D"))
            lib = self._libs[key] = build(self._source(bound, dtypes), flags, "_sim_reduce",
                                          _REDUCE_ARGS)
        if n_out:
            scratch = [np.empty(out_shape, dt) for dt in out_dtypes]
            ptrs = (ctypes.c_void_p * max(len(host), 1))(*[h.ctypes.data for h in host])
            optrs = (ctypes.c_void_p * len(scratch))(*[s.ctypes.data for s in scratch])
            lib._sim_reduce(n_out, n_red, ptrs, optrs)
            for o, s in zip(outs, scratch):
                o._a[...] = s
        return outs[0] if self.nout == 1 else tuple(outs)

    def __repr__(self):
        return f"<ReductionKernel {self.name} (simulated)>"
