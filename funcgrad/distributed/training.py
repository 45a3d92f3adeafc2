"""Data-parallel training: named-axis collectives over processes, and the train step.

Inside a function run by `data_parallel`, the named-axis collectives (`fg.lax.psum`, `pmean`,
`pmax`, `pmin`, `psum_scatter`, `all_gather`, `axis_index`) over `axis_name` run across processes.
`make_train_step` builds the data-parallel step, replicated or ZeRO-sharded (sharding.py).
"""

from __future__ import annotations

import zlib

import numpy as np

from .. import masks as _masks
from .. import numpy as fnp
from .. import optim as _optim
from .. import tree_util as tu
from ..core import device_namespace
from ..lax import parallel as _parallel
from ..transforms.grad import value_and_grad
from ..transforms.jit import jit as _jit
from . import sharding as _sharding
from .groups import is_cupy, world


def data_parallel(f, axis_name="data", group=None):
    """Run `f` with `axis_name` bound to the processes of `group` (default: the world).

    The collectives over `axis_name` in f, eager or compiled by fg.jit, become allreduces and
    allgathers over the group. Wrap a jitted function (data_parallel(fg.jit(step))), not the
    other way round.
    """
    def run(*args, **kwargs):
        g = group if group is not None else world()
        with _parallel.process_axis(axis_name, g):
            return f(*args, **kwargs)

    run.__name__ = f"data_parallel({getattr(f, '__name__', 'f')})"
    run.__wrapped__ = f
    return run


def shard(batch, group=None):
    """This rank's equal, contiguous slice of every leaf of `batch` along its leading axis."""
    g = group if group is not None else world()

    def cut(x):
        n = np.shape(x)[0]
        if n % g.size:
            raise ValueError(f"shard: a leading axis of {n} does not split evenly over {g.size} "
                             "processes; equal shards keep the mean of the per-rank means equal "
                             "to the mean over the whole batch. Trim or pad the batch.")
        k = n // g.size
        return x[g.rank * k:(g.rank + 1) * k]

    return tu.tree_map(cut, batch)


def _by_dtype(leaves):
    groups = {}
    for i, x in enumerate(leaves):
        groups.setdefault(np.dtype(x.dtype), []).append(i)
    return groups.values()


def fused_pmean(tree, axis_name="data"):
    """The mean of every leaf over `axis_name`, with one collective per dtype (usually one):
    the leaves are flattened into one buffer, reduced, and cut back into the tree's shapes.

    Written with funcgrad.numpy and fg.lax.pmean, so it runs eagerly, under fg.jit (one pmean
    equation in the program) and under fg.vmap(..., axis_name=...) (simulated ranks).
    """
    return _fused(tree, axis_name, _parallel.pmean)


def _fused(tree, axis_name, reduce):
    leaves, treedef = tu.tree_flatten(tree)
    out = list(leaves)
    for idx in _by_dtype(leaves):
        buf = fnp.concatenate([fnp.ravel(leaves[i]) for i in idx])
        buf = reduce(buf, axis_name)
        start = 0
        for i in idx:
            n = int(np.prod(np.shape(leaves[i]), dtype=np.int64))
            out[i] = fnp.reshape(buf[start:start + n], np.shape(leaves[i]))
            start += n
    return tu.tree_unflatten(treedef, out)


def broadcast(tree, root=0, group=None):
    """Rank `root`'s values of every leaf on every rank (one fused broadcast per dtype)."""
    g = group if group is not None else world()
    leaves, treedef = tu.tree_flatten(tree)
    if g.size == 1:
        return tree
    out = list(leaves)
    for idx in _by_dtype(leaves):
        xp = device_namespace([leaves[i] for i in idx])  # device leaves: a device buffer
        buf = g.bcast(xp.concatenate([xp.ravel(xp.asarray(leaves[i])) for i in idx]), root)
        start = 0
        for i in idx:
            n = int(np.prod(np.shape(leaves[i]), dtype=np.int64))
            out[i] = buf[start:start + n].reshape(np.shape(leaves[i]))
            start += n
    return tu.tree_unflatten(treedef, out)


def checksum(tree):
    """A CRC32 of the bytes of every leaf, in tree order: equal trees give equal checksums."""
    crc = 0
    for x in tu.tree_leaves(tree):
        x = x.get() if is_cupy(x) else np.asarray(x)
        crc = zlib.crc32(np.ascontiguousarray(x).tobytes(), crc)
    return crc


def check_identical(tree, group=None, what="parameters"):
    """Raise RuntimeError on every rank unless all ranks hold bit-identical `tree`s."""
    g = group if group is not None else world()
    sums = [int(s) for s in g.allgather(np.asarray(checksum(tree), np.int64))]
    if len(set(sums)) > 1:
        listing = ", ".join(f"rank {r}: {s:08x}" for r, s in enumerate(sums))
        raise RuntimeError(f"data parallel: the {what} differ across ranks ({listing}). Every "
                           "rank must start from the same values (fg.distributed.broadcast) and "
                           "apply the same averaged gradients.")


# ----------------------------------------------------------------------------------------------
# The train step


def _trainable(mask, params, who="make_train_step"):
    return [True] * len(tu.tree_leaves(params)) if mask is None else _masks.leaf_mask(
        mask, params, f"{who}(mask=...)")


def _frozen_view(leaves, trainable):
    """The tree the optimizer sees without sharding: frozen leaves become empty arrays."""
    return [x if on else fnp.zeros((0,) + tuple(np.shape(x))[1:], x.dtype)
            for x, on in zip(leaves, trainable)]


class TrainStep:
    """`step(params, opt_state, *batch) -> (params, opt_state, loss)`, made by make_train_step;
    `step.init(params)` makes this rank's optimizer state."""

    def __init__(self, loss_fn, optimizer, axis_name, group, jit, debug, shard, mask):
        if shard not in (None,) + _sharding.MODES:
            raise ValueError(f"make_train_step: shard must be None, 'optimizer' or "
                             f"'gradients', got {shard!r}")
        for name in ("init", "update"):
            if not callable(getattr(optimizer, name, None)):
                raise TypeError(f"make_train_step: optimizer must have init and update (an "
                                f"optim.GradientTransformation), got {type(optimizer).__name__}")
        self.loss_fn, self.optimizer, self.axis_name = loss_fn, optimizer, axis_name
        self.group, self.debug, self.shard, self.mask = group, debug, shard, mask
        run = self._sharded if shard else self._replicated
        self._run = _jit(run) if jit else run
        self.__name__ = f"train_step({getattr(loss_fn, '__name__', 'loss_fn')})"

    def _group(self):
        return self.group if self.group is not None else world()

    # -- state ------------------------------------------------------------------------------
    def init(self, params, master_dtype=None):
        """This rank's optimizer state for `params`.

        Without sharding: `optimizer.init(params)` (frozen leaves of `mask` as empty arrays).
        With sharding: a `ShardedState` holding the optimizer state of this rank's slices, and
        with `master_dtype` (e.g. np.float32) master copies of those slices, which the optimizer
        updates in place of the parameters (see funcgrad.distributed.sharding).
        """
        leaves, treedef = tu.tree_flatten(params)
        trainable = _trainable(self.mask, params)
        if not self.shard:
            if master_dtype is not None:
                raise ValueError("make_train_step: master_dtype needs shard='optimizer' or "
                                 "'gradients'")
            if self.mask is None:
                return self.optimizer.init(params)
            return self.optimizer.init(tu.tree_unflatten(treedef, _frozen_view(leaves,
                                                                               trainable)))
        g = self._group()
        layout = _sharding.build_layout(params, trainable, self.shard, g.rank, g.size)
        mdt = None if master_dtype is None else np.dtype(master_dtype).name
        layout = layout.replace(master_dtype=mdt)
        dtype_of = (lambda i: layout.dtypes[i]) if mdt is None else (lambda i: mdt)
        paths = [tuple(p) for p, _ in tu.tree_flatten_with_path(params)[0]]
        owners, axes = _sharding.classify_state(self.optimizer.init, layout, treedef, paths,
                                                dtype_of)
        layout = layout.replace(state_params=owners, state_axes=axes)
        frags = layout.fragments(leaves, dtype=mdt)
        master = None if mdt is None else tu.tree_unflatten(treedef, frags)
        with layout.slices_known(frags):
            inner = self.optimizer.init(tu.tree_unflatten(treedef, frags))
        return _sharding.ShardedState(inner, master, layout)

    # -- the step ---------------------------------------------------------------------------
    def _replicated(self, params, opt_state, *batch):
        mask = self.mask
        loss, grads = value_and_grad(self.loss_fn, wrt=mask)(params, *batch)
        if mask is None:
            grads = fused_pmean(grads, self.axis_name)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return (_optim.apply_updates(params, updates), opt_state,
                    _parallel.pmean(loss, self.axis_name))
        leaves, treedef = tu.tree_flatten(params)
        trainable = _trainable(mask, params)
        g = treedef.flatten_up_to(grads)
        on = [i for i, t in enumerate(trainable) if t]
        for i, x in zip(on, fused_pmean([g[i] for i in on], self.axis_name)):
            g[i] = x
        view = tu.tree_unflatten(treedef, _frozen_view(leaves, trainable))
        updates, opt_state = self.optimizer.update(
            tu.tree_unflatten(treedef, _frozen_view(g, trainable)), opt_state, view)
        new = treedef.flatten_up_to(_optim.apply_updates(view, updates))
        out = [n if t else x for x, n, t in zip(leaves, new, trainable)]
        return tu.tree_unflatten(treedef, out), opt_state, _parallel.pmean(loss, self.axis_name)

    def _sharded(self, params, state, *batch):
        """Up to this rank's new slices (the gather runs outside the compiled program)."""
        lay = state.layout
        leaves, treedef = tu.tree_flatten(params)
        loss, grads = value_and_grad(self.loss_fn, wrt=self.mask)(params, *batch)
        g = treedef.flatten_up_to(grads)
        if lay.mode == "optimizer":  # ZeRO-1: the whole summed gradient, one fused allreduce
            on = [i for i in range(len(leaves)) if lay.trainable(i)]
            for i, x in zip(on, _fused([g[i] for i in on], self.axis_name, _parallel.psum)):
                g[i] = x
            g_frag = [x / lay.size for x in lay.fragments(g)]  # divide 1/N of it, not all
        else:  # ZeRO-2: each rank receives the sum of its own slice only (reduce-scatter)
            g_frag = lay.fragments(g)  # the frozen leaves' empty slices; the rest replaced
            for group in lay.groups:
                block = _parallel.psum_scatter(lay.pack_all(group, g), self.axis_name,
                                               tiled=True)
                for i, x in lay.cut_mine(group, block / lay.size).items():
                    g_frag[i] = x
        if state.master is None:
            target = tu.tree_unflatten(treedef, lay.fragments(leaves))
        else:
            target = state.master
            g_frag = [fnp.asarray(x, lay.master_dtype) for x in g_frag]
        with lay.slices_known(treedef.flatten_up_to(target)):
            updates, inner = self.optimizer.update(tu.tree_unflatten(treedef, g_frag),
                                                   state.inner, target)
        new_target = _optim.apply_updates(target, updates)
        new_frag = treedef.flatten_up_to(new_target)
        blocks = [lay.pack_mine(group, new_frag, pad=False) for group in lay.groups]
        master = None if state.master is None else new_target
        return (blocks, _sharding.ShardedState(inner, master, lay),
                _parallel.pmean(loss, self.axis_name))

    def _gather(self, params, state, blocks, g):
        """The new parameters: every rank's new slices, gathered (one allgatherv per dtype) into
        one flat buffer per dtype, whose leaves are views of it (copies for leaves cut along
        another axis than the first)."""
        lay = state.layout
        leaves, treedef = tu.tree_flatten(params)
        out = list(leaves)
        for group, block in zip(lay.groups, blocks):
            counts = [sum(lay.fragment_size(i, r) for i in group[1]) for r in range(lay.size)]
            flat = g.allgatherv(block, counts)
            for i, x in lay.unpack_flat(group, flat).items():
                out[i] = x
        return tu.tree_unflatten(treedef, out)

    def _check_state(self, params, state, g):
        if not isinstance(state, _sharding.ShardedState):
            raise TypeError(f"make_train_step(shard={self.shard!r}): opt_state must come from "
                            f"step.init(params) (this rank's slice), got a "
                            f"{type(state).__name__}; optimizer.init(params) makes the whole "
                            "state, which only shard=None uses")
        lay = state.layout
        if lay.mode != self.shard:
            raise ValueError(f"make_train_step(shard={self.shard!r}): opt_state was made by a "
                             f"step with shard={lay.mode!r}")
        if (lay.size, lay.rank) != (g.size, g.rank):
            raise ValueError(f"make_train_step: opt_state holds the slice of rank {lay.rank} of "
                             f"{lay.size}, but this is rank {g.rank} of {g.size}; load it with "
                             "fg.distributed.load_checkpoint, which reshards")
        pairs = tu.tree_flatten_with_path(params)[0]
        got = tuple(tu.path_to_str(p) for p, _ in pairs)
        if got != lay.paths:
            missing = sorted(set(lay.paths) ^ set(got))
            raise ValueError("make_train_step: params do not have the structure opt_state was "
                             f"made for (step.init(params)); first differing path: "
                             f"{missing[0] if missing else got}")
        for (p, x), shape, dtype in zip(pairs, lay.shapes, lay.dtypes):
            if tuple(np.shape(x)) != shape or np.dtype(x.dtype).name != dtype:
                raise ValueError(f"make_train_step: params leaf {tu.path_to_str(p)!r} is "
                                 f"{np.dtype(x.dtype).name}{list(np.shape(x))}, but opt_state "
                                 f"was made for {dtype}{list(shape)}")

    def __call__(self, params, opt_state, *batch):
        g = self._group()
        if self.shard:
            self._check_state(params, opt_state, g)
        shards = _optim.SHARD_AXIS if self.shard else None  # (None binds nothing)
        with _parallel.process_axis(self.axis_name, g), _parallel.process_axis(shards, g):
            out, opt_state, loss = self._run(params, opt_state, *batch)
        params = self._gather(params, opt_state, out, g) if self.shard else out
        if self.debug:
            check_identical(params, g)
        return params, opt_state, loss

    def memory_report(self, params, opt_state):
        """Bytes per rank held by params, reduced gradients, optimizer state and master weights
        (a collective: call it on every rank); see `memory_report`."""
        return memory_report(params, opt_state, mask=self.mask, group=self.group)


def make_train_step(loss_fn, optimizer, axis_name="data", group=None, jit=True, debug=False, *,
                    shard=None, mask=None):
    """`step(params, opt_state, *batch) -> (params, opt_state, loss)` for data-parallel training,
    with `opt_state = step.init(params)`.

    Each rank differentiates `loss_fn(params, *batch)` on its shard of the batch; the loss
    returned is the mean over ranks. What happens next depends on `shard`:

    - None: the gradients are averaged with one fused allreduce (`fused_pmean`) and every rank
      applies the same update to its whole copy of the optimizer state.
    - "optimizer" (ZeRO stage 1): the same allreduce, then each rank updates only its 1/N slice
      of the parameters with the optimizer state of that slice, and the new slices are
      allgathered: optimizer state per rank falls to 1/N.
    - "gradients" (ZeRO stage 2): the gradient is reduce-scattered instead (one
      `lax.psum_scatter` of one flat buffer per dtype), so each rank receives only the averaged
      gradient of its slice; then the same update and allgather. Gradient memory after the
      reduction falls to 1/N too, and the traffic is that of one allreduce.

    Parameters stay whole and identical on every rank in all three modes. `mask` (a bool tree,
    prefix or callable, True = trainable) freezes the False leaves: they get no gradient, take no
    optimizer state and no buffer space, and never change. The optimizers of funcgrad.optim work
    sharded, `masked`, `multi_transform` and `MultiSteps` included (one reduce-scatter per
    accumulated step) and Adafactor's factored moments (row and column statistics: slices, or
    the same on every rank where they reduce along the cut); `step.init` refuses an optimizer
    whose state is none of these, naming the state leaf. `debug` checks after every
    step, with a checksum, that all ranks hold the same parameters. With `jit` the step is compiled
    with fg.jit (per rank: the slices of each rank have their own shapes).
    """
    return TrainStep(loss_fn, optimizer, axis_name, group, jit, debug, shard, mask)


def memory_report(params, opt_state, *, mask=None, group=None):
    """A `MemoryReport`: bytes held by each rank's parameters, averaged gradients, optimizer
    state and master weights, so you can see what sharding saved (gathered from every rank:
    call it on all of them). `mask` marks the trainable leaves of a replicated state."""
    g = group if group is not None else world()
    row = _sharding.local_memory(params, opt_state, _trainable(mask, params, "memory_report"))
    cols = ("params", "gradients", "optimizer", "master", "total")
    table = np.asarray(g.allgather(np.asarray([row[c] for c in cols], np.int64)))
    mode = opt_state.layout.mode if isinstance(opt_state, _sharding.ShardedState) else None
    return _sharding.MemoryReport(mode, [dict(zip(cols, map(int, r))) for r in table])
