"""Differential fuzz of funcgrad against JAX: random programs under random stacks of transforms.

Not part of CI (JAX is an oracle for local checks only; the committed tests never import it).
Each program is a random chain of operations on a small real or complex array, written once
against a namespace `L` that is funcgrad.numpy or jax.numpy, ending in a real scalar. The same
random stack of transforms (jit, vmap, grad, jvp, checkpoint, linearize, jacfwd, jacrev,
value_and_grad) is applied with each library, and the two results must agree to float64
precision. A program for which both libraries raise counts as agreement; a raise on one side
only, or different numbers, is a disagreement, printed with the program and the stack.

    python tools/fuzz_jax.py --programs 2000 --seed 0 [--no-custom] [--only complex]

Operation families: elementwise (real and complex), reductions, products and einsum, linalg
(solve, det, norm, svd, eigh, eigvals), fft (fft, ifft, rfft, irfft, fft2, fftshift), indexing
(.at updates with and without mode=, gathers, r_), control flow (cond, fori_loop, scan), the
library's custom rules (nn.relu at its kink, softplus, softmax, log_softmax, logsumexp,
scipy.special.gammaln, digamma) and user custom_jvp / custom_vjp rules whose derivative differs
from the primal's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.scipy.special  # noqa: E402,F401

import funcgrad as fg  # noqa: E402
import funcgrad.numpy as fnp  # noqa: E402

jax.config.update("jax_enable_x64", True)

SHAPE = (6,)
M_REAL = np.array([[1.0, 0.3, -0.2, 0.0, 0.1, 0.0], [0.0, 0.9, 0.4, 0.1, 0.0, 0.2],
                   [0.2, 0.0, 1.1, -0.3, 0.0, 0.0], [0.0, 0.1, 0.0, 1.0, 0.5, -0.1],
                   [0.1, 0.0, 0.2, 0.0, 0.8, 0.3], [-0.2, 0.0, 0.0, 0.1, 0.0, 1.2]])
M_CPLX = M_REAL + 0.3j * M_REAL[::-1]


class Lib:
    """What a program needs from one library: its numpy, lax, and transforms."""

    def __init__(self, name):
        self.name = name
        if name == "fg":
            self.np, self.lax, self.t = fnp, fg.lax, fg
            self.nn, self.special = fg.nn, fg.scipy.special
            self.checkpoint = fg.checkpoint
            self.custom_jvp, self.custom_vjp = fg.custom_jvp, fg.custom_vjp
        else:
            self.np, self.lax, self.t = jnp, jax.lax, jax
            self.nn, self.special = jax.nn, jax.scipy.special
            self.checkpoint = jax.checkpoint
            self.custom_jvp, self.custom_vjp = jax.custom_jvp, jax.custom_vjp
        self._custom = {}

    def custom(self, kind):
        """User rules whose derivative is not the primal's (so a dropped rule shows)."""
        if kind in self._custom:
            return self._custom[kind]
        L = self.np
        if kind == "jvp":
            @self.custom_jvp
            def f(x):
                return L.tanh(x) * 2.0

            @f.defjvp
            def f_jvp(primals, tangents):
                (x,), (t,) = primals, tangents
                return f(x), t * 3.0 * L.cos(x)
        else:
            @self.custom_vjp
            def f(x):
                return L.sin(x) + x

            def fwd(x):
                return f(x), L.cos(x)

            def bwd(res, g):
                return (g * 0.5 * res,)

            f.defvjp(fwd, bwd)
        self._custom[kind] = f
        return f


# ---------------------------------------------------------------------------------------------
# Operations: (name, domain, fn(lib, x) -> x'). domain: "real" (real x in, real out), "complex"
# (complex in, complex out), "both" (any in, same kind out), "r2c" (real in, complex out), "c2r"
# (complex in, real out). All keep the shape (6,) and are smooth where the chain can reach.

def _op(name, domain, fn, custom=False):
    return {"name": name, "domain": domain, "fn": fn, "custom": custom}


def _same_kind(lib, x, y):
    """y, made real again (its real part) when x is real: keeps the chain's dtype kind."""
    return y if x.dtype.kind == "c" else lib.np.real(y)


def _fft_roundtrip(lib, x):
    L = lib.np
    return _same_kind(lib, x, L.fft.ifft(L.fft.fft(x) * L.asarray(np.linspace(0.5, 1.5, 6))))


def _at_ops(lib, x):
    L = lib.np
    y = L.asarray(x).at[1].add(x[0] * 0.5)
    return y.at[np.array([0, 3, 3])].multiply(1.1)


OPS = [
    _op("sin", "both", lambda lib, x: lib.np.sin(x)),
    _op("tanh", "real", lambda lib, x: lib.np.tanh(x)),
    _op("exp", "both", lambda lib, x: lib.np.exp(0.3 * x)),
    _op("square", "both", lambda lib, x: x * x * 0.5),
    _op("affine", "both", lambda lib, x: 0.7 * x + 0.2),
    _op("log1p_sq", "real", lambda lib, x: lib.np.log1p(x * x)),
    _op("sqrt_shift", "complex", lambda lib, x: lib.np.sqrt(x * 0.2 + 2.0)),
    _op("log_shift", "complex", lambda lib, x: lib.np.log(x * 0.2 + 2.0)),
    _op("conj", "complex", lambda lib, x: lib.np.conj(x) * (1 - 0.5j)),
    _op("real_imag_mix", "complex", lambda lib, x: lib.np.real(x) + 1j * lib.np.imag(x) ** 2),
    _op("to_complex", "r2c", lambda lib, x: x + 1j * lib.np.sin(x)),
    _op("abs", "c2r", lambda lib, x: lib.np.abs(x) + 0.1),
    _op("angle", "c2r", lambda lib, x: lib.np.angle(x + 3.0)),
    _op("re_im", "c2r", lambda lib, x: lib.np.real(x) * lib.np.imag(x)),
    _op("center", "both", lambda lib, x: x - lib.np.mean(x)),
    _op("cumsum", "both", lambda lib, x: lib.np.cumsum(x) * 0.3),
    _op("scale_by_sum", "both", lambda lib, x: x * lib.np.sum(x) * 0.2),
    _op("reverse", "both", lambda lib, x: x[::-1]),
    _op("gather", "both", lambda lib, x: x[np.array([2, 0, 1, 5, 4, 3])] + x),
    _op("at_updates", "both", _at_ops),
    _op("at_mode", "both", lambda lib, x: lib.np.asarray(x).at[np.array([0, 7, -1, -9])].add(
        x[2], mode="drop")),
    _op("r_", "both", lambda lib, x: lib.np.r_[x[3:], x[:3] * 2.0]),
    _op("matvec", "both", lambda lib, x: lib.np.matmul(
        lib.np.asarray(M_CPLX if x.dtype.kind == "c" else M_REAL), x)),
    _op("einsum", "both", lambda lib, x: lib.np.einsum("ij,j->i", lib.np.asarray(M_REAL), x)),
    _op("outer_trace", "both", lambda lib, x: lib.np.einsum(
        x, [0], x[::-1], [1], [0, 1])[:, 2] * 0.3),
    _op("solve", "both", lambda lib, x: lib.np.linalg.solve(lib.np.asarray(M_REAL), x)),
    _op("det_scale", "both", lambda lib, x: x * lib.np.linalg.det(
        lib.np.reshape(x[:4], (2, 2)) + 3.0 * lib.np.eye(2))),
    _op("norm_scale", "both", lambda lib, x: x / (1.0 + lib.np.linalg.norm(x))),
    _op("svd_vals", "both", lambda lib, x: x + lib.np.concatenate(
        [lib.np.linalg.svd(lib.np.reshape(x, (2, 3)) + lib.np.asarray(
            np.array([[2.0, 0, 0], [0, 1.0, 0]])), compute_uv=False)] * 3)),
    _op("eigvalsh", "both", lambda lib, x: x + lib.np.concatenate([lib.np.linalg.eigvalsh(
        _hermitian(lib, x))] * 3)),
    _op("eigvals", "both", lambda lib, x: lib.np.real(lib.np.sort_complex(lib.np.linalg.eigvals(
        lib.np.reshape(x[:4], (2, 2)) + lib.np.asarray(np.array([[2.0, 0.0], [0.0, -1.0]])))))[
        np.array([0, 1, 0, 1, 0, 1])] + x),
    _op("fft_roundtrip", "both", lambda lib, x: _fft_roundtrip(lib, x)),
    _op("fft_abs", "c2r", lambda lib, x: lib.np.abs(lib.np.fft.fft(x)) * 0.2),
    _op("rfft_irfft", "real", lambda lib, x: lib.np.fft.irfft(
        lib.np.fft.rfft(x) * lib.np.asarray(np.array([1.0, 0.5, 2.0, 1.0])), n=6)),
    _op("rfft_re", "r2c", lambda lib, x: lib.np.fft.rfft(x, n=10)[:6]),
    _op("irfft_c2r", "c2r", lambda lib, x: lib.np.fft.irfft(x[:4], n=6)),
    _op("fft2", "both", lambda lib, x: _same_kind(lib, x, lib.np.reshape(lib.np.fft.fft2(
        lib.np.reshape(x, (2, 3)), norm="ortho"), (6,)))),
    _op("fftshift", "both", lambda lib, x: lib.np.fft.fftshift(x) * 0.5 + x),
    _op("cond", "both", lambda lib, x: lib.lax.cond(True, lambda v: v * 0.5, lambda v: -v, x)),
    _op("fori", "both", lambda lib, x: lib.lax.fori_loop(0, 2, lambda i, c: c * 0.5 + x, x)),
    _op("scan", "both", lambda lib, x: lib.lax.scan(lambda c, v: (c * 0.9 + v, c * v), 0.0 * x[0],
                                                     x)[1] + x),
    _op("where", "real", lambda lib, x: lib.np.where(x > 0.1234, x, 0.5 * x)),
    _op("maximum", "real", lambda lib, x: lib.np.maximum(x, 0.2 * x + 0.0317)),
    # The library's own rules (custom_jvp in nn and scipy.special): relu's kink at 0 (x - x is
    # exactly 0) has derivative 0 only by its rule.
    _op("relu_kink", "real", lambda lib, x: lib.nn.relu(x - x) + lib.nn.relu(x), custom=True),
    _op("softplus", "real", lambda lib, x: lib.nn.softplus(2.0 * x), custom=True),
    _op("logsumexp", "real", lambda lib, x: x - lib.special.logsumexp(x), custom=True),
    _op("softmax", "real", lambda lib, x: lib.nn.softmax(x) * 3.0, custom=True),
    _op("log_softmax", "real", lambda lib, x: lib.nn.log_softmax(x), custom=True),
    _op("gammaln", "real", lambda lib, x: lib.special.gammaln(x * x + 0.5), custom=True),
    _op("digamma", "real", lambda lib, x: lib.special.digamma(x * x + 0.5) * 0.3, custom=True),
    _op("custom_jvp", "both", lambda lib, x: lib.custom("jvp")(x), custom=True),
    _op("custom_vjp", "both", lambda lib, x: lib.custom("vjp")(x), custom=True),
]


CUSTOM_OPS = {o["name"] for o in OPS if o["custom"]}

# Holomorphic chains (complex in, complex out, complex-differentiable): for holomorphic=True.
HOLOMORPHIC = {"sin", "exp", "square", "affine", "center", "cumsum", "scale_by_sum", "reverse",
               "gather", "at_updates", "at_mode", "r_", "matvec", "einsum", "outer_trace", "solve",
               "det_scale", "fft_roundtrip", "fft2", "fftshift", "cond", "fori", "scan",
               "sqrt_shift", "log_shift", "custom_jvp"}


def _hermitian(lib, x):
    L = lib.np
    a = L.reshape(x[:4], (2, 2))
    return a + L.conj(a.T) + L.asarray(np.array([[3.0, 0.0], [0.0, -3.0]]))


def _finish(lib, x):
    """The program's real scalar output."""
    L = lib.np
    if x.dtype.kind == "c":
        return L.sum(L.real(x * (0.3 + 0.7j)) + L.imag(x) ** 2 * 0.5)
    return L.sum(L.sin(x) * np.linspace(0.5, 1.5, 6))


def build_holomorphic(rng):
    allowed = [o for o in OPS if o["name"] in HOLOMORPHIC]
    return [allowed[int(rng.integers(len(allowed)))] for _ in range(int(rng.integers(1, 5)))]


def holomorphic_program(lib, ops):
    def f(x):
        for op in ops:
            x = op["fn"](lib, x)
        return lib.np.sum(x * np.linspace(0.5, 1.5, 6) * (1 - 0.5j))
    return f


HOLO_TRANSFORMS = ["jit", "vmap", "grad", "jvp", "checkpoint", "jacfwd", "jacrev"]


def wrap_holomorphic(lib, kind, f, w):
    """Transforms of a complex scalar function of complex x, with holomorphic=True."""
    L, t = lib.np, lib.t
    if kind in ("jit", "checkpoint", "vmap"):  # (as without holomorphic)
        return wrap(lib, kind, f, w, True)
    if kind == "grad":
        return lambda x: L.sum(t.grad(f, holomorphic=True)(x) * w)
    if kind == "jvp":
        return lambda x: t.jvp(f, (x,), (w,))[1]
    if kind == "jacfwd":
        return lambda x: L.sum(t.jacfwd(f, holomorphic=True)(x) * w)
    if kind == "jacrev":
        return lambda x: L.sum(t.jacrev(f, holomorphic=True)(x) * w)
    raise ValueError(kind)


def build_program(rng, kind, with_custom):
    """A list of ops from a start dtype kind ('real' or 'complex'): each op's domain matches the
    current kind; returns (ops, start_kind)."""
    ops, cur = [], kind
    n = int(rng.integers(1, 5))
    for _ in range(n):
        allowed = [o for o in OPS if (with_custom or not o["custom"]) and (
            o["domain"] == "both" or (cur == "real" and o["domain"] in ("real", "r2c"))
            or (cur == "complex" and o["domain"] in ("complex", "c2r")))]
        op = allowed[int(rng.integers(len(allowed)))]
        ops.append(op)
        if op["domain"] == "r2c":
            cur = "complex"
        elif op["domain"] == "c2r":
            cur = "real"
    return ops


def program(lib, ops):
    def f(x):
        for op in ops:
            x = op["fn"](lib, x)
        return _finish(lib, x)
    return f


# ---------------------------------------------------------------------------------------------
# Transforms: each maps a real scalar function of x to another

TRANSFORMS = ["jit", "vmap", "grad", "jvp", "checkpoint", "linearize", "jacfwd", "jacrev",
              "value_and_grad"]


def wrap(lib, kind, f, w, complex_input):
    L, t = lib.np, lib.t
    if kind == "jit":
        return t.jit(f)
    if kind == "checkpoint":
        return lib.checkpoint(f)
    if kind == "vmap":
        return lambda x: L.sum(t.vmap(f)(L.stack([x, x * 0.5 + 0.1])))
    if kind == "grad":
        return lambda x: L.sum(L.real(t.grad(f)(x) * w))
    if kind == "value_and_grad":
        def vg(x):
            v, g = t.value_and_grad(f)(x)
            return v + L.sum(L.real(g * w))
        return vg
    if kind == "jvp":
        return lambda x: t.jvp(f, (x,), (w,))[1]
    if kind == "linearize":
        return lambda x: t.linearize(f, x)[1](w)
    if kind == "jacrev":
        return lambda x: L.sum(L.real(t.jacrev(f)(x) * w))
    if kind == "jacfwd":
        if complex_input:
            return None  # jacfwd needs holomorphic=True for complex inputs (both raise)
        return lambda x: L.sum(t.jacfwd(f)(x) * w)
    raise ValueError(kind)


def run_holomorphic(rng):
    ops = build_holomorphic(rng)
    stack = [HOLO_TRANSFORMS[int(rng.integers(len(HOLO_TRANSFORMS)))]
             for _ in range(int(rng.integers(1, 4)))]
    derivs = [s for s in stack if s in ("grad", "jvp", "jacfwd", "jacrev")]
    if len(derivs) > 2:
        stack = [s for s in stack if s not in ("grad", "jvp", "jacfwd", "jacrev")] + derivs[:2]
    x = rng.uniform(-1, 1, SHAPE) + 1j * rng.uniform(-1, 1, SHAPE)
    w = rng.uniform(-1, 1, SHAPE) + 1j * rng.uniform(-1, 1, SHAPE)
    results = {}
    for name in ("fg", "jax"):
        lib = Lib(name)
        f = holomorphic_program(lib, ops)
        for s in stack:
            f = wrap_holomorphic(lib, s, f, w)
        try:
            results[name] = ("ok", np.asarray(f(x)))
        except Exception as e:  # noqa: BLE001
            results[name] = ("raise", f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
    return "holomorphic", ops, [s + "(holomorphic)" if s in ("grad", "jacfwd", "jacrev") else s
                                for s in stack], results, x


def run_one(rng, args):
    if args.only != "real" and rng.random() < 0.15:
        return run_holomorphic(rng)
    kind = "complex" if args.only == "complex" else "real" if args.only == "real" else (
        "complex" if rng.random() < 0.5 else "real")
    ops = build_program(rng, kind, args.custom)
    n_t = int(rng.integers(0, 4))
    stack = [TRANSFORMS[int(rng.integers(len(TRANSFORMS)))] for _ in range(n_t)]
    derivs = sum(s in ("grad", "jvp", "linearize", "jacfwd", "jacrev", "value_and_grad")
                 for s in stack)
    if derivs > 2:  # at most two derivative levels (third derivatives of chains are slow)
        stack = [s for s in stack if s in ("jit", "vmap", "checkpoint")] + [
            s for s in stack if s not in ("jit", "vmap", "checkpoint")][:2]
    x = rng.uniform(-1, 1, SHAPE)
    w = rng.uniform(-1, 1, SHAPE)
    if kind == "complex":
        x = x + 1j * rng.uniform(-1, 1, SHAPE)
        w = w + 1j * rng.uniform(-1, 1, SHAPE)
    results = {}
    for name in ("fg", "jax"):
        lib = Lib(name)
        f = program(lib, ops)
        for s in stack:
            f = wrap(lib, s, f, w, kind == "complex")
            if f is None:
                break
        if f is None:
            results[name] = ("skip", None)
            continue
        try:
            results[name] = ("ok", np.asarray(f(x)))
        except Exception as e:  # noqa: BLE001
            results[name] = ("raise", f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
    return kind, ops, stack, results, x


def agree(a, b):
    if a[0] != b[0]:
        return False
    if a[0] != "ok":
        return True
    ga, gb = a[1], b[1]
    if ga.shape != gb.shape:
        return False
    scale = max(1.0, float(np.max(np.abs(gb), initial=0.0)))
    return bool(np.allclose(ga, gb, rtol=1e-7, atol=1e-9 * scale, equal_nan=True))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--programs", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-custom", dest="custom", action="store_false")
    p.add_argument("--only", choices=["real", "complex"], default=None)
    p.add_argument("--show", type=int, default=10, help="disagreements to print in full")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    counts = {"agree": 0, "both_raise": 0, "disagree": 0, "skip": 0}
    kinds = {}
    by_transform, by_op, disagreements, both_raise = {}, {}, [], {}
    start = time.time()
    for k in range(args.programs):
        kind, ops, stack, res, x = run_one(rng, args)
        a, b = res["fg"], res["jax"]
        kinds[kind] = kinds.get(kind, 0) + 1
        if a[0] == "skip":
            counts["skip"] += 1
            continue
        ok = agree(a, b)
        if ok:
            counts["both_raise" if a[0] == "raise" else "agree"] += 1
            if a[0] == "raise":
                both_raise.setdefault(b[1].split(":")[0] + ": " + b[1][-70:], 0)
                both_raise[b[1].split(":")[0] + ": " + b[1][-70:]] += 1
        else:
            counts["disagree"] += 1
            disagreements.append((k, kind, [o["name"] for o in ops], stack, a, b))
        for s in set(stack) or {"(none)"}:
            by_transform.setdefault(s, [0, 0])[0 if ok else 1] += 1
        for o in {o["name"] for o in ops}:
            by_op.setdefault(o, [0, 0])[0 if ok else 1] += 1
        if (k + 1) % 50 == 0:  # a run cut short still says how far it got
            print(f"... {k + 1} programs, {time.time() - start:.0f} s: {counts}", flush=True)
    elapsed = time.time() - start
    print(f"{args.programs} programs in {elapsed:.0f} s (seed {args.seed}, custom rules "
          f"{'on' if args.custom else 'off'}): {counts}")
    print(f"programs by input kind: {kinds}")
    print("transforms (programs using it: agree / disagree):")
    print("  " + ", ".join(f"{s} {v[0]}/{v[1]}" for s, v in sorted(by_transform.items())))
    print("operations:")
    print("  " + ", ".join(f"{s} {v[0]}/{v[1]}" for s, v in sorted(by_op.items())))
    if both_raise:
        print("both raise (JAX's message):")
        for m, n in sorted(both_raise.items(), key=lambda t: -t[1]):
            print(f"  {n} x {m}")
    custom = [d for d in disagreements if set(d[2]) & CUSTOM_OPS]
    jax_internal = [d for d in disagreements if d not in custom and d[5][0] == "raise"
                    and "INTERNAL" in str(d[5][1])]
    other = [d for d in disagreements if d not in custom and d not in jax_internal]
    print(f"disagreements: {len(custom)} with a custom rule, {len(jax_internal)} where JAX fails "
          f"internally (XLA errors), {len(other)} others")
    for d in disagreements:
        k, kind, ops, stack, a, b = d
        print(f"  #{k} {kind} ops={ops} stack={stack}: funcgrad {_short(a)[:60]} | jax "
              f"{_short(b)[:60]}")
    for d in other[:args.show]:
        k, kind, ops, stack, a, b = d
        print(f"\n#{k} {kind} ops={ops} stack={stack}\n  funcgrad: {_short(a)}\n  jax:      "
              f"{_short(b)}")
    return 1 if counts["disagree"] else 0


def _short(r):
    if r[0] == "ok":
        return np.array2string(np.asarray(r[1]), precision=10)
    return str(r[1])


if __name__ == "__main__":
    sys.exit(main())
