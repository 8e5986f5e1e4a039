"""nbgrader end to end, offline: `vislab nbgrader init`, then nbgrader's own generate_assignment,
autograde and export on a solution, a skeleton, a skeleton with a tampered notebook, and a
solution that tries to open the gradebook, the instructor's notebook and another submission.

In this course nbgrader runs no notebook: the scores come from vislab's sandbox, so a notebook
that claims full marks (changed grade cells, added cells, fake outputs) earns nothing."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vislab import SOLUTIONS_DIR
from vislab.cli import main
from vislab.grading import load_lab

pytest.importorskip("nbgrader")

LAB = load_lab("vit")
TOTAL = sum(c.points for c in LAB.checks)


def nbgrader(course: Path, *args: str) -> str:
    env = dict(os.environ)
    # nbgrader runs `alembic` by name: the venv's bin folder must be on PATH
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def tamper(notebook: Path) -> None:
    """A student's grade.ipynb that claims full marks: every grade cell rewritten to print its
    points, with outputs saying so, and a cell added that patches the grader."""
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("grade"):
            cell["source"] = f"{meta['points']}"
            cell["outputs"] = [{"output_type": "execute_result", "execution_count": 1,
                                "metadata": {}, "data": {"text/plain": f"{meta['points']}"}}]
            meta["points"] = 100
    nb["cells"].insert(1, {"cell_type": "code", "id": "evil", "metadata": {}, "outputs": [],
                           "execution_count": None,
                           "source": "import vislab.grading as g\ng.expect = lambda *a: None"})
    notebook.write_text(json.dumps(nb))


SNOOP = """\
    for _path, _mode in [(@COURSE@ + "/gradebook.db", "r+b"), (@COURSE@ + "/gradebook.db", "rb"),
                         (@COURSE@ + "/source/vit/grade.ipynb", "rb"),
                         (@COURSE@ + "/submitted/alice/vit/model.py", "a")]:
        try:
            open(_path, _mode).close()
        except OSError:
            pass
        else:
            raise RuntimeError(f"LEAK: opened {_path}")
"""


def test_nbgrader_course_grades_through_vislab(tmp_path, capsys):
    course = tmp_path / "course"
    assert main(["nbgrader", "init", str(course), "--lab", "vit"]) == 0
    assert "nbgrader generate_assignment vit" in capsys.readouterr().out
    assert main(["nbgrader", "init", str(course), "--lab", "vit"]) == 2  # never overwrites
    assert "--force" in capsys.readouterr().err

    nbgrader(course, "generate_assignment", "vit")
    release = course / "release" / "vit"
    assert (release / "grade.ipynb").is_file() and (release / "model.py").is_file()
    for student in ("alice", "bob", "carol", "dave", "erin"):
        shutil.copytree(release, course / "submitted" / student / "vit")
    for student in ("alice", "dave", "erin"):  # they hand in the solution
        for path in (SOLUTIONS_DIR / "vit").glob("*.py"):
            shutil.copy(path, course / "submitted" / student / "vit" / path.name)
    tamper(course / "submitted" / "carol" / "vit" / "grade.ipynb")  # carol: skeleton + lies
    # erin's grade.ipynb was cut short on upload: her .py files are still graded, not a 0
    erin = course / "submitted" / "erin" / "vit" / "grade.ipynb"
    erin.write_text(erin.read_text()[:200])
    # dave's solution also tries the gradebook, the instructor's notebook and alice's files
    distill = course / "submitted" / "dave" / "vit" / "distill.py"
    distill.write_text(distill.read_text().replace(
        "    ### BEGIN SOLUTION\n",
        "    ### BEGIN SOLUTION\n" + SNOOP.replace("@COURSE@", repr(str(course)))))

    log = nbgrader(course, "autograde", "vit")
    assert f"vislab graded alice/vit: {TOTAL:g}/{TOTAL:g} points" in log
    nbgrader(course, "export")
    with open(course / "grades.csv") as f:
        scores = {row["student_id"]: row for row in csv.DictReader(f)}
    assert float(scores["alice"]["score"]) == float(scores["alice"]["max_score"]) == TOTAL
    assert float(scores["bob"]["score"]) == 0
    assert float(scores["carol"]["score"]) == 0 and float(scores["carol"]["max_score"]) == TOTAL
    assert float(scores["dave"]["score"]) == TOTAL  # every open failed: no LEAK, full marks
    assert float(scores["erin"]["score"]) == TOTAL  # graded, although her notebook was broken
    assert "is not a valid notebook" in log

    graded = json.loads((course / "autograded" / "bob" / "vit" / "grade.ipynb").read_text())
    texts = ["".join(o.get("text", "")) for c in graded["cells"] for o in c.get("outputs", [])]
    assert any("not implemented" in t for t in texts)
    carol = json.loads((course / "autograded" / "carol" / "vit" / "grade.ipynb").read_text())
    assert "evil" not in {c.get("id") for c in carol["cells"]}


def test_nbgrader_init_onto_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "course").write_text("not a folder")
    assert main(["nbgrader", "init", str(tmp_path / "course"), "--lab", "vit"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a course folder" in err and "Traceback" not in err
