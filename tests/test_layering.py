"""The layering of docs/architecture.md, checked against every import in funcgrad.

The layer table and the list of public modules are parsed from docs/architecture.md, so the
document and this test cannot drift apart. Every import is read with `ast`, at the top of a file
and inside functions alike.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "funcgrad"


# ---------------------------------------------------------------------------------------------
# The table

def _section(text, title):
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end == -1 else text[start:end]


def _parse_layers():
    """[(number, name, [(path, to_come)], public_only)] from the layer table."""
    layers = []
    for line in _section(DOC.read_text(), "The layers").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].isdigit():
            continue
        entries = [(m.group(1), bool(m.group(2)))
                   for m in re.finditer(r"`([^`]+)`( \(to come\))?", cells[2])]
        imports = cells[3]
        assert imports in ("layers below", "public API only"), (
            f"docs/architecture.md: layer {cells[0]} says it imports {imports!r}; say 'layers "
            "below' or 'public API only'")
        layers.append((int(cells[0]), cells[1], entries, imports == "public API only"))
    return layers


def _parse_public():
    return {m for m in re.findall(r"^\| `([\w.]+)` \|", _section(DOC.read_text(), "The public API"),
                                  re.M)}


LAYERS = _parse_layers()
PUBLIC = _parse_public()


def _modules():
    """{dotted module name: path} for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer_of(path):
    """(layer number, layer name, public_only) of the most specific entry matching `path`."""
    rel = path.relative_to(ROOT).as_posix()
    best = None
    for number, name, entries, public_only in LAYERS:
        for entry, _ in entries:
            hit = rel == entry if not entry.endswith("/") else rel.startswith(entry)
            if hit and (best is None or len(entry) > best[0]):
                best = (len(entry), number, name, public_only)
    return None if best is None else best[1:]


# ---------------------------------------------------------------------------------------------
# Imports

def _resolve(module, node):
    """The package or module a `from ... import` reads from."""
    if node.level == 0:
        return node.module
    is_package = MODULES[module].name == "__init__.py"
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[:len(parts) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def _imports(module):
    """[(line, target module, imported name or None)] for every funcgrad import in `module`,
    and {alias: module} for names bound to funcgrad modules."""
    tree = ast.parse(MODULES[module].read_text())
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            if not source or source.split(".")[0] != "funcgrad":
                continue
            for a in node.names:
                if f"{source}.{a.name}" in MODULES:
                    found.append((node.lineno, f"{source}.{a.name}", None))
                    aliases[a.asname or a.name] = f"{source}.{a.name}"
                else:
                    found.append((node.lineno, source, a.name))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "funcgrad":
                    found.append((node.lineno, a.name, None))
                    if a.asname:
                        aliases[a.asname] = a.name
    return tree, found, aliases


def _private(name):
    return name.startswith("_") and not name.startswith("__")


def _private_module_outside_its_package(source, target):
    """Importing `pkg._mod` from outside `pkg` (its siblings and `pkg` itself may)."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if _private(part):
            package = ".".join(parts[:i])
            return not (source == package or source.startswith(package + "."))
    return False


# ---------------------------------------------------------------------------------------------
# The checks

def test_the_layer_table_parses():
    assert len(LAYERS) >= 10, "docs/architecture.md: the layer table was not found"
    assert [n for n, *_ in LAYERS] == list(range(1, len(LAYERS) + 1)), \
        "docs/architecture.md: number the layers 1, 2, 3, ... from the bottom"
    assert "funcgrad.numpy" in PUBLIC and "funcgrad.lax" in PUBLIC


def test_every_module_is_on_a_layer():
    missing = sorted(str(p.relative_to(ROOT)) for p in MODULES.values() if _layer_of(p) is None)
    assert not missing, (f"modules on no layer of docs/architecture.md: {missing}; give each a "
                         "row (or an entry in an existing row)")


def test_every_table_entry_exists_or_is_to_come():
    stale = [entry for _, _, entries, _ in LAYERS for entry, to_come in entries
             if not to_come and not (ROOT / entry).exists()]
    assert not stale, (f"docs/architecture.md names modules that do not exist: {stale}; remove "
                       "them or mark them '(to come)'")
    stale = sorted(m for m in PUBLIC if m not in MODULES)
    assert not stale, f"docs/architecture.md lists public modules that do not exist: {stale}"


def _violations():
    wrong = []
    for module, path in MODULES.items():
        number, name, public_only = _layer_of(path) or (None, None, None)
        if number is None:
            continue
        tree, found, aliases = _imports(module)
        where = path.relative_to(ROOT).as_posix()
        for line, target, imported in found:
            t_number, t_name, _ = _layer_of(MODULES[target])
            if t_number > number:
                wrong.append(f"{where}:{line} ({name}, layer {number}) imports {target} "
                             f"({t_name}, layer {t_number}): a higher layer")
            elif public_only and t_number != number and target not in PUBLIC:
                wrong.append(f"{where}:{line} ({name}: public API only) imports {target}, which "
                             "is not a public module")
            if imported is not None and _private(imported) and target != module:
                wrong.append(f"{where}:{line} reads the private name {imported} of {target}")
            if _private_module_outside_its_package(module, target):
                wrong.append(f"{where}:{line} imports {target}, a module private to its package")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and _private(node.attr)
                    and aliases[node.value.id] != module):
                wrong.append(f"{where}:{node.lineno} reads the private name {node.attr} of "
                             f"{aliases[node.value.id]}")
    return wrong


def test_imports_point_down_the_layers_and_read_no_private_names():
    wrong = _violations()
    assert not wrong, "\n".join([f"{len(wrong)} layering violations "
                                 "(see docs/architecture.md):"] + wrong)


@pytest.mark.parametrize("source, target, ok", [
    ("funcgrad.lax.scans", "funcgrad.lax._programs", True),
    ("funcgrad.lax", "funcgrad.lax._util", True),
    ("funcgrad.transforms.vmap", "funcgrad.lax._batching", False),
    ("funcgrad.numpy._take", "funcgrad.numpy._indexing", True),
])
def test_private_modules_are_private_to_their_package(source, target, ok):
    assert _private_module_outside_its_package(source, target) is not ok
