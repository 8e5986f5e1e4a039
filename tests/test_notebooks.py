"""Every lab's notebook runs top to bottom on the solution (and loads on the skeleton)."""
import json
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from vislab import SOLUTIONS_DIR

NOTEBOOKS = sorted(SOLUTIONS_DIR.glob("*/*.ipynb"))
CELL_LIMIT = 1800  # seconds: far above any cell's time on a loaded machine; only a hang hits it


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.parent.name for p in NOTEBOOKS])
def test_solution_notebook_runs(path, tmp_path, monkeypatch):
    folder = tmp_path / path.parent.name
    shutil.copytree(path.parent, folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("VISLAB_RUNS", str(tmp_path / "runs"))  # the kernel inherits it
    # One torch thread in the kernel: on a busy 2-core machine two threads made the training
    # cells 5-10x slower, past the cell time limit. The limit itself only catches a hang.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(folder / path.name, as_version=4)
    NotebookClient(nb, timeout=CELL_LIMIT, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.parent.name for p in NOTEBOOKS])
def test_notebook_is_valid_without_repairs(path):
    """Every cell has an id and the file validates as written: nbformat repairs a missing id
    silently today and will refuse it later; nbgrader keys its cells on ids."""
    raw = json.loads(path.read_text())  # not nbformat.read: it adds missing ids
    missing = [i for i, cell in enumerate(raw["cells"]) if "id" not in cell]
    assert not missing, f"{path}: cells {missing} have no id (give each a short unique id)"
    nbformat.validate(raw)
