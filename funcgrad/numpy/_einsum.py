"""einsum: subscripts parsed at trace time, contraction order from opt_einsum, and each pairwise
contraction lowered to one lax.dot_general (shared kept indices become its batch dimensions).

Before the pairwise steps every operand is simplified on its own: repeated indices become a
diagonal (one gather), and indices that no other operand and not the output use are summed out.
Size-1 axes that broadcast against a larger size elsewhere (NumPy allows this, e.g. through
`...`) are squeezed away, so no operand is ever materialized at a broadcast size.
"""

from __future__ import annotations

import string

import numpy as np
import opt_einsum

from .. import lax
from ..core import Tracer, user_line
from ._core import asarray, result_type

__all__ = ["einsum", "einsum_path"]

_LETTERS = string.ascii_letters


def _parse(subscripts, shapes):
    """([letters per operand], output letters) with '...' replaced by fresh letters."""
    subscripts = subscripts.replace(" ", "")
    if "->" in subscripts:
        lhs, out = subscripts.split("->")
        if "->" in out:
            raise ValueError("einsum: subscripts may contain at most one '->'")
    else:
        lhs, out = subscripts, None
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: {len(terms)} operand subscripts for {len(shapes)} operands"
                         f"{user_line()}")
    for ch in subscripts:
        if ch not in _LETTERS and ch not in ",.->":
            raise ValueError(f"einsum: invalid subscript character {ch!r}")
    used = set(c for c in subscripts if c in _LETTERS)
    free = [c for c in _LETTERS if c not in used]
    n_ell = 0
    for t, shape in zip(terms, shapes):
        if "..." in t:
            n_ell = max(n_ell, len(shape) - len(t.replace("...", "")))
    ell = "".join(free[:n_ell])
    inputs = []
    for t, shape in zip(terms, shapes):
        if t.count("...") > 1 or (t.replace("...", "").count(".")):
            raise ValueError(f"einsum: invalid ellipsis in {t!r}")
        named = len(t.replace("...", ""))
        if "..." in t:
            k = len(shape) - named
            if k < 0:
                raise ValueError(f"einsum: operand has {len(shape)} axes, fewer than its "
                                 f"subscripts {t!r} name{user_line()}")
            t = t.replace("...", ell[n_ell - k:] if k else "")
        if len(t) != len(shape):
            raise ValueError(f"einsum: operand with subscripts {t!r} has {len(shape)} axes "
                             f"(shape {tuple(shape)}){user_line()}")
        inputs.append(t)
    if out is None:
        counts = {}
        for t in inputs:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    else:
        if out.count("...") > 1:
            raise ValueError("einsum: invalid ellipsis in the output")
        out = out.replace("...", ell)
        for c in out:
            if out.count(c) > 1:
                raise ValueError(f"einsum: output subscript {c!r} appears more than once")
            if not any(c in t for t in inputs):
                raise ValueError(f"einsum: output subscript {c!r} does not appear in the inputs")
    return inputs, out


def _sizes(inputs, shapes):
    """Each letter's size; size-1 axes broadcast against any other size."""
    sizes = {}
    for t, shape in zip(inputs, shapes):
        for c, n in zip(t, shape):
            prev = sizes.get(c)
            if prev is None or prev == 1:
                sizes[c] = n
            elif n != 1 and n != prev:
                raise ValueError(f"einsum: subscript {c!r} has sizes {prev} and {n}{user_line()}")
    return sizes


def _take_diagonal(x, letters):
    """Merge repeated letters of one operand by taking diagonals (a gather each)."""
    from ._diagonals import diagonal
    while True:
        dup = next((c for c in letters if letters.count(c) > 1), None)
        if dup is None:
            return x, letters
        i = letters.index(dup)
        j = letters.index(dup, i + 1)
        x = diagonal(x, 0, i, j)
        letters = "".join(c for k, c in enumerate(letters) if k not in (i, j)) + dup


def _sum_out(x, letters, keep):
    axes = tuple(i for i, c in enumerate(letters) if c not in keep)
    if not axes:
        return x, letters
    return lax.reduce_sum(x, axes), "".join(c for c in letters if c in keep)


def _contract_pair(a, la, b, lb, keep):
    """One dot_general: shared letters kept are batch dims, shared others are contracted."""
    a, la = _sum_out(a, la, set(lb) | keep)
    b, lb = _sum_out(b, lb, set(la) | keep)
    shared = [c for c in la if c in lb]
    batch = [c for c in shared if c in keep]
    contract = [c for c in shared if c not in keep]
    dn = ((tuple(la.index(c) for c in contract), tuple(lb.index(c) for c in contract)),
          (tuple(la.index(c) for c in batch), tuple(lb.index(c) for c in batch)))
    out = lax.dot_general(a, b, dn)
    letters = ("".join(batch) + "".join(c for c in la if c not in shared)
               + "".join(c for c in lb if c not in shared))
    return out, letters


def _path(eq, shapes, optimize):
    n = len(shapes)
    if n < 2:
        return [tuple(range(n))]
    if optimize is False or optimize is None:
        return [(0, 1)] * (n - 1)
    if isinstance(optimize, (list, tuple)):
        steps = [tuple(s) for s in optimize if s != "einsum_path"]
        return steps
    strategy = "greedy" if optimize is True else optimize
    path, _ = opt_einsum.contract_path(eq, *shapes, shapes=True, optimize=strategy)
    return [tuple(p) for p in path]


def einsum(subscripts, *operands, optimize=True, precision=None, preferred_element_type=None,
           out=None, dtype=None, casting="safe"):
    """NumPy's einsum (explicit or implicit output, '...', repeated indices), contracted in
    opt_einsum's order with one dot_general per pairwise step. The interleaved form
    einsum(a, [0, 1], b, [1, 2], [0, 2]) (integer axis labels, Ellipsis) is accepted too."""
    if out is not None:
        raise TypeError("einsum: out= is not supported (arrays are immutable)")
    if not isinstance(subscripts, str):  # einsum(a, [0, 1], b, [1, 2], [0, 2])
        subscripts, operands = _from_sublists((subscripts,) + operands)
    ops = [asarray(o) for o in operands]
    dt = np.dtype(dtype) if dtype is not None else result_type(*operands)
    if preferred_element_type is not None:
        dt = np.dtype(preferred_element_type)
    ops = [o if o.dtype == dt else lax.convert_element_type(o, dt) for o in ops]
    shapes = [tuple(o.shape) for o in ops]
    inputs, output = _parse(subscripts, shapes)
    sizes = _sizes(inputs, shapes)
    # Per operand: squeeze broadcast size-1 axes, take diagonals, sum out private letters.
    terms = []
    for k, (x, t) in enumerate(zip(ops, inputs)):
        sq = tuple(i for i, c in enumerate(t) if x.shape[i] == 1 and sizes[c] != 1)
        if sq:
            x = lax.squeeze(x, sq)
            t = "".join(c for i, c in enumerate(t) if i not in sq)
        x, t = _take_diagonal(x, t)
        others = set(output).union(*(set(u) for j, u in enumerate(inputs) if j != k))
        x, t = _sum_out(x, t, others)
        terms.append((x, t))
    eq = ",".join(t for _, t in terms) + "->" + output
    path = _path(eq, [tuple(x.shape) for x, _ in terms], optimize)
    for step in path:
        step = sorted(step, reverse=True)
        picked = [terms.pop(i) for i in step][::-1]
        rest = set(output).union(*(set(t) for _, t in terms))
        x, t = picked[0]
        for i in range(1, len(picked)):
            y, u = picked[i]
            later = set().union(*(set(v) for _, v in picked[i + 1:]))
            x, t = _contract_pair(x, t, y, u, rest | later)
        if len(picked) == 1:
            x, t = _sum_out(x, t, rest)
        terms.append((x, t))
    while len(terms) > 1:  # a path that left several terms: contract them in order
        (x, t), (y, u) = terms[0], terms[1]
        rest = set(output).union(*(set(v) for _, v in terms[2:]))
        terms = [_contract_pair(x, t, y, u, rest)] + terms[2:]
    x, t = terms[0]
    x, t = _sum_out(x, t, set(output))
    x = lax.transpose(x, tuple(t.index(c) for c in output))
    if type(x) is not Tracer and x.dtype != dt:
        x = x.astype(dt)
    return x


def _from_sublists(args):
    """NumPy's interleaved form, einsum(op0, sublist0, op1, sublist1, ..., [sublistout]): each
    sublist names an operand's axes with integers (0..51) or Ellipsis. Returns (subscripts,
    operands) of the string form."""
    output = args[-1] if len(args) % 2 == 1 else None
    pairs = args[:-1] if output is not None else args
    ops, lists = list(pairs[0::2]), list(pairs[1::2])
    if not ops or len(lists) != len(ops):
        raise ValueError(f"einsum: the interleaved form takes operand, sublist pairs (and an "
                         f"optional output sublist), got {len(args)} arguments{user_line()}")

    def letters(sublist):
        out = []
        for label in sublist:
            if label is Ellipsis:
                out.append("...")
            elif isinstance(label, (int, np.integer)) and not isinstance(label, bool) \
                    and 0 <= label < len(_LETTERS):
                out.append(_LETTERS[int(label)])
            else:
                raise ValueError(f"einsum: sublist labels must be integers in [0, "
                                 f"{len(_LETTERS)}) or Ellipsis, got {label!r}{user_line()}")
        return "".join(out)

    for sub in lists + ([output] if output is not None else []):
        if isinstance(sub, str) or not hasattr(sub, "__iter__"):
            raise TypeError(f"einsum: expected a sublist (a list of axis labels), got {sub!r}"
                            f"{user_line()}; the string form takes the subscripts first.")
    subscripts = ",".join(letters(sub) for sub in lists)
    if output is not None:
        subscripts += "->" + letters(output)
    return subscripts, tuple(ops)


def einsum_path(subscripts, *operands, optimize="greedy", einsum_call=False):
    """(path, report) as NumPy's einsum_path: the path starts with 'einsum_path'."""
    if not isinstance(subscripts, str):
        subscripts, operands = _from_sublists((subscripts,) + operands)
    shapes = [tuple(np.shape(o)) if type(o) is not Tracer else o.shape for o in operands]
    inputs, output = _parse(subscripts, shapes)
    eq = ",".join(inputs) + "->" + output
    strategy = "greedy" if optimize is True else "auto" if optimize is None else optimize
    if strategy is False:
        path = [(0, 1)] * (len(shapes) - 1)
        return ["einsum_path"] + path, f"  Complete contraction:  {eq}\n  (no optimization)"
    path, info = opt_einsum.contract_path(eq, *shapes, shapes=True, optimize=strategy)
    return ["einsum_path"] + [tuple(p) for p in path], str(info)
