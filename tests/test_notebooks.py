"""Every tutorial notebook executes without error (nbclient; the dev extra installs the runner,
the 'notebooks' extra also JupyterLab to open them), is stored without outputs, and draws at
least one picture. They run in notebooks/, as Jupyter starts them."""

from __future__ import annotations

import glob
import os

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs the 'notebooks' extra (nbformat)")
nbclient = pytest.importorskip("nbclient", reason="needs the 'notebooks' extra (nbclient)")
pytest.importorskip("ipykernel", reason="needs the 'notebooks' extra (ipykernel)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, \
                f"{path}: outputs must be stripped (re-run notebooks/make_notebooks.py)"
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": os.path.dirname(path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    images = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if "image/png" in o.get("data", {})]
    assert images, f"{path}: no picture drawn"
