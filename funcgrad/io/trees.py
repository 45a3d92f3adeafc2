"""Trees <-> JSON: the description of a pytree that a checkpoint keeps in its metadata (dicts,
lists, tuples, None, holes left by a mask, registered node types with their aux data), each leaf
named by its `/`-joined path, and the decoder that rebuilds the tree from it, turning every
malformed field into a `CheckpointError` that names the file, the tree path and the field.
"""

from __future__ import annotations

import numpy as np

from .. import tree_util as tu
from .registry import registered, registered_name
from .safetensors_format import CheckpointError, host_array, is_int
from .static_values import decode_static, encode_static


def encode_tree(x, path, off, tensors, strict):
    """JSON description of `x`; fills `tensors` with its leaves, named by path, except the paths
    in `off` (masked out: recorded as holes). With `strict`, every node type must be
    registered (the file must describe itself)."""
    where = "/".join(path)
    if x is None:
        return {"t": "none"}
    t = type(x)
    if t is dict:
        keys = list(x)
        bad = [k for k in keys if not isinstance(k, (str, int)) or isinstance(k, bool)]
        if bad:
            raise TypeError(f"io.save: dict at {where or '<root>'!r} has key {bad[0]!r}; only str "
                            "and int keys can be saved")
        return {"t": "dict", "k": [["i" if isinstance(k, int) else "s", k] for k in keys],
                "c": [encode_tree(x[k], path + [str(k)], off, tensors, strict) for k in keys]}
    if t is list or t is tuple:
        return {"t": t.__name__,
                "c": [encode_tree(c, path + [str(i)], off, tensors, strict)
                      for i, c in enumerate(x)]}
    pairs, treedef = tu.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
    if not (len(pairs) == 1 and pairs[0][0] == () and pairs[0][1] is x):   # a container node
        keys = [tu.path_to_str(p) for p, _ in pairs]
        node = {"t": "node", "type": t.__qualname__, "k": keys,
                "c": [encode_tree(c, path + [k], off, tensors, strict)
                      for k, (_, c) in zip(keys, pairs)]}
        name = registered_name(t)
        if name is not None:
            node["name"] = name
            node["aux"] = encode_static(treedef.node_data()[1], f"the aux data of the "
                                        f"{t.__qualname__} at {where or '<root>'!r}")
        elif strict:
            raise TypeError(f"io.save_train_state: the {t.__qualname__} at {where or '<root>'!r} "
                            "is not a registered type, so the file could not rebuild it: call "
                            f"io.register_type({t.__qualname__}) where the class is defined")
        return node
    if where in off:
        return {"t": "hole"}
    if where in tensors:
        raise ValueError(f"io.save: two leaves have the path {where!r} (a dict key containing "
                         "'/'?); paths must be unique")
    a = tensors[where] = host_array(x, where)
    node = {"t": "leaf", "n": where, "dtype": a.dtype.name, "shape": list(a.shape)}
    if t in (bool, int, float, complex):
        node["py"] = t.__name__
    elif isinstance(x, np.generic):
        node["py"] = "numpy"                    # a NumPy scalar comes back as one
    return node


_PY = {"bool": bool, "int": int, "float": float, "complex": complex, "numpy": lambda a: a[()]}


class TreeDecoder:
    """Rebuilds a tree from its JSON description, turning every malformed field into a
    CheckpointError that names the file, the tree path and the field."""

    def __init__(self, fname, tensors, rebuild_nodes=True):
        self.fname, self.tensors, self.used = fname, tensors, set()
        self.rebuild_nodes = rebuild_nodes   # False: only check (the caller fills `like=`)

    def fail(self, where, msg):
        raise CheckpointError(f"{self.fname}: damaged funcgrad metadata at tree path "
                              f"{where or '<root>'!r}: {msg}")

    def field(self, node, key, typ, where):
        v = node.get(key)
        if not isinstance(v, typ):
            self.fail(where, f"field {key!r} is {v!r:.80}, expected a {typ.__name__}")
        return v

    def children(self, node, where, n=None):
        c = self.field(node, "c", list, where)
        if n is not None and len(c) != n:
            self.fail(where, f"{n} keys but {len(c)} children")
        return c

    def decode(self, node, where=""):
        if not isinstance(node, dict):
            self.fail(where, f"a tree node is {node!r:.80}, expected a JSON object")
        t = self.field(node, "t", str, where)
        if t in ("none", "hole"):
            return None
        if t == "leaf":
            return self.leaf(node, where)
        sub = lambda k: f"{where}/{k}".lstrip("/")
        if t == "dict":
            keys = self.field(node, "k", list, where)
            for k in keys:
                if not (isinstance(k, list) and len(k) == 2 and
                        ((k[0] == "s" and type(k[1]) is str) or (k[0] == "i" and is_int(k[1])))):
                    self.fail(where, f"dict key entry {k!r:.80} is not ['s', str] or ['i', int]")
            if len({k[1] for k in keys}) != len(keys):
                self.fail(where, "duplicate dict keys")
            kids = self.children(node, where, len(keys))
            return {k: self.decode(c, sub(k)) for (_, k), c in zip(keys, kids)}
        if t in ("list", "tuple"):
            out = [self.decode(c, sub(i)) for i, c in enumerate(self.children(node, where))]
            return out if t == "list" else tuple(out)
        if t == "node":
            return self.node(node, where, sub)
        self.fail(where, f"unknown node kind {t!r:.40}")

    def leaf(self, node, where):
        name = self.field(node, "n", str, where)
        if name not in self.tensors:
            self.fail(where, f"the tensor {name!r} it names is not in the file")
        if name in self.used:
            self.fail(where, f"the tensor {name!r} is named by two leaves")
        self.used.add(name)
        a = self.tensors[name]
        if "dtype" in node or "shape" in node:          # v2 records (v1 files have none)
            dtype = self.field(node, "dtype", str, where)
            shape = self.field(node, "shape", list, where)
            if dtype != a.dtype.name:
                raise CheckpointError(
                    f"{self.fname}: tensor {name!r} is {a.dtype.name} in the safetensors "
                    f"header but was saved as {dtype} (the header was altered or damaged)")
            if tuple(shape) != a.shape:
                raise CheckpointError(
                    f"{self.fname}: tensor {name!r} has shape {a.shape} in the safetensors "
                    f"header but was saved with shape {tuple(shape)} (the header was altered)")
        py = node.get("py")
        if py is None:
            return a
        if py not in _PY or a.shape != ():
            self.fail(where, f"field 'py' is {py!r:.40} for a tensor of shape {a.shape}")
        return _PY[py](a)

    def node(self, node, where, sub):
        keys = self.field(node, "k", list, where)
        kids = self.children(node, where, len(keys))
        if not all(type(k) is str for k in keys):
            self.fail(where, "node keys must be strings")
        if not self.rebuild_nodes:
            return [self.decode(c, sub(k)) for k, c in zip(keys, kids)]
        name = node.get("name")
        if name is None:
            tname = node.get("type", "node")
            raise CheckpointError(f"{self.fname}: the tree holds a {tname} at "
                                  f"{where or '<root>'!r}, which is not a registered type, so it "
                                  "is rebuilt only from a template: call io.load(path, "
                                  "like=tree_of_that_structure)")
        if not isinstance(name, str):
            self.fail(where, f"field 'name' is {name!r:.80}, expected str")
        cls = registered(name, self.fname)
        fail = lambda msg: self.fail(where, f"{name}: {msg}")
        aux = decode_static(node.get("aux"), fail, self.fname)
        values = [self.decode(c, sub(k)) for k, c in zip(keys, kids)]
        leaf = tu.tree_structure(0)
        try:
            treedef = tu.PyTreeDef.make_from_node_data_and_children((cls, aux), [leaf] * len(kids))
            obj = treedef.unflatten(values)
            pairs, again = tu.tree_flatten_with_path(obj, is_leaf=lambda y: y is not obj)
            got = [tu.path_to_str(p) for p, _ in pairs]
            same_aux = again.node_data() == (cls, aux)
        except CheckpointError:
            raise
        except Exception as e:
            fail(f"rebuilding it from the stored aux data and {len(kids)} children raised "
                 f"{type(e).__name__}: {e}")
        if got != keys:
            fail(f"the file's node has children {keys}, the registered class gives {got}")
        if not same_aux:
            fail(f"the stored aux data {aux!r:.80} does not survive a rebuild (the registered "
                 "class changed?)")
        return obj
