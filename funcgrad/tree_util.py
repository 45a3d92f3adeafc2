"""Pytrees: nested containers of leaves, flattened to a leaf list plus a hashable structure.

Same semantics as `jax.tree_util`. Containers are tuple, list, dict (keys sorted, or insertion
order when they do not sort), None (a node with no children, not a leaf), namedtuple,
`collections.OrderedDict` (insertion order), `collections.defaultdict`, and classes registered
with `register_pytree_node` / `register_pytree_with_keys` / `register_dataclass`. Anything else is
a leaf. Transforms flatten their arguments on every call, so the hot paths (`tree_flatten`,
`tree_unflatten`, `tree_leaves`, `tree_map`) special-case the builtin containers.

A structure is stored as nested tuples `(entry, aux, children)` with `None` for a leaf, which
makes equality and hashing of `PyTreeDef` plain tuple operations.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable, Iterable

__all__ = [
    "PyTreeDef", "DictKey", "SequenceKey", "GetAttrKey", "FlattenedIndexKey",
    "tree_flatten", "tree_unflatten", "tree_leaves", "tree_structure", "tree_map",
    "tree_flatten_with_path", "tree_leaves_with_path", "tree_map_with_path", "tree_reduce",
    "tree_all", "tree_transpose", "tree_broadcast_prefix", "register_pytree_node",
    "register_pytree_with_keys", "register_dataclass", "keystr", "path_to_str", "all_leaves",
    "treedef_is_leaf", "treedef_is_strict_leaf", "treedef_children", "treedef_tuple",
]


# ----------------------------------------------------------------------------------------------
# Key path entries


class _PathEntry:
    """One step of a key path. A subclass names its one field in `__slots__` and says how `str`
    shows it; equality, hashing and repr come from here (JAX's are dataclasses alike)."""

    __slots__ = ()

    def __init__(self, value):
        setattr(self, self.__slots__[0], value)

    def _value(self):
        return getattr(self, self.__slots__[0])

    def __repr__(self):
        return f"{type(self).__name__}({self.__slots__[0]}={self._value()!r})"

    def __eq__(self, other):
        return type(other) is type(self) and self._value() == other._value()

    def __hash__(self):
        return hash((type(self), self._value()))


class DictKey(_PathEntry):
    """Path entry for a mapping child: `str` gives `['w']`."""

    __slots__ = ("key",)

    def __str__(self):
        return f"[{self.key!r}]"


class SequenceKey(_PathEntry):
    """Path entry for a tuple/list child: `str` gives `[1]`."""

    __slots__ = ("idx",)

    def __str__(self):
        return f"[{self.idx}]"


class GetAttrKey(_PathEntry):
    """Path entry for an attribute child (namedtuple field, dataclass field): `str` gives `.x`."""

    __slots__ = ("name",)

    def __str__(self):
        return f".{self.name}"


class FlattenedIndexKey(_PathEntry):
    """Path entry for a child of a class registered without keys: `[<flat index 0>]`."""

    __slots__ = ("key",)

    @property
    def idx(self) -> int:
        return self.key

    def __str__(self):
        return f"[<flat index {self.key}>]"


def keystr(path, *, simple: bool = False, separator: str = "") -> str:
    """Readable path, e.g. `['blocks'][1]['w']` (or `blocks/1/w` with simple=True, sep '/')."""
    if simple:
        return separator.join(_simple_key(k) for k in path)
    return separator.join(str(k) for k in path)


def path_to_str(path, sep: str = "/") -> str:
    """Plain path like `blocks/1/w`: dict keys, indices and attribute names joined by `sep`."""
    return sep.join(_simple_key(k) for k in path)


def _simple_key(k) -> str:
    t = type(k)
    if t is DictKey:
        return str(k.key)
    if t is SequenceKey:
        return str(k.idx)
    if t is GetAttrKey:
        return k.name
    if t is FlattenedIndexKey:
        return str(k.key)
    return str(k)


# ----------------------------------------------------------------------------------------------
# Node registry

_NONE, _SEQ, _DICT, _NT, _CUSTOM = "none", "seq", "dict", "namedtuple", "custom"


class _Entry:
    """How one node type splits into (children, aux) and is rebuilt; compared by identity."""

    __slots__ = ("type", "kind", "flatten", "unflatten", "flatten_with_keys", "dict_keys",
                 "name")

    def __init__(self, type_, kind, flatten, unflatten, flatten_with_keys, dict_keys=None):
        self.type = type_
        self.kind = kind
        self.flatten = flatten                      # x -> (children, aux)
        self.unflatten = unflatten                  # (aux, children list) -> x
        self.flatten_with_keys = flatten_with_keys  # x -> ([(key, child)], aux)
        self.dict_keys = dict_keys                  # aux -> key tuple, for mapping kinds
        self.name = type_.__name__

    def __repr__(self):
        return f"<pytree node type {self.name}>"


def _sorted_keys(d) -> tuple:
    try:
        return tuple(sorted(d))
    except TypeError:  # keys that do not order among themselves: keep insertion order
        return tuple(d)


def _keyed(keys, children, key_cls):
    return [(key_cls(k), c) for k, c in zip(keys, children)]


def _seq_fwk(x):
    return [(SequenceKey(i), c) for i, c in enumerate(x)], None


def _dict_flatten(d):
    keys = _sorted_keys(d)
    return [d[k] for k in keys], keys


def _odict_flatten(d):
    keys = tuple(d)
    return [d[k] for k in keys], keys


def _ddict_flatten(d):
    keys = _sorted_keys(d)
    return [d[k] for k in keys], (d.default_factory, keys)


def _with_dict_keys(flatten, keys_of):
    def fwk(d):
        children, aux = flatten(d)
        return _keyed(keys_of(aux), children, DictKey), aux
    return fwk


def _ident(aux):
    return aux


def _second(aux):
    return aux[1]


_TUPLE = _Entry(tuple, _SEQ, lambda x: (x, None), lambda aux, ch: tuple(ch), _seq_fwk)
_LIST = _Entry(list, _SEQ, lambda x: (x, None), lambda aux, ch: list(ch), _seq_fwk)
_DICT_E = _Entry(dict, _DICT, _dict_flatten, lambda aux, ch: dict(zip(aux, ch)),
                 _with_dict_keys(_dict_flatten, _ident), _ident)
_NONE_E = _Entry(type(None), _NONE, lambda x: ((), None), lambda aux, ch: None,
                 lambda x: ([], None))
_ODICT = _Entry(collections.OrderedDict, _DICT, _odict_flatten,
                lambda aux, ch: collections.OrderedDict(zip(aux, ch)),
                _with_dict_keys(_odict_flatten, _ident), _ident)
_DDICT = _Entry(collections.defaultdict, _DICT, _ddict_flatten,
                lambda aux, ch: collections.defaultdict(aux[0], zip(aux[1], ch)),
                _with_dict_keys(_ddict_flatten, _second), _second)
_NONE_NODE = (_NONE_E, None, ())

_registry: dict[type, _Entry] = {e.type: e for e in (_TUPLE, _LIST, _DICT_E, _NONE_E, _ODICT,
                                                     _DDICT)}
_namedtuples: dict[type, _Entry] = {}


def _namedtuple_entry(t):
    """Entry for a namedtuple class (made once per class), or None when `t` is not one."""
    e = _namedtuples.get(t)
    if e is None and issubclass(t, tuple) and hasattr(t, "_fields"):
        fields = t._fields
        e = _Entry(t, _NT, lambda x: (x, None), lambda aux, ch: t(*ch),
                   lambda x: ([(GetAttrKey(f), c) for f, c in zip(fields, x)], None))
        _namedtuples[t] = e
    return e


def _entry_for(t):
    e = _registry.get(t)
    return e if e is not None else _namedtuple_entry(t)


def _register(nodetype, entry):
    if not isinstance(nodetype, type):
        raise TypeError(f"pytree node types must be classes, got {nodetype!r}")
    if nodetype in _registry:
        raise ValueError(f"duplicate pytree node registration for {nodetype.__name__}")
    _registry[nodetype] = entry
    _namedtuples.pop(nodetype, None)
    _leaf_types.clear()


def register_pytree_node(nodetype, flatten_func, unflatten_func, flatten_with_keys_func=None):
    """Make `nodetype` a container: `flatten_func(x) -> (children, aux_data)` and
    `unflatten_func(aux_data, children) -> x`. aux_data is static: it is part of the treedef, so
    it must be hashable and comparable. Children get `FlattenedIndexKey` paths unless
    `flatten_with_keys_func(x) -> ([(key, child), ...], aux_data)` is given."""
    if flatten_with_keys_func is None:
        def flatten_with_keys_func(x):
            children, aux = flatten_func(x)
            return [(FlattenedIndexKey(i), c) for i, c in enumerate(children)], aux
    _register(nodetype, _Entry(nodetype, _CUSTOM, flatten_func,
                               lambda aux, ch: unflatten_func(aux, tuple(ch)),
                               flatten_with_keys_func))
    return nodetype


def register_pytree_with_keys(nodetype, flatten_with_keys, unflatten_func, flatten_func=None):
    """Like `register_pytree_node`, with `flatten_with_keys(x) -> ([(key, child)], aux)` giving
    the path entry of each child (e.g. `GetAttrKey('w')`)."""
    if flatten_func is None:
        def flatten_func(x):
            keyed, aux = flatten_with_keys(x)
            return [c for _, c in keyed], aux
    return register_pytree_node(nodetype, flatten_func, unflatten_func, flatten_with_keys)


def register_dataclass(nodetype=None, data_fields=None, meta_fields=None):
    """Register a (data)class as a container; usable as `@register_dataclass` too.

    data_fields are children (leaves/subtrees); meta_fields are static aux data, part of the
    treedef (hashable). With neither given, every dataclass field is a data field except those
    declared with `field(metadata={'static': True})`; with one given, the other is the rest.
    Unflattening sets the attributes directly instead of calling `__init__`, so validation in
    `__init__`/`__post_init__` does not run on tracers or placeholder leaves.
    """
    if nodetype is None:
        return lambda cls: register_dataclass(cls, data_fields, meta_fields)
    if data_fields is None or meta_fields is None:
        if not (isinstance(nodetype, type) and dataclasses.is_dataclass(nodetype)):
            raise TypeError(f"register_dataclass: {nodetype!r} is not a dataclass; pass both "
                            "data_fields and meta_fields for other classes")
        fields = [f.name for f in dataclasses.fields(nodetype)]
        if data_fields is None and meta_fields is None:
            static = {f.name for f in dataclasses.fields(nodetype) if f.metadata.get("static")}
            meta_fields = [n for n in fields if n in static]
            data_fields = [n for n in fields if n not in static]
        elif data_fields is None:
            data_fields = [n for n in fields if n not in set(meta_fields)]
        else:
            meta_fields = [n for n in fields if n not in set(data_fields)]
    data, meta = tuple(data_fields), tuple(meta_fields)
    both = set(data) & set(meta)
    if both:
        raise ValueError(f"register_dataclass: fields {sorted(both)} are both data and meta")
    keys = tuple(GetAttrKey(n) for n in data)
    new, setattr_ = object.__new__, object.__setattr__

    def flatten(x):
        return [getattr(x, n) for n in data], tuple([getattr(x, n) for n in meta])

    def flatten_with_keys(x):
        return list(zip(keys, [getattr(x, n) for n in data])), tuple([getattr(x, n)
                                                                       for n in meta])

    def unflatten(aux, children):
        obj = new(nodetype)
        for n, v in zip(data, children):
            setattr_(obj, n, v)
        for n, v in zip(meta, aux):
            setattr_(obj, n, v)
        return obj

    _register(nodetype, _Entry(nodetype, _CUSTOM, flatten, unflatten, flatten_with_keys))
    return nodetype


# ----------------------------------------------------------------------------------------------
# Flatten / unflatten


# Types seen to be leaves (not registered, not namedtuples); emptied by every registration so
# that it never outlives the registry it was computed from. Bounded against class factories.
_leaf_types: set[type] = {int, float, complex, bool, str, bytes}
_MAX_LEAF_TYPES = 4096


def _note_leaf_type(t):
    if len(_leaf_types) < _MAX_LEAF_TYPES:
        _leaf_types.add(t)


def _kids(children, leaves) -> tuple:
    """Structure nodes of `children`, with leaves of known leaf types handled inline."""
    nodes = []
    for c in children:
        if type(c) in _leaf_types:
            leaves.append(c)
            nodes.append(None)
        else:
            nodes.append(_flatten_fast(c, leaves))
    return tuple(nodes)


def _flatten_fast(x, leaves):
    """`_flatten` without is_leaf (the common case)."""
    t = type(x)
    if t in _leaf_types:
        leaves.append(x)
        return None
    if t is dict:
        try:
            keys = tuple(sorted(x))
        except TypeError:  # keys that do not order among themselves: keep insertion order
            keys = tuple(x)
        return (_DICT_E, keys, _kids([x[k] for k in keys], leaves))
    if t is tuple:
        return (_TUPLE, None, _kids(x, leaves))
    if t is list:
        return (_LIST, None, _kids(x, leaves))
    if x is None:
        return _NONE_NODE
    e = _registry.get(t)
    if e is None:
        e = _namedtuple_entry(t)
        if e is None:
            _note_leaf_type(t)
            leaves.append(x)
            return None
    children, aux = e.flatten(x)
    return (e, aux, _kids(children, leaves))


def _flatten(x, leaves, is_leaf):
    """Append the leaves of `x` to `leaves`; return its structure node (None for a leaf)."""
    if is_leaf is None:
        return _flatten_fast(x, leaves)
    if is_leaf(x):
        leaves.append(x)
        return None
    t = type(x)
    if t in _leaf_types:
        leaves.append(x)
        return None
    if t is tuple:
        return (_TUPLE, None, tuple([_flatten(c, leaves, is_leaf) for c in x]))
    if t is list:
        return (_LIST, None, tuple([_flatten(c, leaves, is_leaf) for c in x]))
    if t is dict:
        keys = _sorted_keys(x)
        return (_DICT_E, keys, tuple([_flatten(x[k], leaves, is_leaf) for k in keys]))
    if x is None:
        return _NONE_NODE
    e = _registry.get(t)
    if e is None:
        e = _namedtuple_entry(t)
        if e is None:
            _note_leaf_type(t)
            leaves.append(x)
            return None
    children, aux = e.flatten(x)
    return (e, aux, tuple([_flatten(c, leaves, is_leaf) for c in children]))


def _flatten_with_path(x, path, out, is_leaf):
    """Like `_flatten`, appending `(path, leaf)` pairs."""
    if is_leaf is not None and is_leaf(x):
        out.append((path, x))
        return None
    t = type(x)
    if t in _leaf_types:
        out.append((path, x))
        return None
    if t is tuple or t is list:
        return (_TUPLE if t is tuple else _LIST, None,
                tuple([_flatten_with_path(c, path + (SequenceKey(i),), out, is_leaf)
                       for i, c in enumerate(x)]))
    if t is dict:
        keys = _sorted_keys(x)
        return (_DICT_E, keys, tuple([_flatten_with_path(x[k], path + (DictKey(k),), out,
                                                         is_leaf) for k in keys]))
    if x is None:
        return _NONE_NODE
    e = _entry_for(t)
    if e is None:
        _note_leaf_type(t)
        out.append((path, x))
        return None
    keyed, aux = e.flatten_with_keys(x)
    return (e, aux, tuple([_flatten_with_path(c, path + (k,), out, is_leaf) for k, c in keyed]))


def _unflatten(node, it):
    entry, aux, children = node
    return entry.unflatten(aux, [next(it) if c is None else _unflatten(c, it)
                                 for c in children])


def _count(node):
    if node is None:
        return 1, 1
    leaves, nodes = 0, 1
    for c in node[2]:
        l, n = _count(c)
        leaves += l
        nodes += n
    return leaves, nodes


class PyTreeDef:
    """The structure of a pytree (containers and static aux data, not the leaves).

    Hashable and comparable, so it can key caches; `unflatten(leaves)` rebuilds a tree.
    """

    __slots__ = ("_node", "_num_leaves", "_hash")

    def __init__(self, node, num_leaves=None):
        self._node = node
        self._num_leaves = num_leaves
        self._hash = None

    @property
    def num_leaves(self) -> int:
        if self._num_leaves is None:
            self._num_leaves = _count(self._node)[0]
        return self._num_leaves

    @property
    def num_nodes(self) -> int:
        """Containers plus leaves (a None node counts as one)."""
        return _count(self._node)[1]

    def unflatten(self, leaves: Iterable) -> Any:
        return tree_unflatten(self, leaves)

    def flattener(self) -> Callable[[Any], list | None]:
        """A function `tree -> leaves` for trees of exactly this structure, generated once, or
        None for a structure it cannot check fast (registered node types other than tuples,
        lists, dicts and namedtuples). The function returns None for any tree of another
        structure (the caller then flattens the general way, `tree_flatten`)."""
        names = {"_leaf": _leaf_types}
        lines, leaves = [], []
        temps = iter(range(1 << 62))

        def build(node, var):
            if node is None:
                leaves.append(var)
                lines.append(f"    if type({var}) not in _leaf: return None")
                return True
            entry, aux, children = node
            if node is _NONE_NODE:
                lines.append(f"    if {var} is not None: return None")
                return True
            if entry is _TUPLE or entry is _LIST:
                t = "tuple" if entry is _TUPLE else "list"
                lines.append(f"    if type({var}) is not {t} or len({var}) != {len(children)}:"
                             " return None")
                keys = range(len(children))
            elif entry is _DICT_E:
                lines.append(f"    if type({var}) is not dict or len({var}) != {len(children)}:"
                             " return None")
                keys = []
                for k in aux:
                    names[f"k{len(names)}"] = k
                    keys.append(f"k{len(names) - 1}")
            elif entry.kind is _NT:
                names[f"nt{len(names)}"] = entry.type
                lines.append(f"    if type({var}) is not nt{len(names) - 1}: return None")
                keys = range(len(children))
            else:
                return False
            for k, c in zip(keys, children):
                v = f"t{next(temps)}"
                lines.append(f"    {v} = {var}[{k}]")
                if not build(c, v):
                    return False
            return True

        if not build(self._node, "tree"):
            return None
        body = "\n".join(["    try:"] + ["    " + line for line in lines]
                         + [f"        return [{', '.join(leaves)}]", "    except KeyError:",
                            "        return None"])
        exec(compile(f"def flatten(tree):\n{body}\n", "<funcgrad-flatten>", "exec"), names)
        return names["flatten"]

    def unflattener(self) -> Callable[[list], Any]:
        """A function `leaves -> tree` for this structure, generated once: faster than
        `unflatten` for a structure rebuilt on every call (jit's outputs). It trusts its input
        (exactly num_leaves leaves, in a list or tuple)."""
        names = {}
        counter = iter(range(1 << 62))

        def name(obj):
            key = f"o{len(names)}"
            names[key] = obj
            return key

        def build(node):
            if node is None:
                return f"l[{next(counter)}]"
            entry, aux, children = node
            kids = [build(c) for c in children]
            if entry is _TUPLE:
                return "(" + "".join(k + ", " for k in kids) + ")"
            if entry is _LIST:
                return "[" + ", ".join(kids) + "]"
            if entry is _DICT_E:
                return "{" + ", ".join(f"{name(k)}: {v}" for k, v in zip(aux, kids)) + "}"
            return f"{name(entry.unflatten)}({name(aux)}, [{', '.join(kids)}])"

        source = f"def unflatten(l):\n    return {build(self._node)}\n"
        exec(compile(source, "<funcgrad-unflatten>", "exec"), names)
        return names["unflatten"]

    def flatten_up_to(self, tree) -> list:
        """The subtrees of `tree` at this structure's leaf positions (ValueError on mismatch)."""
        try:
            return _up_to_list(self._node, tree)
        except _Mismatch as m:
            raise ValueError(f"flatten_up_to: tree structure mismatch {m.where()}: {m.a} vs "
                             f"{m.b}") from None

    def children(self) -> list[PyTreeDef]:
        """Structures of the direct children ([] for a leaf)."""
        return [] if self._node is None else [PyTreeDef(c) for c in self._node[2]]

    def node_data(self):
        """`(node type, aux data)` of the root, or None for a leaf."""
        return None if self._node is None else (self._node[0].type, self._node[1])

    @staticmethod
    def make_from_node_data_and_children(node_data, children) -> PyTreeDef:
        """The structure whose root is `node_data = (node type, aux data)` (as `node_data()`
        returns it) over the child structures `children`. JAX's method of this name also takes
        a registry; funcgrad has one registry."""
        t, aux = node_data
        e = _entry_for(t)
        if e is None:
            raise ValueError(f"{getattr(t, '__name__', t)!r} is not a registered pytree node type")
        children = tuple(children)
        return PyTreeDef((e, aux, tuple(c._node for c in children)),
                         sum(c.num_leaves for c in children))

    def __eq__(self, other):
        return isinstance(other, PyTreeDef) and self._node == other._node

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        if self._hash is None:
            self._hash = hash(self._node)
        return self._hash

    def __repr__(self):
        return f"PyTreeDef({_repr_node(self._node)})"


def _repr_node(node) -> str:
    if node is None:
        return "*"
    e, aux, children = node
    parts = [_repr_node(c) for c in children]
    k = e.kind
    if k is _NONE:
        return "None"
    if e is _TUPLE:
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    if e is _LIST:
        return "[" + ", ".join(parts) + "]"
    if k is _DICT:
        body = "{" + ", ".join(f"{key!r}: {p}" for key, p in zip(e.dict_keys(aux), parts)) + "}"
        if e is _DICT_E:
            return body
        if e is _DDICT:
            factory = getattr(aux[0], "__name__", repr(aux[0]))
            return f"defaultdict({factory}, {body})"
        return f"{e.name}({body})"
    if k is _NT:
        return f"{e.name}(" + ", ".join(f"{f}={p}" for f, p in zip(e.type._fields, parts)) + ")"
    return f"CustomNode({e.name}[{aux!r}], [{', '.join(parts)}])"


def tree_flatten(tree, is_leaf: Callable[[Any], bool] | None = None):
    """`(leaves, treedef)`: leaves in a fixed order (dict keys sorted) and the structure."""
    leaves = []
    node = _flatten(tree, leaves, is_leaf)
    return leaves, PyTreeDef(node, len(leaves))


def tree_unflatten(treedef: PyTreeDef, leaves: Iterable):
    """Rebuild a tree of `treedef`'s structure from `leaves` (exactly num_leaves of them)."""
    if not isinstance(leaves, (list, tuple)):
        leaves = list(leaves)
    n = treedef.num_leaves
    if len(leaves) != n:
        raise ValueError(f"tree_unflatten: {treedef} expects {n} leaves, got {len(leaves)}")
    node = treedef._node
    if node is None:
        return leaves[0]
    return _unflatten(node, iter(leaves))


def tree_leaves(tree, is_leaf: Callable[[Any], bool] | None = None) -> list:
    """The leaves of `tree`, in flatten order."""
    leaves = []
    _flatten(tree, leaves, is_leaf)
    return leaves


def tree_structure(tree, is_leaf: Callable[[Any], bool] | None = None) -> PyTreeDef:
    """The `PyTreeDef` of `tree`."""
    return tree_flatten(tree, is_leaf)[1]


def tree_flatten_with_path(tree, is_leaf: Callable[[Any], bool] | None = None):
    """`([(path, leaf), ...], treedef)`; a path is a tuple of key entries (see `keystr`)."""
    out = []
    node = _flatten_with_path(tree, (), out, is_leaf)
    return out, PyTreeDef(node, len(out))


def tree_leaves_with_path(tree, is_leaf: Callable[[Any], bool] | None = None) -> list:
    """`[(path, leaf), ...]` in flatten order."""
    out = []
    _flatten_with_path(tree, (), out, is_leaf)
    return out


# ----------------------------------------------------------------------------------------------
# Matching one structure against another tree (tree_map with several trees, prefixes)


class _Mismatch(Exception):
    """Internal: a structure mismatch; `path` is filled in (reversed) while unwinding."""

    def __init__(self, a: str, b: str):
        self.a, self.b, self.path = a, b, []

    def where(self) -> str:
        return f"at {keystr(self.path[::-1])}" if self.path else "at the root"


def _describe(entry, aux, n) -> str:
    k = entry.kind
    if k is _NONE:
        return "None"
    if k is _SEQ:
        return f"{entry.name} of length {n}"
    if k is _DICT:
        return f"{entry.name} with keys {list(entry.dict_keys(aux))!r}"
    if k is _NT:
        return f"namedtuple {entry.name}"
    return f"{entry.name} with {n} {'child' if n == 1 else 'children'} and aux data {aux!r}"


def _describe_value(x) -> str:
    if x is None:
        return "None"
    e = _entry_for(type(x))
    if e is None:
        return f"leaf ({type(x).__name__})"
    if e.kind is _SEQ or e.kind is _NT:
        return _describe(e, None, len(x))
    children, aux = e.flatten(x)
    return _describe(e, aux, len(children))


def _aux_equal(a, b) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def _up_to_list(node, x) -> list:
    out = []
    if node is None:
        out.append(x)
    else:
        _up_to(node, x, out)
    return out


def _up_to(node, x, out):
    """Append to `out` the subtrees of `x` found at the leaf positions of `node`."""
    entry, aux, children = node
    k = entry.kind
    if k is _SEQ:
        if type(x) is not entry.type or len(x) != len(children):
            raise _Mismatch(_describe(entry, aux, len(children)), _describe_value(x))
        xs = x
    elif k is _DICT:
        keys = entry.dict_keys(aux)
        if type(x) is not entry.type or len(x) != len(keys) or any(q not in x for q in keys):
            raise _Mismatch(_describe(entry, aux, len(children)), _describe_value(x))
        xs = [x[q] for q in keys]
    elif k is _NONE:
        if x is not None:
            raise _Mismatch("None", _describe_value(x))
        return
    else:
        if type(x) is not entry.type:
            raise _Mismatch(_describe(entry, aux, len(children)), _describe_value(x))
        xs, xaux = entry.flatten(x)
        xs = tuple(xs)
        if len(xs) != len(children) or not _aux_equal(aux, xaux):
            raise _Mismatch(_describe(entry, aux, len(children)), _describe(entry, xaux, len(xs)))
    for i, c in enumerate(children):
        if c is None:
            out.append(xs[i])
            continue
        try:
            _up_to(c, xs[i], out)
        except _Mismatch as m:
            m.path.append(_child_key(entry, aux, x, i))
            raise


def _child_key(entry, aux, x, i):
    k = entry.kind
    if k is _SEQ:
        return SequenceKey(i)
    if k is _DICT:
        return DictKey(entry.dict_keys(aux)[i])
    return entry.flatten_with_keys(x)[0][i][0]


def _rest_leaves(node, rest, fname):
    """Flatten each extra tree up to `node`, raising a ValueError naming the first mismatch."""
    out = []
    for j, r in enumerate(rest):
        try:
            out.append(_up_to_list(node, r))
        except _Mismatch as m:
            raise ValueError(
                f"{fname}: tree {j + 1} does not match the structure of tree 0 {m.where()}: "
                f"{m.a} vs {m.b} (the extra trees must have tree 0's structure; a leaf of tree 0 "
                "may match a whole subtree)") from None
    return out


def tree_map(f: Callable, tree, *rest, is_leaf: Callable[[Any], bool] | None = None):
    """Apply `f` leafwise: `f(leaf, *others)`; result has `tree`'s structure.

    `rest` trees must have `tree`'s structure, except that a leaf of `tree` may face a whole
    subtree in the others (which `f` then receives). is_leaf applies to `tree` only.
    """
    leaves = []
    node = _flatten(tree, leaves, is_leaf)
    if node is None:
        return f(tree, *rest)
    if rest:
        new = [f(*xs) for xs in zip(leaves, *_rest_leaves(node, rest, "tree_map"))]
    else:
        new = [f(x) for x in leaves]
    return _unflatten(node, iter(new))


def tree_map_with_path(f: Callable, tree, *rest, is_leaf: Callable[[Any], bool] | None = None):
    """Like `tree_map` with `f(path, leaf, *others)`; paths are those of `tree`."""
    pairs = []
    node = _flatten_with_path(tree, (), pairs, is_leaf)
    if node is None:
        return f((), tree, *rest)
    if rest:
        others = _rest_leaves(node, rest, "tree_map_with_path")
        new = [f(p, x, *xs) for (p, x), *xs in zip(pairs, *others)]
    else:
        new = [f(p, x) for p, x in pairs]
    return _unflatten(node, iter(new))


def tree_broadcast_prefix(prefix_tree, full_tree, is_leaf: Callable[[Any], bool] | None = None):
    """One entry per leaf of `full_tree`: the value of `prefix_tree` covering that leaf.

    `prefix_tree` has `full_tree`'s structure cut off at some nodes (e.g. vmap in_axes, boolean
    masks); None in it is a leaf value (as for in_axes), and `is_leaf` applies to it only.
    Raises ValueError naming the first path where the trees differ.
    """
    if is_leaf is None:
        def pis_leaf(x):
            return x is None
    else:
        def pis_leaf(x):
            return x is None or is_leaf(x)
    pleaves = []
    node = _flatten(prefix_tree, pleaves, pis_leaf)
    try:
        subtrees = _up_to_list(node, full_tree)
    except _Mismatch as m:
        raise ValueError(f"mismatch {m.where()}: the prefix tree has {m.a} but the full tree has "
                         f"{m.b}") from None
    out = []
    for p, s in zip(pleaves, subtrees):
        n = len(tree_leaves(s))
        if n == 1:
            out.append(p)
        elif n:
            out.extend([p] * n)
    return out


# ----------------------------------------------------------------------------------------------
# Reductions and structure utilities

_NO_INIT = object()


def tree_reduce(function: Callable, tree, initializer=_NO_INIT,
                is_leaf: Callable[[Any], bool] | None = None):
    """`functools.reduce(function, leaves[, initializer])`."""
    leaves = tree_leaves(tree, is_leaf)
    if initializer is _NO_INIT:
        return functools.reduce(function, leaves)
    return functools.reduce(function, leaves, initializer)


def tree_all(tree, is_leaf: Callable[[Any], bool] | None = None) -> bool:
    """True when every leaf is truthy (True for a tree with no leaves)."""
    return all(tree_leaves(tree, is_leaf))


def all_leaves(iterable: Iterable, is_leaf: Callable[[Any], bool] | None = None) -> bool:
    """True when every element is itself a leaf (not a container)."""
    return all(_flatten(x, [], is_leaf) is None for x in iterable)


def tree_transpose(outer_treedef: PyTreeDef, inner_treedef: PyTreeDef | None, pytree_to_transpose):
    """Turn an outer tree of inner trees into an inner tree of outer trees.

    `inner_treedef=None` infers it from the first inner tree.
    """
    outer = outer_treedef.flatten_up_to(pytree_to_transpose)
    if inner_treedef is None:
        inner_treedef = tree_structure(outer[0]) if outer else PyTreeDef(None)
    inner = [inner_treedef.flatten_up_to(t) for t in outer]
    columns = [outer_treedef.unflatten(col) for col in zip(*inner)] if inner else []
    return inner_treedef.unflatten(columns)


def treedef_is_leaf(treedef: PyTreeDef) -> bool:
    """True for a one-node structure: a leaf, or a childless node such as None or () (as JAX)."""
    return treedef._node is None or not treedef._node[2]


def treedef_is_strict_leaf(treedef: PyTreeDef) -> bool:
    """True only for a bare leaf."""
    return treedef._node is None


def treedef_children(treedef: PyTreeDef) -> list[PyTreeDef]:
    """Structures of the root's children."""
    return treedef.children()


def treedef_tuple(treedefs: Iterable[PyTreeDef]) -> PyTreeDef:
    """The structure of a tuple whose elements have the given structures."""
    treedefs = list(treedefs)
    return PyTreeDef((_TUPLE, None, tuple(t._node for t in treedefs)),
                     sum(t.num_leaves for t in treedefs))


# ----------------------------------------------------------------------------------------------
# JAX's class-decorator registration and functools.partial as a pytree

def register_pytree_node_class(cls):
    """Class decorator: `cls` flattens with its `tree_flatten()` method -> (children, aux) and
    rebuilds with the classmethod `tree_unflatten(aux, children)` (JAX's protocol)."""
    register_pytree_node(cls, lambda x: x.tree_flatten(), cls.tree_unflatten)
    return cls


def register_static(cls):
    """Class decorator: instances are pytrees with no leaves (the whole value is static aux data,
    so it must be hashable)."""
    register_pytree_node(cls, lambda x: ((), x), lambda aux, _: aux)
    return cls


class Partial(functools.partial):
    """functools.partial that is a pytree: the bound arguments are its leaves and the function
    is static, so a Partial can be passed through jit, vmap and grad like any other argument."""

    def __new__(cls, func, *args, **kwargs):
        if isinstance(func, functools.partial):  # flatten nested partials, as JAX does
            args = func.args + args
            kwargs = {**func.keywords, **kwargs}
            func = func.func
        return super().__new__(cls, func, *args, **kwargs)


register_pytree_node(
    Partial, lambda p: ((p.args, p.keywords), p.func),
    lambda func, children: Partial(func, *children[0], **children[1]))

__all__ += ["register_pytree_node_class", "register_static", "Partial"]
