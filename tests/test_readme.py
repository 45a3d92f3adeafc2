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


# ---------------------------------------------------------------------------------------------
# The README's other claims, each against the thing it describes


def _readme():
    return open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def _pyproject():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def test_dependency_line_names_every_runtime_dependency():
    line = re.search(r"Dependencies: (.*?)\.", _readme()).group(1)
    named = set(re.findall(r"`([\w-]+)`", line))
    required = {re.split(r"[<>=\[ ]", d)[0] for d in _pyproject()["dependencies"]}
    assert named == required, (named, required)


def test_extras_hold_what_the_readme_says():
    extras = _pyproject()["optional-dependencies"]
    assert "jupyterlab" in extras["notebooks"]  # "then `jupyter lab notebooks/`"
    assert {"matplotlib", "tqdm"} <= set(extras["examples"])
    assert not any("scikit-learn" in d for deps in extras.values() for d in deps)
    for runner in ("nbclient", "nbformat", "ipykernel"):  # the dev extra runs the notebooks
        assert runner in extras["dev"]


def test_every_example_has_a_stated_run_time():
    text = _readme()
    names = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "examples"))
                   if f.endswith(".py") and not f.startswith("_"))
    for name in names:
        entry = text.split(f"- [`examples/{name}.py`]")[1].split("\n- ")[0].split("\n\n")[0]
        assert re.search(r"\(~[\d.]+ (s|min), `--quick` ~[\d.]+ s\)", entry), (name, entry)


def test_over_250_numpy_functions():
    import funcgrad.numpy as fnp

    public = [n for n in dir(fnp) if not n.startswith("_") and callable(getattr(fnp, n))]
    assert len(public) > 250


def test_differences_list_and_keys_rule_exist():
    text = _readme()
    assert "docs/differences.md" in text and os.path.exists(
        os.path.join(ROOT, "docs", "differences.md"))
    assert "every `init` takes a key or an int seed" in text  # test_models checks every init


def test_ci_lints_the_project_with_ruff():
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "ruff check ." in ci and "pytest" in ci
