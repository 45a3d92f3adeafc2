"""Abstract values: the shape, dtype and weak type of an array, without its data."""

from __future__ import annotations

import math

import numpy as np

_SHORT = {
    "float16": "f16", "float32": "f32", "float64": "f64",
    "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64",
    "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64",
    "bool": "bool", "complex64": "c64", "complex128": "c128", "bfloat16": "bf16",
}

# float0 is the dtype of the cotangent of an integer or boolean input (as in JAX): it has no values.
float0 = np.dtype([("float0", np.void, 0)])

_SUPPORTED_KINDS = "biufc"

# bfloat16 comes from ml_dtypes (the package JAX uses), which registers it with NumPy as a dtype of
# kind "V". funcgrad imports ml_dtypes only when it meets the name "bfloat16" (the import takes
# most of a second): an array of that dtype means the user's code imported it already.
_BFLOAT16_NAME = "bfloat16"


def bfloat16():
    """The bfloat16 dtype (ml_dtypes')."""
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)


def dtype_kind(dtype) -> str:
    """NumPy's kind letter of `dtype` ("b", "i", "u", "f", "c"), with "f" for bfloat16, which
    NumPy files under "V": every kind test in funcgrad goes through here."""
    k = dtype.kind
    return "f" if k == "V" and dtype.name == _BFLOAT16_NAME else k


def is_small_float(dtype) -> bool:
    """float16 or bfloat16: the 16-bit floats NumPy has few fast kernels for (matmuls,
    reductions and most math run in float32 and round back; see funcgrad/lax)."""
    return dtype.itemsize == 2 and dtype_kind(dtype) == "f"


class ShapedArray:
    """The type of an array value in a program: shape, dtype, and whether the dtype is weak.

    A weak type comes from a Python scalar (NEP 50): it gives way to the other operand's dtype.
    """

    __slots__ = ("shape", "dtype", "weak_type")

    def __init__(self, shape, dtype, weak_type=False):
        self.shape = shape if type(shape) is tuple else tuple(int(d) for d in shape)
        self.dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
        self.weak_type = bool(weak_type)

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return math.prod(self.shape)

    @property
    def nbytes(self):
        """The bytes of an array of this type (NumPy's `ndarray.nbytes`)."""
        return self.size * self.dtype.itemsize

    def update(self, shape=None, dtype=None, weak_type=None):
        return ShapedArray(self.shape if shape is None else shape,
                           self.dtype if dtype is None else dtype,
                           self.weak_type if weak_type is None else weak_type)

    def strip_weak_type(self):
        return self if not self.weak_type else ShapedArray(self.shape, self.dtype, False)

    def __eq__(self, other):
        return (type(other) is ShapedArray and self.shape == other.shape
                and self.dtype == other.dtype and self.weak_type == other.weak_type)

    def __hash__(self):
        return hash((self.shape, self.dtype, self.weak_type))

    def str_short(self):
        return f"{dtype_short(self.dtype)}[{','.join(map(str, self.shape))}]"

    def __repr__(self):
        weak = ", weak_type=True" if self.weak_type else ""
        return f"ShapedArray({self.str_short()}{weak})"

    __str__ = str_short


_SHORT_BY_DTYPE: dict = {}


def dtype_short(dtype) -> str:
    """'f32' for float32 and so on (cached: printing large programs asks for it a lot)."""
    short = _SHORT_BY_DTYPE.get(dtype)
    if short is None:
        name = np.dtype(dtype).name
        short = _SHORT_BY_DTYPE[dtype] = _SHORT.get(name, name)
    return short


_VALID_DTYPES = {np.dtype(name) for name in _SHORT if name != _BFLOAT16_NAME}


def check_dtype(dtype, what="dtype"):
    """Return `dtype` as a NumPy dtype, or raise a TypeError saying which dtypes are supported."""
    if dtype in _VALID_DTYPES:
        return dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    if isinstance(dtype, str) and dtype == _BFLOAT16_NAME:
        return bfloat16()
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"{what} {dtype!r} is not a dtype funcgrad understands; use a NumPy "
                        "numeric dtype such as float32, float64, int32 or bool.") from e
    if dtype_kind(dt) not in _SUPPORTED_KINDS or dt.name not in _SHORT:
        raise TypeError(f"{what} {dt} is not supported: funcgrad arrays hold booleans, integers, "
                        "floats (bfloat16 from ml_dtypes included) or complex numbers (no object, "
                        "string or structured dtypes). Convert the data first, e.g. "
                        "np.asarray(x, dtype=np.float32).")
    return dt


def is_float(dtype) -> bool:
    """A floating or complex dtype (bfloat16 included): the dtypes derivatives flow through."""
    return dtype_kind(np.dtype(dtype)) in "fc"


_PY_SCALAR_DTYPE = {bool: np.dtype(bool), int: np.dtype(np.int64), float: np.dtype(np.float64),
                    complex: np.dtype(np.complex128)}
PY_SCALARS = (bool, int, float, complex)


def get_aval(x) -> ShapedArray:
    """The abstract value of a concrete array, NumPy scalar or Python scalar (weakly typed)."""
    t = type(x)
    if t in _PY_SCALAR_DTYPE:
        return ShapedArray((), _PY_SCALAR_DTYPE[t], weak_type=t is not bool)
    aval = getattr(x, "aval", None)
    if isinstance(aval, ShapedArray):
        return aval
    if t is np.ndarray:
        return shaped_array(x.shape, x.dtype)
    dtype = getattr(x, "dtype", None)
    shape = getattr(x, "shape", None)
    if _foreign_dtypes and type(dtype) in _foreign_dtype_types:  # an Array API namespace's
        dtype = _foreign_dtypes[dtype]
    if dtype is None or shape is None:
        raise TypeError(f"Value of type {t.__name__} is not a valid funcgrad array: pass a NumPy "
                        "array, a Python or NumPy scalar, or a pytree of them.")
    return ShapedArray(shape, check_dtype(dtype, "Array of dtype"))


_aval_cache: dict = {}

# Dtype objects of other array namespaces (array_api_strict.float32, ...) -> NumPy dtypes, for
# namespaces whose arrays do not carry NumPy dtypes (see funcgrad/backends/array_api.py).
_foreign_dtypes: dict = {}
_foreign_dtype_types: set = set()   # their classes: only those are looked up


def register_dtypes(mapping):
    _foreign_dtypes.update(mapping)
    _foreign_dtype_types.update(type(k) for k in mapping)


def unregister_dtypes(mapping):
    for k in mapping:
        _foreign_dtypes.pop(k, None)
    _foreign_dtype_types.difference_update(type(k) for k in mapping)


def numpy_dtype(dtype):
    """`dtype` as a NumPy dtype: NumPy's and CuPy's arrays already carry one; a registered
    namespace's dtype is translated."""
    if type(dtype) is np.dtype:
        return dtype
    if _foreign_dtypes and type(dtype) in _foreign_dtype_types:
        return _foreign_dtypes[dtype]
    return np.dtype(dtype)


def shaped_array(shape, dtype):
    """A (strongly typed) ShapedArray, shared between equal requests: avals are immutable."""
    key = (shape, dtype)
    aval = _aval_cache.get(key)
    if aval is None:
        if len(_aval_cache) > 10000:
            _aval_cache.clear()
        aval = _aval_cache[key] = ShapedArray(shape, check_dtype(dtype, "Array of dtype"))
    return aval
