"""Mixed-precision policies: the dtypes parameters are stored in, computed in and returned in
(the design and names of DeepMind's `jmp`, which JAX users know).

    policy = fg.mixed_precision.Policy(param_dtype=np.float32, compute_dtype="bfloat16",
                                       output_dtype=np.float32)
    loss = policy.apply(model_apply)(params, x)       # bfloat16 inside, float32 out

`policy.apply(fn)` wraps any model's apply function `fn(params, *args, **kwargs)`: the floating
leaves of the parameters and of the array arguments are cast to `compute_dtype` (integer inputs
such as token ids are left alone), and the floating leaves of the result are cast to
`output_dtype`. The casts are ordinary `convert_element_type` equations, so gradients flow back
through them into each parameter's own dtype, masks (`fg.grad(..., wrt=mask)`) prune them as any
other work, and `lora.apply(fn)` can be wrapped like any apply function (its adapters are an
argument, so they compute in `compute_dtype` too).

Storing parameters in half precision (`param_dtype` bfloat16 or float16) halves their memory;
keep float32 master weights in the optimizer then (`optim.master_weights`). Training in float16
needs loss scaling (`optim.dynamic_loss_scale`); bfloat16 has float32's range and does not.
On NumPy, 16-bit matmuls and sums compute in float32 and round once (see funcgrad/lax/_util.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import numpy as fnp
from . import tree_util as tu

__all__ = ["Policy", "get_policy", "cast_floating"]

# Names jmp.get_policy accepts, and short forms.
_DTYPE_NAMES = {
    "float16": "float16", "f16": "float16", "half": "float16", "float32": "float32",
    "f32": "float32", "full": "float32", "single": "float32", "float64": "float64",
    "f64": "float64", "double": "float64", "bfloat16": "bfloat16", "bf16": "bfloat16",
}


def _dtype(value, what):
    if isinstance(value, str):
        name = _DTYPE_NAMES.get(value.strip().lower())
        if name is None:
            raise ValueError(f"mixed_precision: {what} {value!r} is not a float dtype name; "
                             f"use one of {sorted(_DTYPE_NAMES)}")
        value = fnp.bfloat16 if name == "bfloat16" else name
    try:
        dt = np.dtype(value)
    except TypeError as e:
        raise TypeError(f"mixed_precision: {what} {value!r} is not a dtype") from e
    if not fnp.issubdtype(dt, fnp.floating):
        raise TypeError(f"mixed_precision: {what} must be a float dtype (float16, bfloat16, "
                        f"float32, float64), got {dt}")
    return dt


def cast_floating(tree, dtype):
    """`tree` with its floating array leaves cast to `dtype` (integer and boolean leaves, and
    non-arrays, as they are; a leaf already in `dtype` is not copied)."""
    dtype = np.dtype(dtype)

    def cast(x):
        dt = getattr(x, "dtype", None)
        if dt is None or not fnp.issubdtype(dt, fnp.floating) or dt == dtype:
            return x
        return fnp.asarray(x, dtype)

    return tu.tree_map(cast, tree)


@dataclasses.dataclass(frozen=True)
class Policy:
    """Which dtype parameters are stored in (`param_dtype`), computed in (`compute_dtype`) and
    returned in (`output_dtype`). Dtypes may be given as NumPy dtypes or names ("bfloat16",
    "bf16", "half", "float32", "full", ...)."""

    param_dtype: np.dtype = np.dtype(np.float32)
    compute_dtype: np.dtype = np.dtype(np.float32)
    output_dtype: np.dtype = np.dtype(np.float32)

    def __post_init__(self):
        for name in ("param_dtype", "compute_dtype", "output_dtype"):
            object.__setattr__(self, name, _dtype(getattr(self, name), name))

    def cast_to_param(self, tree):
        """Floating leaves of `tree` in the parameter dtype (e.g. when initializing)."""
        return cast_floating(tree, self.param_dtype)

    def cast_to_compute(self, tree):
        """Floating leaves of `tree` in the compute dtype."""
        return cast_floating(tree, self.compute_dtype)

    def cast_to_output(self, tree):
        """Floating leaves of `tree` in the output dtype."""
        return cast_floating(tree, self.output_dtype)

    def with_output_dtype(self, output_dtype):
        return dataclasses.replace(self, output_dtype=output_dtype)

    def apply(self, fn):
        """`fn(params, *args, **kwargs)` run in the compute dtype: parameters and floating
        array arguments cast to it, floating outputs cast to the output dtype."""

        def run(params, *args, **kwargs):
            out = fn(self.cast_to_compute(params), *self.cast_to_compute(args),
                     **self.cast_to_compute(kwargs))
            return self.cast_to_output(out)

        run.__name__ = f"mixed_precision({getattr(fn, '__name__', 'fn')})"
        run.__wrapped__ = fn
        return run

    def __str__(self):
        return (f"params={self.param_dtype.name},compute={self.compute_dtype.name},"
                f"output={self.output_dtype.name}")


def get_policy(spec: str) -> Policy:
    """A Policy from a string, as `jmp.get_policy`: "params=float32,compute=bfloat16,
    output=float32" (also `p=f32,c=bf16,o=f32`; unnamed parts default to float32), or one dtype
    name for all three ("bfloat16", "half", "full")."""
    if not isinstance(spec, str):
        raise TypeError(f"mixed_precision.get_policy: expected a string, got {spec!r}")
    if "=" not in spec:
        dt = _dtype(spec, "policy")
        return Policy(dt, dt, dt)
    keys = {"params": "param_dtype", "p": "param_dtype", "compute": "compute_dtype",
            "c": "compute_dtype", "output": "output_dtype", "o": "output_dtype"}
    kwargs = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        field = keys.get(key.strip().lower())
        if field is None or not value.strip():
            raise ValueError(f"mixed_precision.get_policy: cannot read {part!r} in {spec!r}; "
                             "write e.g. 'params=float32,compute=bfloat16,output=float32'")
        kwargs[field] = value
    return Policy(**kwargs)
