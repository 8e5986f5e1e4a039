"""`vislab release`: solutions/ -> labs/, deterministic, and labs/ never drifts."""
import json
import re
import shutil

import pytest

from vislab import LABS_DIR, SOLUTIONS_DIR
from vislab.cli import main
from vislab.release import ReleaseError, drift, release, render_tree, strip_notebook, strip_source

SOURCE = '''import math


def attention(q, k, v):  # q, k, v: (B, N, d)
    """softmax(q k^T / sqrt(d)) v."""
    ### BEGIN SOLUTION
    # TODO(demo.attention): scores, softmax over the keys, weighted sum of v.
    #   Divide by sqrt(d) before the softmax.
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, N, N)
    return scores.softmax(-1) @ v
    ### END SOLUTION
'''


def test_block_becomes_hint_and_raise():
    out = strip_source(SOURCE)
    assert "scores = q @ k" not in out
    assert '    """softmax(q k^T / sqrt(d)) v."""' in out            # docstring kept
    assert "def attention(q, k, v):  # q, k, v: (B, N, d)" in out     # signature and shapes kept
    assert "    # TODO(demo.attention): scores, softmax over the keys, weighted sum of v.\n" in out
    assert "    #   Divide by sqrt(d) before the softmax.\n" in out    # the hint's later lines
    assert ("    raise NotImplementedError('TODO(demo.attention): scores, softmax over the keys, "
            "weighted sum of v.')\n") in out
    namespace = {}
    exec(compile(out, "<skeleton>", "exec"), namespace)              # the skeleton is valid Python
    with pytest.raises(NotImplementedError, match=r"^TODO\(demo.attention\)"):
        namespace["attention"](None, None, None)


@pytest.mark.parametrize("bad, words", [
    (SOURCE.replace("    ### END SOLUTION\n", ""), "never closed"),
    (SOURCE.replace("    ### BEGIN SOLUTION\n", ""), "without a matching"),
    (SOURCE.replace("    # TODO(demo.attention): scores, softmax over the keys, weighted sum of v.\n",
                    ""), "must start with '# TODO(<lab>.<task>)"),
    (SOURCE.replace("    scores =", "    ### BEGIN SOLUTION\n    scores ="), "nested"),
])
def test_broken_markers_are_reported_with_the_line(bad, words):
    with pytest.raises(ReleaseError, match=re.escape(words)):
        strip_source(bad, "demo.py")


def test_notebook_cells_are_stripped_and_outputs_cleared():
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["### BEGIN SOLUTION is text here"]},
        {"cell_type": "code", "metadata": {}, "execution_count": 3, "source": SOURCE.splitlines(True),
         "outputs": [{"output_type": "stream", "name": "stdout", "text": ["secret\n"]}]},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    out = json.loads(strip_notebook(json.dumps(nb)))
    code = "".join(out["cells"][1]["source"])
    assert "scores = q @ k" not in code and "raise NotImplementedError" in code
    assert out["cells"][1]["outputs"] == [] and out["cells"][1]["execution_count"] is None
    assert out["cells"][0] == nb["cells"][0]


def test_release_is_deterministic():
    assert render_tree(SOLUTIONS_DIR) == render_tree(SOLUTIONS_DIR)


def test_labs_match_what_release_writes():
    problems = drift(SOLUTIONS_DIR, LABS_DIR)
    assert not problems, "labs/ drifted from solutions/ (run `vislab release`): " + ", ".join(problems)


def test_no_solution_left_in_labs():
    for path in LABS_DIR.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".ipynb"):
            assert "### BEGIN SOLUTION" not in path.read_text(), path


def test_release_writes_and_check_reports_drift(tmp_path, capsys):
    solutions, labs = tmp_path / "solutions", tmp_path / "labs"
    shutil.copytree(SOLUTIONS_DIR / "vit", solutions / "vit")
    assert drift(solutions, labs)                                  # nothing released yet
    written = release(solutions, labs)
    assert "vit/model.py" in written and drift(solutions, labs) == []
    (labs / "vit" / "model.py").write_text("# hand-edited\n")
    (labs / "vit" / "extra.py").write_text("")
    assert drift(solutions, labs) == ["vit/extra.py: not in solutions/", "vit/model.py: differs"]
    assert release(solutions, labs) == ["vit/extra.py", "vit/model.py"]
    assert drift(solutions, labs) == []


def test_cli_release_check_passes_on_the_repo(capsys):
    assert main(["release", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out
