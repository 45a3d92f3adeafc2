"""ZeRO stages 1 and 2: each rank keeps the optimizer state of a 1/N slice of the parameters.

**The layout.** The trainable leaves of each dtype are laid end to end and cut into N slices of
nearly equal size, one per rank. A cut falls between *slabs* of a leaf: the blocks of elements that
share one index along the leaf's *split axis*, the leading axis if its slabs hold at most 2**16
elements (the rows of a matrix), else the longest axis (for a stacked `(layers, d, d)` weight,
`(layers, k, d)` blocks), so a cut is off balance by at most one slab. A rank's share of a leaf is
`x[..., lo:hi, ...]` along that axis: an array with the leaf's number of dimensions (the other sizes
unchanged). A scalar leaf is viewed as shape `(1,)`. Frozen leaves (a `mask` False) belong to no
rank: every rank sees them as empty arrays (size 0 along the split axis), so they take no optimizer
state and no buffer space.

**The per-slice optimizer state.** The optimizer runs unchanged, through its public `init` and
`update`, on the tree of this rank's slices (same structure as the parameters), inside
`optim.shard_slices`, which tells it the whole shape behind each slice (`optim.whole_shape`).
Elementwise optimizers then compute exactly what they compute unsharded, and masks or labels
given as callables of the parameters see the right number of dimensions
(`optim.default_decay_mask` decays the slices of matrices). Reductions over the elements of a
tree or a leaf (`optim.global_norm` in `clip_by_global_norm`, Adafactor's row and column means)
add up the slices of all ranks through `optim.shard_sum`, which sums over the process axis
`optim.SHARD_AXIS` that the sharded step binds. A state leaf is a slice of one parameter, cut
along one of its own axes (per element: Adam's moments; a statistic reduced over another axis:
Adafactor's row means of a matrix cut between rows), or held whole and alike by every rank (step
counters; a statistic reduced over the cut axis) (`classify_state`).
`ShardedState(inner, master, layout)` holds the optimizer's state of the slice (`inner`) and the
layout (static: part of the tree structure, so it is checked, saved and resharded).

**Master weights.** `master` is None, or this rank's slices of the parameters in a wider dtype
(`step.init(params, master_dtype=np.float32)` for bfloat16/float16 parameters): the optimizer
then updates the float32 slices, with float32 gradients, and the new parameters are the master
slices cast back to the parameter dtype before they are gathered. This is the plug for mixed
precision: a policy that keeps float32 master weights hands `master_dtype` to `step.init`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .. import numpy as fnp
from .. import optim as _optim
from .. import tree_util as tu
from ..core import ShapedArray, device_namespace

_SLAB = 1 << 16  # leading-axis slabs up to this many elements; else cut along the longest axis
MODES = ("optimizer", "gradients")


def _prod(shape):
    return int(math.prod(shape))


def _split_axis(shape):
    """The axis a leaf is cut along: the leading one if its slabs (the elements with one index
    along it) hold at most _SLAB elements, else the longest one."""
    if not shape or _prod(shape) <= _SLAB * max(shape[0], 1):
        return 0
    return int(np.argmax(shape))


@dataclasses.dataclass(frozen=True, eq=False)
class ShardLayout:
    """Which slabs of which leaves each of `size` ranks owns (see the module docstring).

    Per parameter leaf (in flatten order): its path, shape, dtype, split axis (in its *view*:
    the shape, or `(1,)` for a scalar) and `bounds`, size + 1 slab indices: rank r owns slabs
    `bounds[r]:bounds[r + 1]` (all zero for a frozen leaf). `groups` lists, per dtype, the
    trainable leaves and the length of each rank's block in the flat buffers the collectives
    send (the largest slice of that dtype; smaller slices are padded). `state_params` gives, per
    leaf of the optimizer state, the parameter it holds a slice of, or -1 for a leaf every rank
    holds whole (step counters), and `state_axes` the axis of that state leaf along which it is
    cut (its rows are the parameter's slabs `bounds[r]:bounds[r + 1]`), or -1.
    """

    mode: str
    rank: int
    size: int
    paths: tuple
    shapes: tuple
    dtypes: tuple
    axes: tuple
    bounds: tuple
    groups: tuple
    state_params: tuple = ()
    state_axes: tuple = ()
    master_dtype: str | None = None

    def __post_init__(self):
        key = tuple(getattr(self, f.name) for f in dataclasses.fields(self))
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_hash", hash(key))

    def __eq__(self, other):
        return self is other or (type(other) is ShardLayout and self._key == other._key)

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return (f"ShardLayout(mode={self.mode!r}, rank={self.rank}, size={self.size}, "
                f"{len(self.paths)} leaves)")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    # -- geometry ---------------------------------------------------------------------------
    def view_shape(self, i):
        return tuple(self.shapes[i]) or (1,)

    def slab(self, i):
        """Elements per index along the split axis."""
        view = self.view_shape(i)
        return _prod(view) // view[self.axes[i]] if view[self.axes[i]] else 0

    def trainable(self, i):
        return self.bounds[i][-1] > 0

    def fragment_shape(self, i, r=None):
        r = self.rank if r is None else r
        shape = list(self.view_shape(i))
        shape[self.axes[i]] = self.bounds[i][r + 1] - self.bounds[i][r]
        return tuple(shape)

    def fragment_size(self, i, r=None):
        return _prod(self.fragment_shape(i, r))

    def slices_known(self, slices):
        """The context (`optim.shard_slices`) in which the optimizer sees `slices` (one per leaf:
        this rank's, or larger probes) as slices of the whole leaves; frozen leaves as whole."""
        wholes = [(self.view_shape(i), self.axes[i]) if self.trainable(i)
                  else (tuple(np.shape(x)), None) for i, x in enumerate(slices)]
        return _optim.shard_slices(slices, wholes)

    # -- moving data (written with funcgrad.numpy: runs eagerly and under fg.jit) -----------
    def _slabs(self, x, i, lo, hi):
        x = fnp.reshape(x, self.view_shape(i))
        return x[(slice(None),) * self.axes[i] + (slice(lo, hi),)]

    def fragments(self, leaves, r=None, dtype=None):
        """Rank r's slice of every leaf (empty for frozen leaves)."""
        r = self.rank if r is None else r
        out = []
        for i, x in enumerate(leaves):
            dt = dtype or self.dtypes[i]
            if self.fragment_size(i, r) == 0:
                out.append(fnp.zeros(self.fragment_shape(i, r), dt))
            else:
                out.append(fnp.asarray(self._slabs(x, i, self.bounds[i][r],
                                                   self.bounds[i][r + 1]), dt))
        return out

    def _block(self, pieces, used, length, dtype):
        if used < length:
            pieces.append(fnp.zeros((length - used,), dtype))
        return pieces

    def pack_all(self, group, leaves):
        """The flat buffer of one dtype group, block r holding rank r's slices (padded)."""
        dtype, idx, length = group
        pieces = []
        for r in range(self.size):
            used = 0
            for i in idx:
                lo, hi = self.bounds[i][r], self.bounds[i][r + 1]
                if hi > lo:
                    pieces.append(fnp.ravel(self._slabs(leaves[i], i, lo, hi)))
                    used += (hi - lo) * self.slab(i)
            self._block(pieces, used, length, dtype)
        return fnp.concatenate(pieces)

    def pack_mine(self, group, fragments, pad=True):
        """This rank's block of one dtype group, from its slices (padded to the block length,
        or not)."""
        dtype, idx, length = group
        pieces, used = [], 0
        for i in idx:
            n = self.fragment_size(i)
            if n:
                pieces.append(fnp.ravel(fnp.asarray(fragments[i], dtype)))
                used += n
        if pad:
            self._block(pieces, used, length, dtype)
        return fnp.concatenate(pieces) if pieces else fnp.zeros((0,), dtype)

    def cut_mine(self, group, block):
        """{leaf index: this rank's slice} from this rank's block of one dtype group."""
        _, idx, _ = group
        out, start = {}, 0
        for i in idx:
            n = self.fragment_size(i)
            out[i] = fnp.reshape(block[start:start + n], self.fragment_shape(i))
            start += n
        return out

    def unpack_flat(self, group, flat):
        """{leaf index: whole leaf} from the unpadded slices of every rank laid end to end
        (`flat`, a NumPy or CuPy array). Leaves cut along their first axis are views of `flat`
        (rank r's rows end where rank r + 1's begin); the others are assembled (copies)."""
        _, idx, _ = group
        ends = np.cumsum([sum(self.fragment_size(i, r) for i in idx) for r in range(self.size)])
        starts = [0] + [int(e) for e in ends[:-1]]
        out = {}
        for i in idx:
            if self.axes[i] == 0:
                first = next(r for r in range(self.size) if self.fragment_size(i, r))
                n = _prod(self.shapes[i])
                out[i] = flat[starts[first]:starts[first] + n].reshape(self.shapes[i])
            else:
                parts = [flat[starts[r]:starts[r] + self.fragment_size(i, r)].reshape(
                    self.fragment_shape(i, r)) for r in range(self.size)
                    if self.fragment_size(i, r)]
                whole = device_namespace([flat]).concatenate(parts, axis=self.axes[i])
                out[i] = whole.reshape(self.shapes[i])
            for r in range(self.size):
                starts[r] += self.fragment_size(i, r)
        return out


def build_layout(params, trainable, mode, rank, size):
    """The layout of `params` (a pytree) over `size` ranks; `trainable` is one bool per leaf."""
    pairs, _ = tu.tree_flatten_with_path(params)
    paths = tuple(tu.path_to_str(p) for p, _ in pairs)
    shapes = tuple(tuple(int(d) for d in np.shape(x)) for _, x in pairs)
    dtypes = tuple(np.dtype(x.dtype).name if hasattr(x, "dtype") else np.result_type(x).name
                   for _, x in pairs)
    axes = tuple(_split_axis(s or (1,)) for s in shapes)
    bounds = [(0,) * (size + 1)] * len(pairs)
    by_dtype = {}
    for i, on in enumerate(trainable):
        if on and _prod(shapes[i]):
            by_dtype.setdefault(dtypes[i], []).append(i)
    groups = []
    for dtype, idx in by_dtype.items():
        view = [(shapes[i] or (1,)) for i in idx]
        slab = [_prod(v) // v[axes[i]] for v, i in zip(view, idx)]
        total = sum(_prod(v) for v in view)
        targets = [(r * total + size // 2) // size for r in range(size + 1)]  # even cuts
        offset, blocks = 0, [0] * size
        for i, v, s in zip(idx, view, slab):
            n = v[axes[i]]
            b = [min(max((t - offset + s // 2) // s, 0), n) for t in targets]
            b[0], b[-1] = 0, n
            bounds[i] = tuple(b)
            for r in range(size):
                blocks[r] += (b[r + 1] - b[r]) * s
            offset += n * s
        groups.append((dtype, tuple(idx), max(blocks)))
    return ShardLayout(mode, int(rank), int(size), paths, shapes, dtypes, axes, tuple(bounds),
                       tuple(groups))


@dataclasses.dataclass
class ShardedState:
    """The optimizer state of one rank under a sharded train step: `inner` is the optimizer's
    state for this rank's slices, `master` None or the float32 (say) master slices, `layout`
    the ShardLayout (static)."""

    inner: Any
    master: Any
    layout: ShardLayout


tu.register_dataclass(ShardedState, data_fields=["inner", "master"], meta_fields=["layout"])


def _ends_with(path, suffix):
    return len(suffix) <= len(path) and tuple(path[len(path) - len(suffix):]) == tuple(suffix)


def classify_state(init, layout, treedef, param_paths, dtype_of):
    """`(state_params, state_axes)` for `layout` (see ShardLayout): which parameter each leaf of
    `init(slices)` holds a slice of, and along which of its own axes.

    Found by tracing `init` abstractly on two trees of slices, the second one slab longer along
    every trainable leaf's split axis. A state leaf whose shape differs between the two in one
    axis only, by one, and that is as long along that axis as parameter i along its split axis
    (at a path ending with i's path, as Optax-style states mirror the parameters) holds slices
    of i cut along that axis: per element of i (Adam's moments), or a statistic reduced over
    other axes of i (Adafactor's row means when the cut is between rows). A leaf of the same
    shape in both is held whole, and alike, by every rank (step counters; a statistic reduced
    over the cut axis, which the optimizer adds up over the ranks with `optim.shard_sum`).
    Anything else cannot be sharded.
    """
    def probe(extra):
        avals = []
        for i in range(len(layout.paths)):
            shape = list(layout.view_shape(i))
            if layout.trainable(i):
                shape[layout.axes[i]] += extra
            else:
                shape = list(layout.fragment_shape(i, 0))
            avals.append(ShapedArray(tuple(shape), dtype_of(i)))
        return avals

    def init_slices(leaves):
        with layout.slices_known(leaves):
            return init(tu.tree_unflatten(treedef, leaves))

    from ..transforms.jit import eval_shape
    a_pairs, a_tree = tu.tree_flatten_with_path(eval_shape(init_slices, probe(0)))
    b_pairs, b_tree = tu.tree_flatten_with_path(eval_shape(init_slices, probe(1)))
    if a_tree != b_tree:
        raise ValueError("make_train_step(shard=...): the optimizer's state has a different "
                         "structure for different slice sizes; it cannot be sharded")
    owners, axes = [], []
    for (path, a), (_, b) in zip(a_pairs, b_pairs):
        if a.shape == b.shape:
            owners.append(-1)
            axes.append(-1)
            continue
        grown = [k for k in range(len(a.shape)) if len(a.shape) == len(b.shape)
                 and b.shape[k] != a.shape[k]]
        k = grown[0] if len(grown) == 1 and b.shape[grown[0]] == a.shape[grown[0]] + 1 else -1
        found = -1
        for i in sorted(range(len(param_paths)), key=lambda i: -len(param_paths[i])):
            if (k >= 0 and layout.trainable(i) and _ends_with(path, param_paths[i])
                    and a.shape[k] == layout.view_shape(i)[layout.axes[i]]):
                found = i
                break
        if found < 0:
            raise ValueError(
                f"make_train_step(shard=...): the optimizer state leaf "
                f"{tu.path_to_str(path)!r} has shape {tuple(a.shape)} for slices shaped like "
                f"the parameters and {tuple(b.shape)} for slices one slab longer, so it is "
                "neither a slice of one parameter (at a path ending with the parameter's path, "
                "one slab longer along one axis) nor the same on every rank. Only optimizers "
                "whose state is per element of the parameters, a statistic of their rows or "
                "columns, or replicated, can be sharded; use shard=None for this one.")
        owners.append(found)
        axes.append(k)
    return tuple(owners), tuple(axes)


# ----------------------------------------------------------------------------------------------
# Memory report


def _nbytes(tree):
    return int(sum(np.dtype(x.dtype).itemsize * _prod(np.shape(x))
                   for x in tu.tree_leaves(tree) if hasattr(x, "dtype")))


@dataclasses.dataclass
class MemoryReport:
    """Bytes held per rank by the parameters, the reduced gradients, the optimizer state and
    the master weights (one dict per rank, in rank order), for one training setup.

    `gradients` counts the averaged gradient a rank keeps after the reduction: the trainable
    leaves whole (shard=None or "optimizer") or its slice ("gradients"). The backward pass also
    makes a whole local gradient for a moment on every rank; it is not counted here, as in the
    ZeRO paper's accounting.
    """

    mode: str | None
    ranks: list

    def __getitem__(self, key):
        return self.ranks[key]

    def __str__(self):
        cols = ("params", "gradients", "optimizer", "master", "total")
        mib = lambda b: f"{b / 2**20:10.2f}"  # noqa: E731
        lines = [f"memory per rank (MiB), shard={self.mode!r}",
                 "rank " + " ".join(f"{c:>10}" for c in cols)]
        for r, row in enumerate(self.ranks):
            lines.append(f"{r:4d} " + " ".join(mib(row[c]) for c in cols))
        return "\n".join(lines)


def local_memory(params, opt_state, trainable):
    """This rank's row of the memory report."""
    p = _nbytes(params)
    if isinstance(opt_state, ShardedState):
        lay = opt_state.layout
        if lay.mode == "gradients":
            g = sum(length * np.dtype(dtype).itemsize for dtype, _, length in lay.groups)
        else:
            g = sum(np.dtype(lay.dtypes[i]).itemsize * _prod(lay.shapes[i])
                    for i in range(len(lay.paths)) if lay.trainable(i))
        o, m = _nbytes(opt_state.inner), _nbytes(opt_state.master)
    else:
        leaves = tu.tree_leaves(params)
        g = sum(_nbytes(x) for x, on in zip(leaves, trainable) if on)
        o, m = _nbytes(opt_state), 0
    return {"params": p, "gradients": int(g), "optimizer": o, "master": m,
            "total": p + int(g) + o + m}
