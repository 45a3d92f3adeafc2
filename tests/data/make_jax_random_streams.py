"""Record JAX's random streams as test data for tests/test_random_streams.py.

    python tests/data/make_jax_random_streams.py      # needs jax (CPU); not run by CI

Writes jax_random_streams.json (the cases: function, arguments, JAX version) and
jax_random_streams.npz (one array per case, read back with allow_pickle=False). JAX's defaults
(jax_threefry_partitionable=True); float32 and 32-bit integer cases without x64, float64 and
64-bit integer cases in a second process with jax_enable_x64. Every case is one call of a
`jax.random` function on a legacy uint32[2] key (`jax.random.PRNGKey(seed)`), which is what
funcgrad's keys are; the test calls funcgrad's function of the same name with the same arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def cases(x64):
    """(id, function name, seed, args, kwargs) for every recorded draw. Arguments are JSON
    values; a dict {"array": [...], "dtype": ...} is an array."""
    arr = lambda v, dt: {"array": v, "dtype": dt}
    out = []

    def add(fn, seed, *args, **kwargs):
        out.append((f"{fn}-{len(out)}-{'x64' if x64 else 'x32'}", fn, seed, list(args), kwargs))

    if not x64:
        for seed in (0, 1, 42, 2 ** 31 - 1, 12345):
            add("key", seed)
        for seed, num in ((0, 2), (42, 2), (1, 3), (7, 1), (5, [2, 3]), (9, 5)):
            add("split", seed, num)
        for seed, d in ((0, 0), (0, 7), (3, 2 ** 32 - 1), (42, 123456)):
            add("fold_in", seed, d)
        for shape in ([], [1], [7], [3, 5], [2, 3, 4]):
            for dt in ("uint32", "uint8", "uint16"):
                add("bits", 11, shape, dt)
        for shape in ([], [1], [7], [3, 5], [2, 3, 4], [1001]):
            add("uniform", 1, shape, "float32")
            add("normal", 2, shape, "float32")
        add("uniform", 3, [9], "float32", -3.3, 7.1)
        add("uniform", 4, [2, 3], "float32", arr([-1.0, 0.0, 2.5], "float32"), 10.0)
        add("uniform", 5, [4097], "float32", 0.25, 0.75)
        add("normal", 6, [5000], "float32")
        for shape, lo, hi in (([7], -2.0, 2.0), ([3, 5], -1.0, 3.0), ([2000], -2.0, 2.0),
                              ([], 0.5, 4.0)):
            add("truncated_normal", 7, lo, hi, shape, "float32")
        add("truncated_normal", 8, arr([-1.0, 0.0, -3.0], "float32"), 1.5, None, "float32")
        for shape, lo, hi, dt in (([], 0, 10, "int32"), ([7], 0, 10, "int32"),
                                  ([3, 5], -5, 1000, "int32"), ([500], 0, 2 ** 31 - 1, "int32"),
                                  ([9], -(2 ** 31), 2 ** 31 - 1, "int32"),
                                  ([6], 5, 5, "int32"), ([6], 7, 2, "int32"),
                                  ([20], -100, 100, "int8"), ([20], 0, 256, "uint8"),
                                  ([20], 0, 60000, "uint16"), ([11], 3, 17, "uint32")):
            add("randint", 9, shape, lo, hi, dt)
        add("randint", 10, [2, 3], arr([0, 10, 100], "int32"), arr([5, 20, 1000], "int32"),
            "int32")
        add("bernoulli", 12, 0.3, [100])
        add("bernoulli", 13, arr([0.1, 0.5, 0.9], "float32"), None)
        add("bernoulli", 14, 0.5, [])
        logits5 = arr([0.1, -1.0, 2.0, 0.0, 0.5], "float32")
        logits34 = arr([[0.0, 1.0, -1.0, 2.0], [3.0, 0.0, 0.0, 0.0],
                        [-2.0, -2.0, 5.0, 0.0]], "float32")
        add("categorical", 15, logits5)
        add("categorical", 16, logits34)
        add("categorical", 17, logits34, 0)
        add("categorical", 18, logits34, -1, [6, 3])
        add("categorical", 19, arr([0.0] * 50, "float32"), -1, [200])
        add("permutation", 20, 10)
        add("permutation", 21, 1)
        add("permutation", 22, 2049)  # two sorting rounds
        add("permutation", 23, arr(list(range(7)), "int32"))
        add("permutation", 24, arr([[float(4 * i + j) for j in range(4)] for i in range(5)],
                                   "float32"))
        add("permutation", 25, arr([[float(4 * i + j) for j in range(4)] for i in range(5)],
                                   "float32"), 1)
        add("permutation", 26, arr([[float(4 * i + j) for j in range(4)] for i in range(5)],
                                   "float32"), 1, True)
        add("gumbel", 27, [7], "float32")
        add("choice", 28, 10, [4])
        add("choice", 29, 10, [4], False)
        add("choice", 30, 5, [6], True, arr([0.1, 0.2, 0.3, 0.4, 0.0], "float32"))
        # jax.nn.initializers: (factory name, factory args), shape, dtype
        for seed, (name, fargs), shape in (
                (41, ("lecun_normal", []), [5, 7]), (42, ("glorot_uniform", []), [16, 3]),
                (43, ("he_normal", []), [3, 3, 4, 8]), (44, ("lecun_uniform", []), [9, 2]),
                (45, ("normal", [0.02]), [4, 6]), (46, ("uniform", [0.1]), [7]),
                (47, ("truncated_normal", [0.02]), [3, 5]),
                (48, ("variance_scaling", [0.5, "fan_geo_avg", "normal"]), [6, 10]),
                (49, ("glorot_normal", []), [128, 64])):
            add("initializer", seed, name, fargs, shape, "float32")
    else:
        for shape in ([], [7], [3, 5], [1001]):
            add("bits", 31, shape, "uint64")
            add("uniform", 32, shape, "float64")
            add("normal", 33, shape, "float64")
        add("uniform", 34, [9], "float64", -3.3, 7.1)
        add("normal", 35, [3000], "float64")
        add("truncated_normal", 36, -2.0, 2.0, [500], "float64")
        add("randint", 37, [50], -(2 ** 40), 2 ** 40, "int64")
        add("randint", 38, [9], 0, 10, "int64")
        add("categorical", 39, arr([0.1, -1.0, 2.0, 0.0, 0.5], "float64"), -1, [40, 1])
        add("bernoulli", 40, arr([0.1, 0.5, 0.9], "float64"), [4, 3])
        add("initializer", 50, "lecun_normal", [], [6, 5], "float64")
    return out


def _value(v, jnp):
    if isinstance(v, dict) and "array" in v:
        return jnp.asarray(np.array(v["array"], v["dtype"]))
    if isinstance(v, list):
        return tuple(v)
    return v


def record(x64):
    import jax

    jax.config.update("jax_enable_x64", x64)
    import jax.numpy as jnp

    assert jax.config.jax_threefry_partitionable, "record JAX's default streams"
    arrays, meta = {}, []
    for cid, fn, seed, args, kwargs in cases(x64):
        if fn == "key":
            out = jax.random.PRNGKey(seed)
        elif fn == "initializer":
            name, fargs, shape, dt = args
            init = getattr(jax.nn.initializers, name)(*fargs)
            out = init(jax.random.PRNGKey(seed), tuple(shape), jnp.dtype(dt))
        else:
            key = jax.random.PRNGKey(seed)
            vals = [_value(a, jnp) for a in args]
            if fn == "bits" or fn in ("uniform", "normal", "gumbel"):
                vals[1] = jnp.dtype(vals[1])
            if fn == "truncated_normal":
                vals[3] = jnp.dtype(vals[3])
            if fn == "randint":
                vals[3] = jnp.dtype(vals[3])
            out = getattr(jax.random, fn)(key, *vals, **kwargs)
        arrays[cid] = np.asarray(out)
        meta.append({"id": cid, "fn": fn, "seed": seed, "args": args, "kwargs": kwargs})
    return arrays, meta


def main():
    if len(sys.argv) > 1:  # a worker: record one x64 setting into the given file
        x64 = sys.argv[1] == "x64"
        arrays, meta = record(x64)
        np.savez(sys.argv[2], **arrays)
        with open(sys.argv[2] + ".json", "w") as f:
            json.dump(meta, f)
        return
    import jax

    arrays, meta = {}, []
    for mode in ("x32", "x64"):
        tmp = os.path.join(HERE, f".tmp_{mode}.npz")
        subprocess.run([sys.executable, __file__, mode, tmp], check=True)
        with np.load(tmp, allow_pickle=False) as z:
            arrays.update({k: z[k] for k in z.files})
        with open(tmp + ".json") as f:
            meta += json.load(f)
        os.remove(tmp)
        os.remove(tmp + ".json")
    np.savez_compressed(os.path.join(HERE, "jax_random_streams.npz"), **arrays)
    with open(os.path.join(HERE, "jax_random_streams.json"), "w") as f:
        json.dump({"jax_version": jax.__version__, "threefry_partitionable": True,
                   "platform": "cpu", "cases": meta}, f, indent=1)
    print(f"recorded {len(meta)} draws with JAX {jax.__version__}")


if __name__ == "__main__":
    main()
