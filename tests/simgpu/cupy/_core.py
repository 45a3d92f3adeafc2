"""The simulated device array (`cupy.ndarray`), ufuncs, and the wrapping of NumPy's functions.

A simulated array wraps a NumPy array (the "device memory"). What matters is where real CuPy
would refuse: host (NumPy) arrays never mix silently with device arrays, an array never turns
into a NumPy array implicitly, reductions and scalar indexing give 0-d device arrays, and
floating-point errors never warn (a GPU sets no flags). Views behave as in CuPy (and NumPy):
slices, reshapes and transposes share memory with their base.
"""

from __future__ import annotations

import operator

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

PY_SCALARS = (bool, int, float, complex)
package = None   # the cupy module (set by it), where __array_function__ finds functions
_DEVICE_KINDS = "biufc"   # dtypes CuPy supports (no object, string or datetime arrays)


def unsupported(x, where=""):
    """CuPy's error for a value it cannot take (above all: a NumPy array on the host)."""
    hint = (" (a host array: copy it to the device with cupy.asarray first)"
            if isinstance(x, np.ndarray) else "")
    return TypeError(f"Unsupported type {type(x)}{where}{hint}")


def poisoned(shape, dtype=float, order="C"):
    """Uninitialized device memory: NaN for floats, 0xA5 bytes for integers (a GPU's `empty`
    holds garbage; NumPy's often holds zeros, which would hide a kernel that skips elements)."""
    a = np.empty(shape, dtype, order=order)
    if a.dtype.kind in "fc":
        a.fill(np.nan)
    elif a.dtype.kind in "iu":
        a.fill(int.from_bytes(b"\xa5" * a.itemsize, "little", signed=a.dtype.kind == "i"))
    elif a.dtype.kind == "b":
        a.fill(True)
    return a


def from_numpy(a, base=None):
    """A device array over NumPy array `a` (no copy)."""
    if a.dtype.kind not in _DEVICE_KINDS:
        raise ValueError(f"Unsupported dtype {a.dtype}")
    out = ndarray.__new__(ndarray)
    out._a = a
    out._base = base
    return out


def host_value(x):
    """NumPy value of `x` for the host-to-device copy of cupy.array: device arrays (also inside
    lists) are read, anything NumPy takes is taken."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)) and any(isinstance(e, (ndarray, list, tuple)) for e in x):
        return [host_value(e) for e in x]
    return x


def unwrap(x, found):
    """`x` (args of a device function) with device arrays replaced by their NumPy arrays; device
    arrays are appended to `found`. NumPy arrays are refused, as CuPy refuses them."""
    if isinstance(x, ndarray):
        found.append(x)
        return x._a
    if isinstance(x, np.ndarray):
        raise unsupported(x)
    t = type(x)
    if t is list or t is tuple:
        return t(unwrap(e, found) for e in x)
    if t is dict:
        return {k: unwrap(v, found) for k, v in x.items()}
    return x


def wrap(x, sources=()):
    """Results of a NumPy call as device values: arrays (also 0-d, also NumPy scalars) wrapped,
    tuples and lists walked. A result that is (a view of) a source array keeps that link."""
    if isinstance(x, np.ndarray):
        for s in sources:
            if x is s._a:
                return s
        base = None
        if x.base is not None:   # a view: CuPy's base is the array owning the memory
            owner = next((s for s in sources if np.may_share_memory(x, s._a)), None)
            base = owner if owner is None or owner._base is None else owner._base
        return from_numpy(x, base)
    if isinstance(x, np.generic):
        return from_numpy(np.asarray(x))
    if isinstance(x, tuple):
        items = [wrap(e, sources) for e in x]
        return type(x)(*items) if hasattr(x, "_fields") else tuple(items)
    if isinstance(x, list):
        return [wrap(e, sources) for e in x]
    return x


def device_function(fn, qualname):
    """NumPy function `fn` as a CuPy function: device arrays in, device arrays out."""
    def call(*args, **kwargs):
        found = []
        args, kwargs = unwrap(args, found), unwrap(kwargs, found)
        with np.errstate(all="ignore"):
            return wrap(fn(*args, **kwargs), found)
    call.__name__ = getattr(fn, "__name__", qualname)
    call.__qualname__ = qualname
    call.__doc__ = f"Simulated {qualname} (NumPy's {call.__name__} on device arrays)."
    return call


def module_attr(module, source, name, cache):
    """`module.name` for a simulated CuPy module mirroring NumPy module `source` (called from
    the module's __getattr__). Results are kept in `cache`, not in the module's globals, where
    `any`, `sum`, `max`... would shadow the builtins for the module's own code."""
    hit = cache.get(name)
    if hit is not None:
        return hit
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        obj = getattr(source, name)
    except AttributeError:
        raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}") from None
    if type(obj) is type(np):
        raise AttributeError(f"module {module.__name__!r} has no attribute {name!r} (the "
                             "simulator has no counterpart of NumPy's submodule)")
    if isinstance(obj, np.ufunc):
        obj = ufunc(obj)
    elif callable(obj) and not isinstance(obj, type):
        obj = device_function(obj, f"{module.__name__}.{name}")
    if obj is not None:   # (dtypes, constants and classes pass through unchanged)
        cache[name] = obj
    return obj


def _ufunc_operand(x, found, foreign):
    if isinstance(x, ndarray):
        found.append(x)
        return x._a
    if type(x) in PY_SCALARS or isinstance(x, np.generic):
        return x
    if foreign is not None and getattr(x, "__array_ufunc__", None) is not None \
            and not isinstance(x, np.ndarray):
        foreign.append(x)
        return x
    raise unsupported(x)


def apply_ufunc(uf, method, inputs, kwargs, foreign=None):
    """NumPy ufunc `uf` (or one of its methods) on device operands, CuPy's way: operands are
    device arrays or scalars; `out=` must be device arrays and is returned."""
    found = []
    if method == "at":
        a, indices, *rest = inputs
        if not isinstance(a, ndarray):
            raise unsupported(a)
        args = [a._a, device_index(indices)] + [_ufunc_operand(b, found, None) for b in rest]
        with np.errstate(all="ignore"):
            uf.at(*args)
        return None
    args = [_ufunc_operand(x, found, foreign) for x in inputs]
    if foreign:
        return NotImplemented   # another array type with its own __array_ufunc__ decides
    kwargs = dict(kwargs)
    out = kwargs.get("out")
    if out is not None:
        outs = out if isinstance(out, tuple) else (out,)
        for o in outs:
            if o is not None and not isinstance(o, ndarray):
                raise unsupported(o, " for out")
        kwargs["out"] = tuple(None if o is None else o._a for o in outs)
    if "where" in kwargs and not isinstance(kwargs["where"], bool):
        kwargs["where"] = _ufunc_operand(kwargs["where"], found, None)
    with np.errstate(all="ignore"):
        result = getattr(uf, method)(*args, **kwargs) if method != "__call__" \
            else uf(*args, **kwargs)
    if out is not None:
        return outs[0] if len(outs) == 1 else outs
    return wrap(result, found)


class ufunc:
    """A CuPy ufunc: NumPy's, on device operands only (call, reduce, accumulate, outer, at)."""

    def __init__(self, np_ufunc):
        self._ufunc = np_ufunc
        self.__name__ = np_ufunc.__name__
        self.nin, self.nout, self.nargs = np_ufunc.nin, np_ufunc.nout, np_ufunc.nargs
        self.types = np_ufunc.types
        self.identity = np_ufunc.identity

    def __repr__(self):
        return f"<ufunc '{self.__name__}'>"

    def __call__(self, *args, **kwargs):
        return apply_ufunc(self._ufunc, "__call__", args, kwargs)

    def reduce(self, *args, **kwargs):
        return apply_ufunc(self._ufunc, "reduce", args, kwargs)

    def accumulate(self, *args, **kwargs):
        return apply_ufunc(self._ufunc, "accumulate", args, kwargs)

    def reduceat(self, *args, **kwargs):
        return apply_ufunc(self._ufunc, "reduceat", args, kwargs)

    def outer(self, *args, **kwargs):
        return apply_ufunc(self._ufunc, "outer", args, kwargs)

    def at(self, a, indices, b=None):
        apply_ufunc(self._ufunc, "at", (a, indices) + (() if b is None else (b,)), {})


def _index_item(k):
    if isinstance(k, ndarray):
        return k._a
    if isinstance(k, list):       # CuPy copies lists and NumPy arrays in an index to the device
        return np.asarray(host_value(k))
    return k


def device_index(key):
    """An index of a device array as a NumPy index (device index arrays read in place)."""
    if isinstance(key, tuple):
        return tuple(_index_item(k) for k in key)
    return _index_item(key)


def _is_advanced(key):
    """Whether CuPy treats index `key` as advanced (arrays, lists, booleans)."""
    for k in key if isinstance(key, tuple) else (key,):
        if isinstance(k, (ndarray, np.ndarray, list, tuple, bool, np.bool_)):
            return True
    return False


def _view_key(idx):
    """A basic index as a tuple ending in `...`, so that NumPy returns a view, also 0-d."""
    idx = idx if isinstance(idx, tuple) else (idx,)
    return idx if any(k is Ellipsis for k in idx) else idx + (Ellipsis,)


class _MemoryPointer:
    """`x.data`: the device pointer of an array (here: the address of the NumPy buffer)."""

    def __init__(self, array):
        self.ptr = array.ctypes.data if array.size else 0
        self.device_id = 0


class ndarray(NDArrayOperatorsMixin):
    """A simulated CuPy array: NumPy storage, CuPy's strictness about the host.

    Not a subclass of numpy.ndarray; `np.asarray(x)` fails as on a GPU (use `x.get()`).
    """

    __slots__ = ("_a", "_base", "__weakref__")
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the simulator has no memptr/strides construction")
        self._a = poisoned(shape, dtype, order)
        self._base = None

    # -- the host boundary ------------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def get(self, stream=None, order="C", out=None, blocking=True):
        """A NumPy copy of the array (device to host)."""
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        """Copy host array `arr` into this array (host to device)."""
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, not {type(arr)}")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        self._a[...] = arr

    @property
    def __cuda_array_interface__(self):
        a = self._a
        return {"shape": a.shape, "typestr": a.dtype.str, "descr": [("", a.dtype.str)],
                "data": (_MemoryPointer(a).ptr, False), "version": 3,
                "strides": None if a.flags.c_contiguous else a.strides}

    def __reduce__(self):
        return (_from_host, (self.get(),))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # -- attributes -------------------------------------------------------------------------
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    base = property(lambda self: self._base)
    data = property(lambda self: _MemoryPointer(self._a))
    T = property(lambda self: wrap(self._a.T, (self,)))
    mT = property(lambda self: wrap(self._a.mT, (self,)))
    real = property(lambda self: wrap(self._a.real, (self,)),
                    lambda self, value: self._set_part("real", value))
    imag = property(lambda self: wrap(self._a.imag, (self,)),
                    lambda self, value: self._set_part("imag", value))

    def _set_part(self, part, value):
        """`x.real = v` / `x.imag = v` as CuPy: a device array (broadcast) or a scalar."""
        if isinstance(value, ndarray):
            value = value._a
        elif isinstance(value, np.ndarray) and value.shape != ():
            raise unsupported(value)
        setattr(self._a, part, value)

    @property
    def shape(self):
        return self._a.shape

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    @property
    def device(self):
        from .cuda import Device
        return Device(0)

    # -- Python protocols -------------------------------------------------------------------
    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def __format__(self, spec):
        return format(self._a if self.ndim else self._a.item(), spec)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __bool__(self):
        return bool(self._a)

    def __int__(self):
        return int(self._a)

    def __float__(self):
        return float(self._a)

    def __complex__(self):
        return complex(self._a)

    def __index__(self):
        return operator.index(self._a)

    # -- indexing ---------------------------------------------------------------------------
    def __getitem__(self, key):
        idx = device_index(key)
        res = self._a[idx]
        if isinstance(res, np.generic):
            if _is_advanced(key):
                return from_numpy(np.asarray(res))
            res = self._a[_view_key(idx)]   # CuPy: a 0-d view (NumPy: a scalar)
        return wrap(res, (self,))

    def __setitem__(self, key, value):
        if _is_advanced(key):
            # CuPy copies a host value (NumPy array, list, scalar) and casts it to our dtype
            self._a[device_index(key)] = np.asarray(host_value(value)).astype(self.dtype)
            return
        target = self._a[_view_key(device_index(key))]
        if isinstance(value, ndarray):
            target[...] = value._a
            return
        # a basic index with a non-device value goes through ndarray.fill in CuPy
        if isinstance(value, np.ndarray):
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        if not (type(value) in PY_SCALARS or isinstance(value, np.generic)):
            raise unsupported(value)
        target[...] = value

    # -- NumPy protocols: CuPy computes on the device ---------------------------------------
    def __array_ufunc__(self, uf, method, *inputs, **kwargs):
        return apply_ufunc(uf, method, inputs, kwargs, foreign=[])

    def __array_function__(self, func, types, args, kwargs):
        if not all(issubclass(t, (ndarray, np.ndarray)) for t in types):
            return NotImplemented
        module = package
        for part in func.__module__.split(".")[1:]:
            module = getattr(module, part, None)
        fn = getattr(module, func.__name__, None) if module is not None else None
        if fn is None or fn is func:
            return NotImplemented
        return fn(*args, **kwargs)

    def __eq__(self, other):
        if other is None or isinstance(other, str):
            return NotImplemented
        return np.equal(self, other)

    def __ne__(self, other):
        if other is None or isinstance(other, str):
            return NotImplemented
        return np.not_equal(self, other)

    __hash__ = None

    # -- methods CuPy has that differ from a plain forward ----------------------------------
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        kw = {} if casting is None else {"casting": casting}
        return wrap(self._a.astype(dtype, order=order, copy=copy, **kw), (self,))

    def copy(self, order="C"):
        return from_numpy(self._a.copy(order=order))

    def fill(self, value):
        if isinstance(value, np.ndarray):
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        elif isinstance(value, ndarray):
            value = value._a
        self._a.fill(value)


def _method(name):
    """ndarray.name, forwarded to NumPy's method on the storage (device arguments only)."""
    def method(self, *args, **kwargs):
        found = [self]
        args, kwargs = unwrap(args, found), unwrap(kwargs, found)
        with np.errstate(all="ignore"):
            return wrap(getattr(self._a, name)(*args, **kwargs), found)
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Simulated cupy.ndarray.{name} (NumPy's, on the device array)."
    return method


def _stable_sort(name):
    method = _method(name)

    def stable(self, axis=-1, kind=None, order=None):
        """Stable whatever `kind` says, as CuPy's sorts."""
        return method(self, axis=axis, kind="stable")
    stable.__name__ = stable.__qualname__ = name
    return stable


for _name in ("reshape transpose ravel flatten view squeeze swapaxes diagonal trace repeat take "
              "put choose compress sum mean max min prod any all argmax argmin std var cumsum "
              "cumprod clip round conj conjugate dot nonzero argsort sort partition "
              "argpartition item tolist").split():
    setattr(ndarray, _name, _method(_name))
for _name in ("sort", "argsort"):
    setattr(ndarray, _name, _stable_sort(_name))
ndarray.__module__ = "cupy"
ufunc.__module__ = "cupy"


def _from_host(a):
    return from_numpy(np.array(a, copy=True))
