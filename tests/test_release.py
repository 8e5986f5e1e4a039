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
            "weighted sum of v. Divide by sqrt(d) before the softmax.')\n") in out  # the whole hint
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
    written, kept = release(solutions, labs)
    assert "vit/model.py" in written and not kept and drift(solutions, labs) == []
    (labs / "vit" / "model.py").write_text("# hand-edited\n")
    (labs / "vit" / "extra.py").write_text("my notes")
    assert drift(solutions, labs) == ["vit/extra.py: not in solutions/", "vit/model.py: differs"]
    assert release(solutions, labs) == (["vit/model.py"], ["vit/extra.py"])
    assert (labs / "vit" / "extra.py").read_text() == "my notes"   # never deleted
    assert drift(solutions, labs) == ["vit/extra.py: not in solutions/"]


def test_cli_release_keeps_an_extra_file_and_says_so(tmp_path, monkeypatch, capsys):
    """An extra file in labs/<lab>/ (a student's notes, a stale file) is never deleted; the
    command says it kept it and exits 1 instead of printing 'wrote' for a deletion."""
    import vislab.cli as cli

    solutions, labs = tmp_path / "solutions", tmp_path / "labs"
    shutil.copytree(SOLUTIONS_DIR / "vit", solutions / "vit")
    release(solutions, labs)
    (labs / "vit" / "notes.py").write_text("keep me")
    monkeypatch.setattr(cli, "SOLUTIONS_DIR", solutions)
    monkeypatch.setattr(cli, "LABS_DIR", labs)
    assert main(["release"]) == 1
    out, err = capsys.readouterr()
    assert "kept labs/vit/notes.py" in err and "wrote" not in out
    assert (labs / "vit" / "notes.py").read_text() == "keep me"


GIVEN_SOURCE = SOURCE + '''

def helper():
    return 1
'''


def test_given_code_is_the_earlier_labs_solution_without_markers(tmp_path):
    """A later lab's given.txt names an earlier lab's file; release writes it, finished and
    without markers or TODO hints, into solutions/<later>/ and labs/<later>/; a hand edit of
    the copy is drift."""
    solutions, labs = tmp_path / "solutions", tmp_path / "labs"
    (solutions / "early").mkdir(parents=True)
    (solutions / "early" / "__init__.py").write_text("")
    (solutions / "early" / "attn.py").write_text(GIVEN_SOURCE)
    (solutions / "late").mkdir()
    (solutions / "late" / "__init__.py").write_text("")
    (solutions / "late" / "given.txt").write_text("# from the early lab\nattn.py = early/attn.py\n")
    problems = drift(solutions, labs)
    assert "solutions/late/attn.py: given copy missing" in problems
    written, _ = release(solutions, labs)
    assert "solutions/late/attn.py" in written and drift(solutions, labs) == []
    given = (solutions / "late" / "attn.py").read_text()
    assert (labs / "late" / "attn.py").read_text() == given
    assert "scores = q @ k.transpose" in given and "def helper" in given
    assert "BEGIN SOLUTION" not in given and "TODO(" not in given
    assert given.startswith("# Given code, written by `vislab release` from solutions/early/attn.py")
    assert "raise NotImplementedError" in (labs / "early" / "attn.py").read_text()
    (solutions / "late" / "attn.py").write_text(given + "# edited\n")
    assert "solutions/late/attn.py: given copy differs" in drift(solutions, labs)


@pytest.mark.parametrize("line, words", [
    ("attn.py early/attn.py", "expected 'FILE.py = LAB/FILE.py'"),
    ("attn.py = early/nothing.py", "no solutions/early/nothing.py"),
])
def test_a_bad_given_line_is_named(tmp_path, line, words):
    solutions = tmp_path / "solutions"
    (solutions / "early").mkdir(parents=True)
    (solutions / "early" / "attn.py").write_text(SOURCE)
    (solutions / "late").mkdir()
    (solutions / "late" / "given.txt").write_text(line + "\n")
    with pytest.raises(ReleaseError, match=re.escape(f"late/given.txt:1: {words}")):
        drift(solutions, tmp_path / "labs")


def test_cli_release_check_passes_on_the_repo(capsys):
    assert main(["release", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


@pytest.mark.parametrize("text, words", [('{"cells": [', "not a valid notebook"),
                                         ('[1, 2]', "not a notebook")])
def test_a_broken_notebook_is_named(text, words):
    with pytest.raises(ReleaseError, match=re.escape(f"lab.ipynb: {words}")):
        strip_notebook(text, "lab.ipynb")
