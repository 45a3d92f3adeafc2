"""Registered types: a checkpoint stores a node type (an optimizer state, a LoRA adapter) or a
static value (a model config) by a registered *name*, and a load rebuilds it from the class
registered under that name in this process: no code and no class path is ever taken from a
file. funcgrad registers its own types here (every NamedTuple state of `funcgrad.optim`,
`lora.Adapter`, `collections.OrderedDict`).
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import re

from .. import lora as _lora
from .. import optim as _optim
from .. import tree_util as tu
from .safetensors_format import CheckpointError

__all__ = ["register_type"]


_TYPES: dict[str, type] = {}
_NAMES: dict[type, str] = {}


def is_namedtuple_class(cls):
    return isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")


def _is_pytree_node_class(cls):
    try:
        tu.PyTreeDef.make_from_node_data_and_children((cls, None), ())
    except ValueError:
        return False
    return True


def register_type(cls=None, *, name: str | None = None):
    """Let checkpoints store `cls` by `name` (default `"<module>.<qualname>"`) and rebuild it on
    load without `like=`. Usable as a decorator (`@io.register_type` or
    `@io.register_type(name="my.Config")`); returns `cls`.

    `cls` is a namedtuple, a dataclass, or a pytree node class registered with `fg.tree_util`.
    The name is what the file records, so keep it stable when the class moves. Registering the
    same class under the same name again does nothing; a name taken by another class raises.
    """
    if cls is None:
        return lambda c: register_type(c, name=name)
    if not isinstance(cls, type):
        raise TypeError(f"io.register_type: expected a class, got {cls!r}")
    if not (is_namedtuple_class(cls) or dataclasses.is_dataclass(cls)
            or _is_pytree_node_class(cls)):
        raise TypeError(f"io.register_type: {cls.__name__} is not a namedtuple, a dataclass or a "
                        "pytree node class (fg.tree_util.register_pytree_node); a checkpoint "
                        "could not rebuild it")
    name = f"{cls.__module__}.{cls.__qualname__}" if name is None else name
    if not isinstance(name, str) or not name:
        raise TypeError(f"io.register_type: name must be a non-empty str, got {name!r}")
    if _TYPES.get(name, cls) is not cls:
        raise ValueError(f"io.register_type: the name {name!r} is already registered for "
                         f"{_TYPES[name].__module__}.{_TYPES[name].__qualname__}; pass "
                         "name='...' to choose another")
    if _NAMES.get(cls, name) != name:
        raise ValueError(f"io.register_type: {cls.__qualname__} is already registered as "
                         f"{_NAMES[cls]!r}")
    _TYPES[name] = cls
    _NAMES[cls] = name
    return cls


def registered_name(cls):
    """The name `cls` is registered under, or None."""
    return _NAMES.get(cls)


def registered(name, fname):
    """The class registered as `name`; a funcgrad module named by it may register it on import."""
    cls = _TYPES.get(name)
    if cls is None:
        module = name.rpartition(".")[0]
        if re.fullmatch(r"funcgrad(\.[A-Za-z_][A-Za-z0-9_]*)+", module):
            try:
                importlib.import_module(module)
            except Exception:  # no such module, or one that cannot load here: not registered
                pass
            cls = _TYPES.get(name)
    if cls is None:
        raise CheckpointError(f"{fname}: the file holds a {name!r}, which is not a registered "
                              "type in this process: import the module that defines it (it must "
                              "call io.register_type), or pass like= a tree of that structure")
    return cls


def _register_funcgrad_types():
    for v in list(vars(_optim).values()):
        if (is_namedtuple_class(v) and v.__module__.startswith(_optim.__name__)
                and v is not _optim.GradientTransformation):
            register_type(v, name=f"funcgrad.optim.{v.__name__}")
    register_type(_lora.Adapter, name="funcgrad.lora.Adapter")
    register_type(collections.OrderedDict, name="collections.OrderedDict")


_register_funcgrad_types()
