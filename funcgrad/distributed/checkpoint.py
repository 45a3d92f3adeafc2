"""Sharded checkpoints: every rank writes its own slices; any number of ranks loads them.

    dist.save_checkpoint("run/ckpt", {"params": params, "opt_state": opt_state, "step": i})
    like = {"params": params, "opt_state": step.init(params), "step": 0}
    state = dist.load_checkpoint("run/ckpt", like)     # on 1, 2, 4, ... ranks

On disk, one folder per save, `ckpt-000007/` (numbered in order), holding

- `rank-00000-of-00004.safetensors`, ...: each rank's slices of every `ShardedState` in the tree
  (ZeRO optimizer states and master weights), written by that rank;
- `replicated.safetensors`: everything else (parameters, counters, plain optimizer states),
  written by rank 0;
- `manifest.safetensors`: written by rank 0 last, once every rank's file is on disk: the commit
  point. It holds, as JSON, the number of ranks, every file's size and the layout of every
  sharded state.

Every file is written by `fg.io.save` (a temporary file, fsync, atomic rename), and loads are
checked (`fg.io.load` verifies every tensor's checksum; file sizes are checked against the
manifest). A save killed before its manifest exists leaves an incomplete folder, which loads
ignore and the next save deletes: the previous checkpoint stays loadable until a newer one is
complete. After a commit, complete saves older than the newest `keep` are deleted (manifest
first, so a half-deleted folder never looks complete).

Loading reads the newest complete save and reshards (arrays come back as NumPy arrays, or on
the GPU where `like` has GPU arrays): each `ShardedState` of `like` (made by
`step.init(params)` on the loading ranks) is filled, slab by slab, from the saved slices that
overlap it, whatever the number of ranks that saved them; each rank reads only the files of
the saving ranks whose slices overlap its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np

from .. import io
from .. import tree_util as tu
from ..devices import device_put
from .groups import is_cupy, world
from .sharding import ShardedState

_FORMAT = "funcgrad.distributed.checkpoint.v1"
_FOLDER = re.compile(r"ckpt-(\d{6,})\Z")
_MANIFEST = "manifest.safetensors"
_REPLICATED = "replicated.safetensors"


def _rank_file(r, n):
    return f"rank-{r:05d}-of-{n:05d}.safetensors"


def _is_sharded(x):
    return isinstance(x, ShardedState)


def _nodes(tree):
    """[(path string, ShardedState)] of every sharded state in `tree`, in flatten order."""
    pairs, _ = tu.tree_flatten_with_path(tree, is_leaf=_is_sharded)
    return [(tu.path_to_str(p), x) for p, x in pairs if _is_sharded(x)]


def _replicated(tree):
    """`tree` with every ShardedState replaced by the list of its leaves every rank holds whole
    (None where the leaf is a slice): what rank 0 saves and every rank loads."""
    def rep(x):
        if not _is_sharded(x):
            return x
        return [leaf if owner < 0 else None
                for leaf, owner in zip(tu.tree_leaves(x.inner), x.layout.state_params)]
    return tu.tree_map(rep, tree, is_leaf=_is_sharded)


def _slices(node):
    """The arrays of one ShardedState that are slices: its per-parameter optimizer state leaves,
    then its master slices."""
    out = [leaf for leaf, owner in zip(tu.tree_leaves(node.inner), node.layout.state_params)
           if owner >= 0]
    if node.master is not None:
        out += tu.tree_leaves(node.master)
    return out


def _describe(node):
    lay = node.layout
    return {"mode": lay.mode, "master_dtype": lay.master_dtype, "paths": list(lay.paths),
            "shapes": [list(s) for s in lay.shapes], "dtypes": list(lay.dtypes),
            "axes": list(lay.axes), "bounds": [list(b) for b in lay.bounds],
            "state_params": list(lay.state_params), "state_axes": list(lay.state_axes),
            "state_dtypes": [np.dtype(x.dtype).name for x in _slices(node)]}


def _folders(directory):
    """[(number, path)] of the save folders in `directory`, newest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), os.path.join(directory, n)) for n in names
             if (m := _FOLDER.match(n)) and os.path.isdir(os.path.join(directory, n))]
    return sorted(found, reverse=True)


def latest_checkpoint(directory):
    """The folder of the newest complete save in `directory`, or None if there is none."""
    for _, folder in _folders(os.fspath(directory)):
        if os.path.exists(os.path.join(folder, _MANIFEST)):
            return folder
    return None


def _read_manifest(folder):
    path = os.path.join(folder, _MANIFEST)
    try:
        raw = io.load(path)
        manifest = json.loads(bytes(np.asarray(raw["json"], np.uint8)).decode())
        if manifest.get("format") != _FORMAT:
            raise KeyError("format")
        int(manifest["size"]), dict(manifest["files"]), dict(manifest["sharded"])
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        if isinstance(e, io.CheckpointError):
            raise
        raise io.CheckpointError(f"{path}: not a funcgrad.distributed checkpoint manifest "
                                 f"(damaged field: {e})") from None
    for name, size in manifest["files"].items():
        f = os.path.join(folder, name)
        try:
            got = os.path.getsize(f)
        except OSError:
            raise io.CheckpointError(f"{folder}: the manifest lists {name}, which is missing"
                                     ) from None
        if got != size:
            raise io.CheckpointError(f"{f}: {got} bytes on disk, {size} in the manifest "
                                     "(truncated or replaced?)")
    return manifest


def _remove(folder):
    try:
        os.unlink(os.path.join(folder, _MANIFEST))  # first: a half-deleted save is incomplete
    except OSError:
        pass
    shutil.rmtree(folder, ignore_errors=True)


def save_checkpoint(directory, state, group=None, keep=1):
    """Save `state` (any pytree; sharded optimizer states in it are saved slice by slice) into
    a new folder of `directory`; a collective: every rank of `group` calls it. Returns the
    folder. Keeps the newest `keep` complete saves and deletes older and incomplete ones."""
    g = group if group is not None else world()
    directory = os.fspath(directory)
    if int(keep) < 1:
        raise ValueError(f"save_checkpoint: keep must be at least 1, got {keep}")
    nodes = _nodes(state)
    for path, node in nodes:
        lay = node.layout
        if (lay.rank, lay.size) != (g.rank, g.size):
            raise ValueError(f"save_checkpoint: the sharded state at {path or '<root>'!r} holds "
                             f"the slice of rank {lay.rank} of {lay.size}, but this is rank "
                             f"{g.rank} of {g.size}")
    number = 0
    if g.rank == 0:
        os.makedirs(directory, exist_ok=True)
        number = 1 + max([n for n, _ in _folders(directory)], default=0)
        os.makedirs(os.path.join(directory, f"ckpt-{number:06d}"))
    number = int(g.bcast(np.asarray(number, np.int64)))  # also: the folder exists now
    folder = os.path.join(directory, f"ckpt-{number:06d}")

    mine = None
    if nodes:
        mine = _rank_file(g.rank, g.size)
        io.save(os.path.join(folder, mine), [x for _, node in nodes for x in _slices(node)])
    if g.rank == 0:
        io.save(os.path.join(folder, _REPLICATED), _replicated(state))
    size = os.path.getsize(os.path.join(folder, mine)) if mine else 0
    sizes = [int(s) for s in np.asarray(g.allgather(np.asarray(size, np.int64))).reshape(-1)]
    if g.rank == 0:  # every rank's file is on disk: commit
        files = {_REPLICATED: os.path.getsize(os.path.join(folder, _REPLICATED))}
        if nodes:
            files.update({_rank_file(r, g.size): s for r, s in enumerate(sizes)})
        manifest = {"format": _FORMAT, "size": g.size, "files": files,
                    "sharded": {path: _describe(node) for path, node in nodes}}
        text = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
        io.save(os.path.join(folder, _MANIFEST), {"json": text})
        complete = 0
        for n, old in _folders(directory):
            if n == number:
                continue
            if n < number and complete < keep - 1 and os.path.exists(
                    os.path.join(old, _MANIFEST)):
                complete += 1
                continue
            _remove(old)
    g.barrier()
    return folder


def _fill(path, node, saved, folder, read):
    """`node`'s slices (a ShardedState of the loading rank) from the saved slices."""
    lay = node.layout
    where = path or "<root>"
    for field in ("paths", "shapes", "dtypes", "state_params", "state_axes"):
        if field not in saved:  # saved before state_axes: slices were cut as their parameter
            saved[field] = [lay.axes[o] if o >= 0 else -1 for o in saved["state_params"]]
        have = [list(x) if isinstance(x, tuple) else x for x in getattr(lay, field)]
        if have != saved[field]:
            diff = next((i for i, (a, b) in enumerate(zip(have, saved[field])) if a != b),
                        min(len(have), len(saved[field])))
            raise io.CheckpointError(
                f"{folder}: the sharded state at {where!r} was saved for other parameters or "
                f"another optimizer: its {field} differ at entry {diff} (saved "
                f"{saved[field][diff] if diff < len(saved[field]) else 'nothing'}, expected "
                f"{have[diff] if diff < len(have) else 'nothing'})")
    if (lay.master_dtype is None) != (saved["master_dtype"] is None):
        raise io.CheckpointError(f"{folder}: the sharded state at {where!r} was saved "
                                 f"{'with' if saved['master_dtype'] else 'without'} master "
                                 "weights; make `like` with the same master_dtype")
    old_bounds, old_size = saved["bounds"], len(saved["bounds"][0]) - 1
    owners = [o for o in lay.state_params if o >= 0]
    cuts = [a for a, o in zip(lay.state_axes, lay.state_params) if o >= 0]
    if lay.master_dtype is not None:
        owners += list(range(len(lay.paths)))
        cuts += list(lay.axes)
    wanted = _slices(node)
    out = []
    for k, (i, a, want) in enumerate(zip(owners, cuts, wanted)):
        if saved["state_dtypes"][k] != np.dtype(want.dtype).name:
            raise io.CheckpointError(f"{folder}: slice {k} of {where!r} ({lay.paths[i]!r}) is "
                                     f"{saved['state_dtypes'][k]} in the checkpoint, "
                                     f"{np.dtype(want.dtype).name} in `like`")
        lo, hi = lay.bounds[i][lay.rank], lay.bounds[i][lay.rank + 1]
        if hi > lo and old_bounds[i][-1] == 0:
            raise io.CheckpointError(f"{folder}: {lay.paths[i]!r} was frozen when saved: the "
                                     f"checkpoint holds no optimizer state for it")
        parts = []
        for q in range(old_size):
            olo, ohi = old_bounds[i][q], old_bounds[i][q + 1]
            if max(lo, olo) < min(hi, ohi):
                piece = read(q)[saved["offset"] + k]
                parts.append(piece[(slice(None),) * a + (slice(max(lo, olo) - olo,
                                                                min(hi, ohi) - olo),)])
        if parts:
            x = np.concatenate(parts, axis=a)
        else:
            x = np.zeros(np.shape(want), want.dtype)
        if x.shape != tuple(np.shape(want)):
            raise io.CheckpointError(f"{folder}: slice {k} of {where!r} has shape {x.shape}, "
                                     f"expected {tuple(np.shape(want))}")
        out.append(x)
    return out


def load_checkpoint(directory, like, group=None):
    """The newest complete save of `directory` (or the save folder `directory` itself, such as
    `latest_checkpoint(d)`), as a tree of `like`'s structure, resharded for this rank.

    `like` holds this rank's templates (e.g. `step.init(params)` for a sharded optimizer state),
    which give the shapes and dtypes to fill and are checked against the saved ones. Every rank
    calls it (each reads what it needs); it works on any number of ranks."""
    g = group if group is not None else world()
    directory = os.fspath(directory)
    one = os.path.exists(os.path.join(directory, _MANIFEST))  # a save folder itself
    folder = directory if one else latest_checkpoint(directory)
    if folder is None:
        raise FileNotFoundError(f"load_checkpoint: no complete checkpoint in {directory!r} "
                                "(a folder ckpt-NNNNNN with a manifest.safetensors)")
    manifest = _read_manifest(folder)
    nodes = _nodes(like)
    saved = manifest["sharded"]
    if sorted(p for p, _ in nodes) != sorted(saved):
        raise io.CheckpointError(f"{folder}: sharded states are saved at {sorted(saved)}, but "
                                 f"`like` has them at {sorted(p for p, _ in nodes)}")
    for node_path, node in nodes:
        if (node.layout.rank, node.layout.size) != (g.rank, g.size):
            raise ValueError(f"load_checkpoint: `like` at {node_path or '<root>'!r} is the "
                             f"slice of rank {node.layout.rank} of {node.layout.size}, but this "
                             f"is rank {g.rank} of {g.size}: make it with step.init here")
    offset = 0
    for node_path in [p for p, _ in _nodes(like)]:
        saved[node_path]["offset"] = offset
        offset += len(saved[node_path]["state_dtypes"])
    files = {}

    def read(q):
        if q not in files:
            name = _rank_file(q, manifest["size"])
            files[q] = io.load(os.path.join(folder, name))
            if not isinstance(files[q], list) or len(files[q]) != offset:
                raise io.CheckpointError(f"{folder}/{name}: holds {len(files[q])} slices, the "
                                         f"manifest {offset}")
        return files[q]

    filled = {p: iter(_fill(p, node, saved[p], folder, read)) for p, node in nodes}
    rep = io.load(os.path.join(folder, _REPLICATED), like=_replicated(like))
    stream = iter(tu.tree_leaves(rep))
    pairs, treedef = tu.tree_flatten_with_path(like, is_leaf=_is_sharded)
    out = []
    for p, x in pairs:
        if not _is_sharded(x):
            out.append(next(stream))
            continue
        mine = filled[tu.path_to_str(p)]
        inner_leaves, inner_tree = tu.tree_flatten(x.inner)
        inner = [next(mine) if owner >= 0 else next(stream)
                 for _, owner in zip(inner_leaves, x.layout.state_params)]
        master = x.master
        if master is not None:
            m_leaves, m_tree = tu.tree_flatten(master)
            master = tu.tree_unflatten(m_tree, [next(mine) for _ in m_leaves])
        out.append(ShardedState(tu.tree_unflatten(inner_tree, inner), master, x.layout))
    return tu.tree_map(_placed_like, like, tu.tree_unflatten(treedef, out))


def _placed_like(template, x):
    """`x` on the device of `template` (a GPU array there: loaded onto the GPU)."""
    if is_cupy(template) and not is_cupy(x):
        return device_put(x, "gpu")
    return x
