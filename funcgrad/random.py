"""fg.random: counter-based random numbers (Threefry-2x32), as JAX's `jax.random`.

A key is a plain `uint32[2]` array. Every function is a pure function of its key: the numbers
are Threefry-2x32 (20 rounds, Salmon et al. 2011) of a counter, written with integer primitives
(add mod 2**32, shifts, or, xor), so the same key gives the same bits eagerly, under `jit`,
under `vmap` over a batch of keys and on every backend. Keys are never reused: `split` a key
into fresh ones, or `fold_in` an integer (a step, a layer index).

The stream layout follows JAX's default ("non-partitionable") Threefry: `key(s)` is
[s >> 32, s & 0xffffffff], `split`/`bits` hash the counters 0..n-1 split in two halves, and
`uniform` takes the top mantissa bits, so the integer streams coincide with JAX's.
Floating-point results default to float32.
"""

from __future__ import annotations

import math

import numpy as np

from . import lax
from . import numpy as fnp
from .core.avals import dtype_kind

__all__ = [
    "key", "PRNGKey", "split", "fold_in", "bits", "uniform", "normal", "truncated_normal",
    "bernoulli", "categorical", "gumbel", "randint", "permutation", "choice", "threefry_2x32",
]

_U32 = np.dtype(np.uint32)
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def _u32(v):
    return np.array(v, _U32)


# ---------------------------------------------------------------------------------------------
# Keys

def _check_key(k, fn):
    """Reject anything but a single uint32[2] key, with the fix in the message."""
    dtype, shape = getattr(k, "dtype", None), getattr(k, "shape", None)
    if dtype is None or shape is None or np.dtype(dtype) != _U32:
        got = (f"{np.dtype(dtype).name}{list(shape)}" if dtype is not None and shape is not None
               else type(k).__name__)
        raise TypeError(f"fg.random.{fn}: expected a key, a uint32[2] array made by "
                        f"fg.random.key(seed) or split(); got {got}")
    if tuple(shape) != (2,):
        hint = " (a batch of keys: use fg.vmap over them)" if shape and shape[-1] == 2 else ""
        raise ValueError(f"fg.random.{fn}: expected a single key of shape uint32[2], got "
                         f"uint32{list(shape)}{hint}")
    return k


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


def _key_words(k):
    return (lax.reshape(lax.slice(k, (0,), (1,)), ()), lax.reshape(lax.slice(k, (1,), (2,)), ()))


# ---------------------------------------------------------------------------------------------
# Threefry-2x32

def _rotl(x, r):
    return lax.bitwise_or(lax.shift_left(x, _u32(r)), lax.shift_right_logical(x, _u32(32 - r)))


def threefry_2x32(k0, k1, x0, x1):
    """Threefry-2x32 with 20 rounds of the block (x0, x1) under the key (k0, k1): uint32 arrays
    that broadcast together. Returns the two output words."""
    ks = (k0, k1, lax.bitwise_xor(lax.bitwise_xor(k0, k1), _u32(_PARITY)))
    x0, x1 = lax.add(x0, ks[0]), lax.add(x1, ks[1])
    for i in range(5):  # 5 x 4 rounds, a key injection after each 4
        for r in _ROTATIONS[i % 2]:
            x0 = lax.add(x0, x1)
            x1 = lax.bitwise_xor(_rotl(x1, r), x0)
        x0 = lax.add(x0, ks[(i + 1) % 3])
        x1 = lax.add(x1, lax.add(ks[(i + 2) % 3], _u32(i + 1)))
    return x0, x1


def _hash(k, counts):
    """Threefry of the flat uint32 `counts` under key k, the counts paired first half with
    second half (as JAX): one uint32 output per count."""
    k0, k1 = _key_words(k)
    n = counts.shape[0]
    if n % 2:
        counts = lax.concatenate([counts, lax.full((1,), 0, _U32)], 0)
    h = counts.shape[0] // 2
    y0, y1 = threefry_2x32(k0, k1, lax.slice(counts, (0,), (h,)), lax.slice(counts, (h,), (2 * h,)))
    out = lax.concatenate([y0, y1], 0)
    return lax.slice(out, (0,), (n,)) if n % 2 else out


def _words(k, n):
    """n pseudo-random uint32 words: the hash of the counters 0..n-1."""
    return _hash(k, lax.iota(_U32, n)) if n else lax.full((0,), 0, _U32)


def split(key, num=2):
    """`num` new independent keys, shape (num, 2); `num` may be a shape tuple."""
    _check_key(key, "split")
    shape = (int(num),) if np.ndim(num) == 0 else tuple(int(s) for s in num)
    return lax.reshape(_words(key, 2 * math.prod(shape)), shape + (2,))


def fold_in(key, data):
    """A new key from `key` and an integer `data` (taken mod 2**32): for per-step or per-layer
    keys without threading a split through the program."""
    _check_key(key, "fold_in")
    if isinstance(data, (int, np.integer)):
        d = _u32(int(data) % 2 ** 32)
    else:
        d = lax.convert_element_type(fnp.asarray(data), _U32)
        if d.shape != ():
            raise TypeError(f"fg.random.fold_in: data must be a scalar, got shape {d.shape}")
    counts = lax.concatenate([lax.full((1,), 0, _U32), lax.reshape(d, (1,))], 0)
    return _hash(key, counts)


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
    return _bits(key, _shape(shape, "bits"), dtype)


def _bits(key, shape, dtype):
    dtype = _U32 if dtype is None else np.dtype(dtype)  # None: the default, as in JAX
    if dtype.kind != "u":
        raise TypeError(f"fg.random.bits: dtype must be an unsigned integer type, got {dtype}")
    size = math.prod(shape)
    width = dtype.itemsize * 8
    if width == 32:
        return lax.reshape(_words(key, size), shape)
    if width == 64:
        w = _words(key, 2 * size)
        hi = lax.convert_element_type(lax.slice(w, (0,), (size,)), dtype)
        lo = lax.convert_element_type(lax.slice(w, (size,), (2 * size,)), dtype)
        return lax.reshape(lax.bitwise_or(lax.shift_left(hi, np.array(32, dtype)), lo), shape)
    per = 32 // width  # pieces per word, lowest first
    count = -(-size // per)
    w = lax.broadcast_in_dim(_words(key, count), (count, per), (0,))
    shifts = lax.mul(lax.iota(_U32, (count, per), 1), _u32(width))
    pieces = lax.bitwise_and(lax.shift_right_logical(w, shifts), _u32(2 ** width - 1))
    flat = lax.slice(lax.reshape(pieces, (count * per,)), (0,), (size,))
    return lax.reshape(lax.convert_element_type(flat, dtype), shape)


# ---------------------------------------------------------------------------------------------
# Continuous distributions

def _float_dtype(dtype, fn):
    dtype = np.dtype(np.float32 if dtype is None else dtype)  # None: the default, as in JAX
    if dtype_kind(dtype) != "f":
        raise TypeError(f"fg.random.{fn}: dtype must be a floating type, got {dtype}")
    return dtype


def _unit(key, shape, dtype):
    """Uniform on [0, 1) from the top mantissa bits: (bits >> (width - nmant)) * 2**-nmant,
    exactly JAX's bitcast construction without the bitcast."""
    nmant = np.finfo(dtype).nmant
    udt = np.dtype(f"uint{dtype.itemsize * 8}")
    b = _bits(key, shape, udt)
    m = lax.shift_right_logical(b, np.array(dtype.itemsize * 8 - nmant, udt))
    return lax.mul(lax.convert_element_type(m, dtype), np.array(2.0 ** -nmant, dtype))


def uniform(key, shape=(), dtype=np.float32, minval=0.0, maxval=1.0):
    """Uniform floats on [minval, maxval) (minval/maxval may be arrays broadcasting to shape)."""
    _check_key(key, "uniform")
    dtype = _float_dtype(dtype, "uniform")
    shape = _shape(shape, "uniform")
    lo = fnp.asarray(minval, dtype)
    hi = fnp.asarray(maxval, dtype)
    u = _unit(key, shape, dtype)
    return fnp.maximum(lo, u * (hi - lo) + lo)


def normal(key, shape=(), dtype=np.float32):
    """Standard normal floats: sqrt(2) * erf_inv(u) for u uniform on (-1, 1) (as JAX)."""
    _check_key(key, "normal")
    dtype = _float_dtype(dtype, "normal")
    lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
    u = uniform(key, shape, dtype, lo, 1.0)
    return lax.mul(np.array(math.sqrt(2), dtype), lax.erf_inv(u))


def truncated_normal(key, lower, upper, shape=None, dtype=np.float32):
    """Standard normal floats conditioned on lower < x < upper (bounds may be arrays; the shape
    defaults to their broadcast), by inverting the CDF over [cdf(lower), cdf(upper)]."""
    _check_key(key, "truncated_normal")
    dtype = _float_dtype(dtype, "truncated_normal")
    lower, upper = fnp.asarray(lower, dtype), fnp.asarray(upper, dtype)
    if shape is None:
        shape = np.broadcast_shapes(lower.shape, upper.shape)
    s2 = np.dtype(dtype).type(math.sqrt(2))  # a NumPy scalar: fine next to any array type
    a, b = lax.erf(lower / s2), lax.erf(upper / s2)
    u = uniform(key, shape, dtype, a, b)
    out = s2 * lax.erf_inv(u)
    # Rounding can land on (or past) a bound; keep the samples strictly inside.
    return fnp.clip(out, fnp.nextafter(lower, np.array(np.inf, dtype)),
                    fnp.nextafter(upper, np.array(-np.inf, dtype)))


def gumbel(key, shape=(), dtype=np.float32):
    """Standard Gumbel floats: -log(-log(u)), u uniform on [tiny, 1)."""
    _check_key(key, "gumbel")
    dtype = _float_dtype(dtype, "gumbel")
    u = uniform(key, shape, dtype, np.finfo(dtype).tiny, 1.0)
    return -fnp.log(-fnp.log(u))


# ---------------------------------------------------------------------------------------------
# Discrete distributions

def bernoulli(key, p=0.5, shape=None):
    """Booleans, True with probability p (an array broadcasting to shape; shape defaults to
    p's)."""
    _check_key(key, "bernoulli")
    weak = isinstance(p, (int, float))
    p = fnp.asarray(p)
    dtype = np.dtype(np.float32) if weak or dtype_kind(p.dtype) != "f" else p.dtype
    shape = p.shape if shape is None else _shape(shape, "bernoulli")
    return uniform(key, shape, dtype) < p.astype(dtype)


def categorical(key, logits, axis=-1, shape=None):
    """Class indices drawn with probabilities softmax(logits) along `axis`, by the Gumbel-max
    trick: argmax(logits + gumbel). `shape` (default: logits' shape without `axis`) may add
    leading sample dimensions."""
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
    full_shape = prefix + logits.shape
    g = gumbel(key, full_shape, logits.dtype)
    return fnp.argmax(g + logits, axis=len(prefix) + axis)


def randint(key, shape, minval, maxval, dtype=np.int32):
    """Integers uniform on [minval, maxval) (arrays broadcasting to shape), from 64 random bits
    reduced modulo the span (bias below span / 2**64). maxval <= minval gives minval."""
    _check_key(key, "randint")
    dtype = np.dtype(np.int32 if dtype is None else dtype)
    if dtype.kind not in "iu":
        raise TypeError(f"fg.random.randint: dtype must be an integer type, got {dtype}")
    shape = _shape(shape, "randint")
    lo = fnp.asarray(minval).astype(np.int64)
    hi = fnp.asarray(maxval).astype(np.int64)
    span = fnp.maximum(hi - lo, 1).astype(np.uint64)
    offset = lax.rem(_bits(key, shape, np.uint64), fnp.broadcast_to(span, shape))
    return (lo + offset.astype(np.int64)).astype(dtype)


def _shuffle(key, x, axis):
    """Sort x along axis by fresh random 32-bit keys, repeated so that ties are unlikely to
    matter (JAX's rule: ceil(3 ln n / ln 2**32) rounds)."""
    n = x.shape[axis] if x.ndim else 1
    rounds = int(math.ceil(3 * math.log(max(1, n)) / math.log(2 ** 32 - 1)))
    for _ in range(rounds):
        key, sub = split(key)
        _, x = lax.sort(_bits(sub, x.shape, _U32), x, dimension=axis, num_keys=1)
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
    if independent:
        return _shuffle(key, x, axis)
    idx = _shuffle(key, lax.iota(np.int64, x.shape[axis]), 0)
    return fnp.take(x, idx, axis=axis)


def choice(key, a, shape=(), replace=True, p=None, axis=0):
    """Samples from range(a) (a an int) or from a's entries along `axis`, with or without
    replacement, uniformly or with probabilities p."""
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
            ind = randint(key, shape, 0, n, np.int64)
        else:
            cdf = fnp.cumsum(p)
            r = cdf[-1] * (1 - uniform(key, shape, p.dtype))
            ind = fnp.minimum(fnp.searchsorted(cdf, fnp.ravel(r)), n - 1).reshape(shape)
    else:
        if p is None:
            ind = fnp.reshape(permutation(key, n)[:draws], shape)
        else:  # Gumbel-top-k: the k largest log p + gumbel are a sample without replacement
            logp = fnp.where(p > 0, fnp.log(fnp.where(p > 0, p, 1)), -np.inf)
            g = gumbel(key, (n,), p.dtype) + logp
            ind = fnp.reshape(lax.top_k(g, draws)[1].astype(np.int64), shape)  # as above
    return ind if arr is None else fnp.take(arr, ind, axis=axis)
