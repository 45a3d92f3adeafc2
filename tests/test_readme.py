"""The README's Python examples run as printed (a README that lies is worse than none)."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_blocks_run(capsys):
    blocks = python_blocks()
    assert len(blocks) >= 2
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "dot_general" in out and "def run(" in out  # the jaxpr and the generated code


def test_readme_jaxpr_matches_what_make_jaxpr_prints(capsys):
    first = python_blocks()[0]
    exec(compile(first, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.strip().splitlines()
    shown = [line[2:] for line in first.splitlines() if line.startswith("# ")]
    assert printed == shown
