"""fg.random: counter-based random numbers (Threefry-2x32), JAX's `jax.random` stream for stream.

A key is a plain `uint32[2]` array (what `jax.random.PRNGKey` makes; `key_data` / `wrap_key_data`
convert, as in JAX). Every function is a pure function of its key: the numbers are Threefry-2x32
(20 rounds, Salmon et al. 2011) of a counter, computed by primitives (`threefry2x32`, and
`threefry2x32_iota` for a draw's counters: funcgrad/lax/threefry.py), so the same key gives the
same bits eagerly, under `jit`, under `vmap` over a batch of keys, inside `grad`, and on every
backend. Keys are never reused: `split` a key into fresh ones, or `fold_in` an integer (a step, a
layer index).

The streams are JAX's defaults (JAX 0.10, `jax_threefry_partitionable=True`), bit for bit:
element i of a draw of shape s hashes the 64-bit counter i (its flat index) under the key;
`split` keeps both output words as the new key, `bits` xors them (32 bits), joins them (64) or
truncates (8, 16); `fold_in(k, d)` hashes the counter pair (0, d). The samplers follow JAX's
formulas: `uniform` from the top mantissa bits, `randint` from two 32-bit draws of a split key,
`normal` = sqrt(2) erf_inv(u), `categorical` by the Gumbel-max trick, `permutation` by repeated
stable sorts on fresh bits. Floating-point functions are evaluated as XLA does on the CPU
(`funcgrad._sampler_math`: its approximations of log, erf, erf_inv, with fused multiply-adds), so
float32 draws equal JAX's exactly; float64 normals can differ from JAX's in the last bit in a few
cases in ten thousand (the C library's log is not NumPy's everywhere). So a seed gives the same
initialization in funcgrad and in JAX. Floating-point results default to float32, integers to
int32, bits to uint32 (JAX's defaults without x64).

Every element of a draw is a function of its own counter, so a large eager draw is computed a
chunk of counters at a time straight into its output (`_draw`): the sampler's temporaries stay a
few MB (in the cache) whatever the draw's size, and the numbers are the whole draw's.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import _sampler_math as sm
from . import lax
from . import numpy as fnp
from .core import array_namespace, runs_now, user_line
from .core.avals import dtype_kind
from .lax import threefry as _threefry

__all__ = [
    "key", "PRNGKey", "as_key", "key_data", "wrap_key_data", "split", "fold_in", "bits", "uniform",
    "normal", "truncated_normal", "bernoulli", "categorical", "gumbel", "randint", "permutation",
    "choice", "threefry_2x32",
]

_U32 = np.dtype(np.uint32)


def _u32(v):
    return np.array(v, _U32)


# ---------------------------------------------------------------------------------------------
# Keys

def _describe(k):
    dtype, shape = getattr(k, "dtype", None), getattr(k, "shape", None)
    if dtype is not None and shape is not None:
        return f"{np.dtype(dtype).name}{list(shape)}"
    return type(k).__name__


def _check_key(k, fn):
    """Reject anything but a single uint32[2] key, with the user's line and the fix."""
    dtype, shape = getattr(k, "dtype", None), getattr(k, "shape", None)
    if dtype is None or shape is None or np.dtype(dtype) != _U32:
        seed = " (an int seed: fg.random.key(seed) makes its key)" if isinstance(
            k, (int, np.integer)) else ""
        raise TypeError(f"fg.random.{fn}: expected a key, a uint32[2] array made by "
                        f"fg.random.key(seed) or split(); got {_describe(k)}{seed}{user_line()}")
    if tuple(shape) != (2,):
        hint = " (a batch of keys: use fg.vmap over them)" if shape and shape[-1] == 2 else ""
        raise ValueError(f"fg.random.{fn}: expected a single key of shape uint32[2], got "
                         f"uint32{list(shape)}{hint}{user_line()}")
    return k


def as_key(key_or_seed, caller="init"):
    """The key an `init` draws from: a key (uint32[2], from `key`, `split` or `fold_in`) as it
    is, an integer seed as `key(seed)`. This is funcgrad's one rule for every `init` (models,
    `lora.init`, `nn.lstm_init`, ...): pass a key or an int seed. Anything else raises a
    TypeError naming `caller`, what it got, the user's line and the fix. (fg.random's samplers
    themselves take keys only, as JAX's.)"""
    k = key_or_seed
    if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
        return key(int(k))
    dtype, shape = getattr(k, "dtype", None), getattr(k, "shape", None)
    if dtype is not None and shape is not None:
        dt = np.dtype(dtype)
        if dt == _U32 and tuple(shape) == (2,):
            return k
        if dt.kind in "iu" and tuple(shape) == ():
            return key(k)
    batch = " (a batch of keys: fg.vmap over them)" if dtype is not None and \
        np.dtype(dtype) == _U32 and shape and shape[-1] == 2 else ""
    raise TypeError(f"{caller}: key must be a key (fg.random.key(seed), split or fold_in: a "
                    f"uint32[2] array) or an int seed, got {_describe(k)}{batch}{user_line()}; "
                    f"e.g. {caller}(fg.random.key(0), ...) or {caller}(0, ...)")


def key(seed):
    """A key, uint32[2] = [seed >> 32, seed & 0xffffffff], from an integer seed (a Python int,
    or an integer scalar array, possibly traced). Negative seeds wrap as int64."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) and (
            getattr(seed, "dtype", None) is None or np.dtype(seed.dtype).kind not in "iu"):
        raise TypeError(f"fg.random.key: seed must be an integer, got {type(seed).__name__}")
    if isinstance(seed, (int, np.integer)):
        seed = int(seed)
        if not -(2 ** 63) <= seed < 2 ** 64:
            raise ValueError(f"fg.random.key: seed {seed} does not fit in 64 bits")
        seed %= 2 ** 64
        return np.array([seed >> 32, seed & 0xFFFFFFFF], _U32)
    if seed.shape != ():
        raise TypeError(f"fg.random.key: seed must be a scalar, got shape {tuple(seed.shape)}")
    dt = np.dtype(seed.dtype)
    if dt.itemsize == 8:
        wide = lax.convert_element_type(seed, np.uint64)
        hi = lax.convert_element_type(lax.shift_right_logical(wide, np.array(32, np.uint64)), _U32)
        lo = lax.convert_element_type(
            lax.bitwise_and(wide, np.array(0xFFFFFFFF, np.uint64)), _U32)
    else:
        hi = lax.full((), 0, _U32)
        lo = lax.convert_element_type(seed, _U32)
    return lax.concatenate([lax.reshape(hi, (1,)), lax.reshape(lo, (1,))], 0)


PRNGKey = key


def key_data(keys):
    """The uint32 data of a key or a batch of keys (`jax.random.key_data`). funcgrad's keys are
    their data already (uint32[..., 2] arrays, as JAX's legacy `PRNGKey` keys), so this checks
    the argument and returns it."""
    return _check_key_data(keys, "key_data")


def wrap_key_data(key_bits_array, *, impl=None):
    """A key (or a batch of keys) from uint32[..., 2] data (`jax.random.wrap_key_data`), e.g.
    the `key_data` of a JAX key, or a key saved in a checkpoint. Only Threefry-2x32 keys exist
    here: `impl` may be None or "threefry2x32"."""
    if impl not in (None, "threefry2x32"):
        raise ValueError(f"fg.random.wrap_key_data: impl={impl!r} is not available; funcgrad's "
                         "keys are Threefry-2x32 (impl=None or 'threefry2x32')")
    return _check_key_data(key_bits_array, "wrap_key_data")


def _check_key_data(keys, fn):
    dtype, shape = getattr(keys, "dtype", None), getattr(keys, "shape", None)
    if dtype is None or shape is None or np.dtype(dtype) != _U32 or not shape or shape[-1] != 2:
        got = (f"{np.dtype(dtype).name}{list(shape)}" if dtype is not None and shape is not None
               else type(keys).__name__)
        raise TypeError(f"fg.random.{fn}: expected key data, a uint32[..., 2] array (a key made "
                        f"by fg.random.key(seed), split(), or a batch of them); got {got}")
    return keys


def _key_words(k):
    return (lax.reshape(lax.slice(k, (0,), (1,)), ()), lax.reshape(lax.slice(k, (1,), (2,)), ()))


# ---------------------------------------------------------------------------------------------
# Threefry-2x32, and draws of it

def threefry_2x32(k0, k1, x0, x1):
    """Threefry-2x32 with 20 rounds of the block (x0, x1) under the key (k0, k1): uint32 arrays
    that broadcast together. Returns the two output words (the `threefry2x32` primitive)."""
    return _threefry.threefry2x32(*(lax.convert_element_type(fnp.asarray(v), _U32)
                                    for v in (k0, k1, x0, x1)))


def _hash_counters(key, shape, start=0):
    """Threefry of each element's counter under `key`: two uint32 arrays of `shape`. Element i
    (row major) hashes the 64-bit counter start + i, as high and low words: JAX's
    `threefry_2x32(key, iota_2x32_shape(shape))`."""
    k0, k1 = _key_words(key)
    return _threefry.threefry2x32_iota(k0, k1, shape, start)


# Eager draws of more elements than this are computed this many at a time: their temporaries
# (the sampler formulas hold a dozen arrays of the chunk's size, some float64) stay in the cache
# and stay a few MB whatever the draw's size, instead of ~90 bytes per value of the whole draw.
# On a device (CuPy) larger chunks, as a kernel launch costs what a NumPy call does.
_CHUNK = 1 << 15
_DEVICE_CHUNK = 1 << 22


def _draw(keys, shape, sample, *operands):
    """`sample(*words, *operands)`: values from the two Threefry words of each element's counter
    under each of `keys` (y0, y1 of the first key, then of the next), for a draw of `shape`
    (operands broadcast against it). A concrete draw (no tracer among the keys and operands,
    each operand a single value) larger than a chunk is sampled chunk by chunk into its output:
    every element is the same function of its own counter, so the numbers are the whole draw's
    (and those under jit or vmap), bit for bit."""
    size = math.prod(shape)
    if size <= _CHUNK or not runs_now(keys + operands) or any(
            math.prod(v.shape) != 1 for v in operands):
        words = [w for k in keys for w in _hash_counters(k, shape)]
        return sample(*words, *operands)
    operands = [lax.reshape(v, ()) for v in operands]
    chunk = _CHUNK if array_namespace(keys) is np else _DEVICE_CHUNK
    out = None
    for start in range(0, size, chunk):
        n = min(chunk, size - start)
        words = [w for k in keys for w in _hash_counters(k, (n,), start)]
        vals = sample(*words, *operands)
        if out is None:
            out = array_namespace([vals]).empty((size,), vals.dtype)
        out[start:start + n] = vals
    return out.reshape(shape)


def split(key, num=2):
    """`num` new independent keys, shape (num, 2); `num` may be a shape tuple."""
    _check_key(key, "split")
    shape = (int(num),) if np.ndim(num) == 0 else tuple(int(s) for s in num)
    y0, y1 = _hash_counters(key, shape)
    nd = len(shape)
    return lax.concatenate([lax.broadcast_in_dim(y0, shape + (1,), tuple(range(nd))),
                            lax.broadcast_in_dim(y1, shape + (1,), tuple(range(nd)))], nd)


def _split2(key):
    """The two keys of split(key), as a pair."""
    keys = split(key)
    return tuple(lax.reshape(lax.slice(keys, (i, 0), (i + 1, 2)), (2,)) for i in range(2))


def fold_in(key, data):
    """A new key from `key` and an integer `data` (taken mod 2**32): for per-step or per-layer
    keys without threading a split through the program."""
    _check_key(key, "fold_in")
    if isinstance(data, (int, np.integer)):
        d = _u32(int(data) % 2 ** 32)
    else:
        d = lax.convert_element_type(fnp.asarray(data), _U32)
        if d.shape != ():
            raise TypeError(f"fg.random.fold_in: data must be a scalar, got shape {d.shape} "
                            "(a batch of data: use fg.vmap over it)")
    k0, k1 = _key_words(key)
    y0, y1 = _threefry.threefry2x32(k0, k1, _u32(0), d)
    return lax.concatenate([lax.reshape(y0, (1,)), lax.reshape(y1, (1,))], 0)


def _shape(shape, fn):
    if shape is None:
        return ()
    try:
        return (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"fg.random.{fn}: shape must be a tuple of ints, got {shape!r}") from None


def bits(key, shape=(), dtype=np.uint32):
    """Uniform random bits of an unsigned integer dtype (uint8, 16, 32 or 64)."""
    _check_key(key, "bits")
    dtype = _U32 if dtype is None else np.dtype(dtype)  # None: the default, as in JAX
    if dtype.kind != "u":
        raise TypeError(f"fg.random.bits: dtype must be an unsigned integer type, got {dtype}")
    return _bits(key, _shape(shape, "bits"), dtype.itemsize * 8)


def _bits(key, shape, width):
    return _draw((key,), shape, functools.partial(_bits_of, width=width))


def _bits_of(y0, y1, *, width):
    """`width`-bit random words from the two Threefry outputs of each element's counter:
    xored (32 bits), joined high:low (64) or xored and truncated (8, 16)."""
    if width == 64:
        u64 = np.dtype(np.uint64)
        hi = lax.shift_left(lax.convert_element_type(y0, u64), np.array(32, u64))
        return lax.bitwise_or(hi, lax.convert_element_type(y1, u64))
    word = lax.bitwise_xor(y0, y1)
    return word if width == 32 else lax.convert_element_type(word, np.dtype(f"uint{width}"))


# ---------------------------------------------------------------------------------------------
# Continuous distributions

def _float_dtype(dtype, fn):
    dtype = np.dtype(np.float32 if dtype is None else dtype)  # None: the default, as in JAX
    if dtype_kind(dtype) != "f":
        raise TypeError(f"fg.random.{fn}: dtype must be a floating type, got {dtype}")
    return dtype


def _mantissas(y0, y1, dtype):
    """(m, nmant): the top nmant bits of a random word, as an integer m of `dtype`. JAX's uniform
    on [0, 1) puts them in the mantissa of a float in [1, 2) and subtracts 1: m * 2**-nmant is
    that number exactly."""
    info = np.finfo(dtype)
    width = info.bits
    rng_bits = 8 if info.nmant < 8 else width  # bfloat16 draws 8 bits, as JAX
    udt = np.dtype(f"uint{width}")
    b = lax.convert_element_type(_bits_of(y0, y1, width=rng_bits), udt)
    m = lax.shift_right_logical(b, np.array(rng_bits - info.nmant, udt))
    return lax.convert_element_type(m, dtype), info.nmant


def _unit_of(y0, y1, *, dtype):
    """Uniform on [0, 1)."""
    m, nmant = _mantissas(y0, y1, dtype)
    return lax.mul(m, np.array(2.0 ** -nmant, dtype))


def _uniform_of(y0, y1, lo, hi, *, dtype):
    """Uniform on [lo, hi): max(lo, u * (hi - lo) + lo), u uniform on [0, 1) (JAX's formula;
    XLA fuses the multiply-add)."""
    m, nmant = _mantissas(y0, y1, dtype)
    span = _power_of_two_span(lo, hi, dtype, nmant)
    if span is not None:
        # u * span = m * 2**-nmant * span is exact, so the fused multiply-add rounds once, as
        # this add does; and since u * span >= 0, the result is >= lo already.
        scaled = lax.add(lax.mul(m, np.array(2.0 ** -nmant * span, dtype)), lo)
        return scaled if lo.reshape(()) != 0 else lax.max(lo, scaled)  # max(-0.0, +0.0)
    u = lax.mul(m, np.array(2.0 ** -nmant, dtype))
    if np.dtype(dtype).itemsize >= 4:
        scaled = sm.fma(u, lax.sub(hi, lo), lo)  # XLA fuses the multiply-add
    else:
        scaled = lax.add(lax.mul(u, lax.sub(hi, lo)), lo)
    return lax.max(lo, scaled)


def _power_of_two_span(lo, hi, dtype, nmant):
    """hi - lo (computed in dtype, as the sampler does) when lo and hi are host constants
    whose difference is a positive power of two that keeps u * (hi - lo) exact, else None."""
    if type(lo) is not np.ndarray or type(hi) is not np.ndarray or lo.size != 1 or hi.size != 1:
        return None
    span = float(np.subtract(hi.reshape(()), lo.reshape(()), dtype=dtype))
    if not (math.isfinite(span) and span > 0 and math.frexp(span)[0] == 0.5
            and 2.0 ** -nmant * span >= np.finfo(dtype).tiny and math.isfinite(lo.reshape(()))):
        return None
    return span


def _check_broadcasts(x, shape, what):
    """x (an operand of a draw of `shape`) must broadcast to it without changing it."""
    if x.ndim > len(shape) or np.broadcast_shapes(x.shape, shape) != tuple(shape):
        raise ValueError(f"{what} of shape {tuple(x.shape)} does not broadcast to the sample "
                         f"shape {tuple(shape)}")
    return x


def _to_shape(x, shape):
    """x (an array of a shape that broadcasts to `shape`) broadcast to `shape`."""
    if tuple(x.shape) == tuple(shape):
        return x
    _check_broadcasts(x, shape, "shape")
    return lax.broadcast_in_dim(x, tuple(shape), tuple(range(len(shape) - x.ndim, len(shape))))


def _bound(v, dtype, shape, what):
    return _check_broadcasts(lax.convert_element_type(fnp.asarray(v), dtype), shape, what)


def _uniform(key, shape, dtype, minval, maxval):
    if isinstance(minval, (int, float)) and isinstance(maxval, (int, float)) and \
            minval == 0 and maxval == 1:
        return _draw((key,), shape, functools.partial(_unit_of, dtype=dtype))  # u * 1 + 0, exactly
    lo, hi = _bound(minval, dtype, shape, "minval"), _bound(maxval, dtype, shape, "maxval")
    return _draw((key,), shape, functools.partial(_uniform_of, dtype=dtype), lo, hi)


def uniform(key, shape=(), dtype=np.float32, minval=0.0, maxval=1.0):
    """Uniform floats on [minval, maxval) (minval/maxval may be arrays broadcasting to shape)."""
    _check_key(key, "uniform")
    dtype = _float_dtype(dtype, "uniform")
    return _uniform(key, _shape(shape, "uniform"), dtype, minval, maxval)


def normal(key, shape=(), dtype=np.float32):
    """Standard normal floats: sqrt(2) * erf_inv(u) for u uniform on (-1, 1) (as JAX)."""
    _check_key(key, "normal")
    dtype = _float_dtype(dtype, "normal")
    lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
    return _draw((key,), _shape(shape, "normal"), functools.partial(_normal_of, dtype=dtype),
                 lo, np.array(1.0, dtype))


def _normal_of(y0, y1, lo, hi, *, dtype):
    u = _uniform_of(y0, y1, lo, hi, dtype=dtype)
    return lax.mul(np.array(math.sqrt(2), dtype), sm.erf_inv(u))


def _erf_of_bound(bound, dtype):
    """erf(bound / sqrt(2)) in dtype, as JAX computes it: XLA rewrites the division as a
    multiplication by 1/sqrt(2) and folds a constant bound (a Python number) at compile time with
    the C library's erf, while an array bound goes through XLA's runtime erf (sm.erf). Both
    rules hold here, eagerly and under jit."""
    inv_s2 = np.array(1.0, dtype) / np.array(math.sqrt(2), dtype)
    if isinstance(bound, (int, float)) and np.dtype(dtype).itemsize >= 4:
        return np.array(math.erf(float(np.array(bound, dtype) * inv_s2)), dtype)
    return sm.erf(lax.mul(lax.convert_element_type(fnp.asarray(bound), dtype), inv_s2))


def truncated_normal(key, lower, upper, shape=None, dtype=np.float32):
    """Standard normal floats conditioned on lower < x < upper (bounds may be arrays; the shape
    defaults to their broadcast), by inverting the CDF over [cdf(lower), cdf(upper)] (as JAX)."""
    _check_key(key, "truncated_normal")
    dtype = _float_dtype(dtype, "truncated_normal")
    lo, hi = (lax.convert_element_type(fnp.asarray(b), dtype) for b in (lower, upper))
    shape = np.broadcast_shapes(lo.shape, hi.shape) if shape is None else \
        _shape(shape, "truncated_normal")
    # Rounding can land on (or past) a bound; the samples are kept strictly inside.
    inside_lo = lax.nextafter(lax.stop_gradient(lo), np.array(np.inf, dtype))
    inside_hi = lax.nextafter(lax.stop_gradient(hi), np.array(-np.inf, dtype))
    cdf_lo, cdf_hi = _erf_of_bound(lower, dtype), _erf_of_bound(upper, dtype)
    operands = [_check_broadcasts(v, shape, what) for v, what in (
        (cdf_lo, "lower"), (cdf_hi, "upper"), (inside_lo, "lower"), (inside_hi, "upper"))]
    return _draw((key,), shape, functools.partial(_truncated_normal_of, dtype=dtype), *operands)


def _truncated_normal_of(y0, y1, cdf_lo, cdf_hi, inside_lo, inside_hi, *, dtype):
    out = _normal_of(y0, y1, cdf_lo, cdf_hi, dtype=dtype)
    return lax.min(lax.max(out, inside_lo), inside_hi)


def gumbel(key, shape=(), dtype=np.float32):
    """Standard Gumbel floats: -log(-log(u)), u uniform on [tiny, 1) (JAX's mode="low")."""
    _check_key(key, "gumbel")
    dtype = _float_dtype(dtype, "gumbel")
    return _gumbel(key, _shape(shape, "gumbel"), dtype)


def _gumbel(key, shape, dtype):
    return _draw((key,), shape, functools.partial(_gumbel_of, dtype=dtype),
                 np.array(np.finfo(dtype).tiny, dtype), np.array(1.0, dtype))


def _gumbel_of(y0, y1, lo, hi, *, dtype):
    u = _uniform_of(y0, y1, lo, hi, dtype=dtype)
    # u in [tiny, 1) and -log(u) in (0, 88]: both logs' arguments are finite and positive
    known = type(lo) is np.ndarray and lo.reshape(()) > 0 and type(hi) is np.ndarray \
        and hi.reshape(()) <= 1
    return lax.neg(sm.log(lax.neg(sm.log(u, known)), known))


# ---------------------------------------------------------------------------------------------
# Discrete distributions

def bernoulli(key, p=0.5, shape=None, mode="low"):
    """Booleans, True with probability p (a float or an array of floats broadcasting to shape;
    shape defaults to p's). mode="high" draws twice the bits, for p below ~1e-7 in float32."""
    _check_key(key, "bernoulli")
    if mode not in ("low", "high"):
        raise ValueError(f"fg.random.bernoulli: mode must be 'low' or 'high', got {mode!r}")
    weak = isinstance(p, (int, float)) and not isinstance(p, bool)
    p = fnp.asarray(p)
    if weak:
        p = p.astype(np.float32)
    elif dtype_kind(p.dtype) != "f":
        raise TypeError(f"fg.random.bernoulli: the probability p must have a floating dtype, "
                        f"got {p.dtype} (pass p as a float, e.g. 0.5)")
    shape = p.shape if shape is None else _shape(shape, "bernoulli")
    if mode == "high":
        u = _uniform(key, (2,) + tuple(shape), p.dtype, 0.0, 1.0)
        u1, u2 = (lax.reshape(lax.slice_in_dim(u, i, i + 1, axis=0), tuple(shape))
                  for i in range(2))
        u2 = lax.mul(u2, np.array(2.0 ** -np.finfo(p.dtype).nmant, p.dtype))
        return lax.lt(u2, lax.sub(_to_shape(p, shape), u1))
    p = _check_broadcasts(p, shape, "p")
    return _draw((key,), shape, functools.partial(_bernoulli_of, dtype=p.dtype), p)


def _bernoulli_of(y0, y1, p, *, dtype):
    return lax.lt(_unit_of(y0, y1, dtype=dtype), p)


def categorical(key, logits, axis=-1, shape=None, replace=True):
    """Class indices drawn with probabilities softmax(logits) along `axis`, by the Gumbel-max
    trick: argmax(logits + gumbel). `shape` (default: logits' shape without `axis`) may add
    leading sample dimensions; `replace=False` draws them without replacement (Gumbel top-k)."""
    _check_key(key, "categorical")
    logits = fnp.asarray(logits)
    if dtype_kind(logits.dtype) != "f":
        logits = logits.astype(np.float32)
    axis = axis % logits.ndim
    batch = logits.shape[:axis] + logits.shape[axis + 1:]
    shape = batch if shape is None else _shape(shape, "categorical")
    if shape[len(shape) - len(batch):] != batch:
        raise ValueError(f"fg.random.categorical: shape {shape} must end with the logits' batch "
                         f"shape {batch}")
    prefix = shape[:len(shape) - len(batch)]
    if not replace:
        k = math.prod(prefix)
        if k > logits.shape[axis]:
            raise ValueError(f"fg.random.categorical: {k} samples without replacement cannot "
                             f"exceed the number of categories ({logits.shape[axis]})")
        g = lax.add(logits, _gumbel(key, logits.shape, logits.dtype))
        _, idx = lax.top_k(fnp.moveaxis(g, axis, -1), k)  # batch + (k,)
        idx = fnp.moveaxis(idx, -1, 0).reshape(shape)
        return idx.astype(np.int32)
    g = _gumbel(key, prefix + logits.shape, logits.dtype)
    full = lax.broadcast_in_dim(logits, prefix + logits.shape,
                                tuple(range(len(prefix), len(prefix) + logits.ndim)))
    return fnp.argmax(lax.add(g, full), axis=len(prefix) + axis).astype(np.int32)


def _clip_convert(x, dtype):
    """x (integer) converted to integer `dtype`, clipped to the range both can hold (no
    wrapping)."""
    src, dst = np.iinfo(x.dtype), np.iinfo(dtype)
    lo, hi = max(src.min, dst.min), min(src.max, dst.max)
    x = lax.min(lax.max(x, np.array(lo, x.dtype)), np.array(hi, x.dtype))
    return lax.convert_element_type(x, dtype)


def _urem(x, span):
    """x % span for unsigned integers, x where span == 0 (XLA's remainder by zero)."""
    if type(span) is np.ndarray and span.size == 1 and span.reshape(()) != 0:
        return lax.rem(x, span)  # a known nonzero span (the common case, eagerly)
    zero = lax.eq(span, np.array(0, span.dtype))
    r = lax.rem(x, lax.select_n(zero, span, lax.full(span.shape, 1, span.dtype)))
    return lax.select_n(zero, r, x)


def randint(key, shape, minval, maxval, dtype=np.int32):
    """Integers uniform on [minval, maxval) (arrays broadcasting to shape), JAX's construction:
    two `width`-bit draws (of the two halves of a split key) reduced modulo the span as one
    2*width-bit number (bias below span / 2**(2*width)). maxval <= minval gives minval; a maxval
    beyond the dtype's range reaches its maximum."""
    _check_key(key, "randint")
    dtype = np.dtype(np.int32 if dtype is None else dtype)
    if dtype.kind not in "iu":
        raise TypeError(f"fg.random.randint: dtype must be an integer type, got {dtype}")
    shape = _shape(shape, "randint")
    lo, hi = fnp.asarray(minval), fnp.asarray(maxval)
    lo = lo if lo.dtype.kind in "iu" else lo.astype(np.int64)
    hi = hi if hi.dtype.kind in "iu" else hi.astype(np.int64)
    if dtype.itemsize < 4:  # sampled in 32 bits, as JAX, so that the bias stays small
        info = np.iinfo(dtype)
        lo = lax.min(lax.max(_clip_convert(lo, np.int32), np.array(info.min, np.int32)),
                     np.array(info.max, np.int32))
        hi = lax.min(lax.max(_clip_convert(hi, np.int32), np.array(info.min, np.int32)),
                     np.array(info.max + 1, np.int32))
        return lax.convert_element_type(_randint(key, shape, lo, hi, np.dtype(np.int32)), dtype)
    return _randint(key, shape, lo, hi, dtype)


def _randint(key, shape, lo, hi, dtype):
    width = dtype.itemsize * 8
    udt = np.dtype(f"uint{width}")
    _check_broadcasts(lo, shape, "minval")
    _check_broadcasts(hi, shape, "maxval")
    top = _clip_convert(np.array(np.iinfo(dtype).max, dtype), hi.dtype)
    hi_out_of_range = lax.gt(hi, top)
    lo, hi = _clip_convert(lo, dtype), _clip_convert(hi, dtype)
    # The span, and 2**width % span = (2**(width/2) % span)**2 % span, at the bounds' shape
    span = lax.sub(lax.convert_element_type(hi, udt), lax.convert_element_type(lo, udt))
    empty = lax.le(hi, lo)
    span = lax.select_n(empty, span, np.array(1, udt))
    span = lax.select_n(lax.bitwise_and(hi_out_of_range, lax.bitwise_not(empty)),
                        span, lax.add(span, np.array(1, udt)))
    multiplier = _urem(np.array(2 ** (width // 2), udt), span)
    multiplier = _urem(lax.mul(multiplier, multiplier), span)
    return _draw(_split2(key), shape, functools.partial(_randint_of, width=width, dtype=dtype),
                 lo, span, multiplier)


def _randint_of(y0, y1, z0, z1, lo, span, multiplier, *, width, dtype):
    """lo + (higher * 2**width + lower) % span, for the words of the two keys of a split."""
    higher, lower = _bits_of(y0, y1, width=width), _bits_of(z0, z1, width=width)
    offset = lax.add(lax.mul(_urem(higher, span), multiplier), _urem(lower, span))
    offset = _urem(offset, span)
    return lax.add(lo, lax.convert_element_type(offset, dtype))


def _shuffle(key, x, axis):
    """Sort x along axis by fresh random 32-bit keys, repeated so that ties are unlikely to
    matter (JAX's rule: ceil(3 ln(size) / ln(2**32 - 1)) rounds, size = x's total size)."""
    size = max(1, math.prod(x.shape))
    rounds = int(math.ceil(3 * math.log(size) / math.log(2 ** 32 - 1)))
    for _ in range(rounds):
        key, sub = _split2(key)
        _, x = lax.sort(_bits(sub, x.shape, 32), x, dimension=axis, num_keys=1)
    return x


def permutation(key, x, axis=0, independent=False):
    """A random permutation of range(x) (x an int), or of x's entries along `axis`
    (`independent=True` shuffles each 1-d slice along axis on its own)."""
    _check_key(key, "permutation")
    if isinstance(x, (int, np.integer)):
        if x < 0:
            raise ValueError(f"fg.random.permutation: a negative size {x}")
        return _shuffle(key, lax.iota(np.int64, int(x)), 0)
    x = fnp.asarray(x)
    if x.ndim == 0:
        raise TypeError("fg.random.permutation: x must be an int or an array of rank >= 1")
    axis = axis % x.ndim
    if independent or x.ndim == 1:
        return _shuffle(key, x, axis)
    idx = _shuffle(key, lax.iota(np.int64, x.shape[axis]), 0)
    return fnp.take(x, idx, axis=axis)


def choice(key, a, shape=(), replace=True, p=None, axis=0):
    """Samples from range(a) (a an int) or from a's entries along `axis`, with or without
    replacement, uniformly or with probabilities p (JAX's construction for each case)."""
    _check_key(key, "choice")
    shape = _shape(shape, "choice")
    if isinstance(a, (int, np.integer)):
        n, arr = int(a), None
    else:
        arr = fnp.asarray(a)
        if arr.ndim == 0:
            raise ValueError("fg.random.choice: a must be an int or an array of rank >= 1")
        axis = axis % arr.ndim
        n = arr.shape[axis]
    draws = math.prod(shape)
    if n <= 0 and draws:
        raise ValueError("fg.random.choice: a must be positive / non-empty")
    if not replace and draws > n:
        raise ValueError(f"fg.random.choice: cannot take {draws} samples from {n} without "
                         "replacement")
    if p is not None:
        p = fnp.asarray(p)
        if p.shape != (n,):
            raise ValueError(f"fg.random.choice: p must have shape ({n},), got {p.shape}")
        if dtype_kind(p.dtype) != "f":
            p = p.astype(np.float32)
    if replace:
        if p is None:
            ind = randint(key, shape, 0, n, np.int32).astype(np.int64)
        else:
            cdf = fnp.cumsum(p)
            r = cdf[-1] * (1 - uniform(key, shape, p.dtype))
            ind = fnp.minimum(fnp.searchsorted(cdf, fnp.ravel(r)), n - 1).reshape(shape)
    else:
        if p is None:
            ind = fnp.reshape(permutation(key, n)[:draws], shape)
        else:  # Gumbel-top-k: the k largest log p + gumbel are a sample without replacement
            pos = lax.gt(p, np.array(0, p.dtype))
            logp = lax.select_n(pos, lax.full(p.shape, -np.inf, p.dtype),
                                sm.log(lax.select_n(pos, lax.full(p.shape, 1, p.dtype), p)))
            g = lax.add(_gumbel(key, (n,), p.dtype), logp)
            ind = fnp.reshape(lax.top_k(g, draws)[1].astype(np.int64), shape)
    return ind if arr is None else fnp.take(arr, ind, axis=axis)
