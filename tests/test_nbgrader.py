"""nbgrader end to end, offline: `vislab nbgrader init`, then nbgrader's own generate_assignment,
autograde and export on a solution, a skeleton, a skeleton with a tampered notebook, and a
solution that tries to open the gradebook, the instructor's notebook and another submission.

In this course nbgrader runs no notebook: the scores come from vislab's sandbox, so a notebook
that claims full marks (changed grade cells, added cells, fake outputs) earns nothing. The
written answers of the lab's notebook are manually graded cells: their text reaches the grader,
their points stay apart from the code's in the gradebook."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vislab import LABS_DIR, SOLUTIONS_DIR
from vislab.cli import main
from vislab.errors import UsageError
from vislab.grading import lab_names, load_lab
from vislab.nbgrader import grade_id, init_course, mark_written
from vislab.written import PLACEHOLDER, questions, written_id

pytest.importorskip("nbgrader")

LAB = load_lab("vit")
TOTAL = sum(c.points for c in LAB.checks)
QUESTIONS = questions("vit")  # written: graded by hand, in vit.ipynb
WRITTEN = sum(q.points for q in QUESTIONS)
LAB_NOTEBOOK = LABS_DIR / "vit" / "vit.ipynb"


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


def write_answers(notebook: Path, answers: dict[str, str]) -> None:
    """A student's answers typed into the answer cells of the lab's notebook."""
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        gid = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell["source"] = answers[gid]
    notebook.write_text(json.dumps(nb))


def tamper_written(notebook: Path) -> None:
    """Written answers that claim their points: the first answer cell turned into a code cell
    with an output and 100 points, the question cell edited, a graded cell added."""
    nb = json.loads(notebook.read_text())
    for n, cell in enumerate(nb["cells"]):
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("grade_id") == grade_id(QUESTIONS[0].id):
            meta["points"] = 100
            nb["cells"][n] = dict(cell, cell_type="code", execution_count=1, source="100",
                                  outputs=[{"output_type": "execute_result", "execution_count": 1,
                                            "metadata": {}, "data": {"text/plain": "100"}}])
            nb["cells"][n - 1]["source"] = "Question: none. Full marks."
    nb["cells"].append({"cell_type": "markdown", "id": "bonus", "source": "bonus answer",
                        "metadata": {"nbgrader": {"grade": True, "solution": True, "points": 50,
                                                  "grade_id": "bonus", "locked": False,
                                                  "schema_version": 3}}})
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
    tamper_written(course / "submitted" / "carol" / "vit" / "vit.ipynb")
    # alice answers two written questions, and bob one (the others stay YOUR ANSWER HERE)
    first, third = grade_id(QUESTIONS[0].id), grade_id(QUESTIONS[2].id)
    write_answers(course / "submitted" / "alice" / "vit" / "vit.ipynb",
                  {first: "Patches become tokens; attention mixes them all.", third: "Pretrain."})
    write_answers(course / "submitted" / "bob" / "vit" / "vit.ipynb", {third: "Little data."})
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
    # the written points are in the gradebook's maximum, but not scored until graded by hand
    assert float(scores["alice"]["score"]) == TOTAL
    assert float(scores["alice"]["max_score"]) == TOTAL + WRITTEN
    assert float(scores["bob"]["score"]) == 0
    assert float(scores["carol"]["score"]) == 0
    assert float(scores["carol"]["max_score"]) == TOTAL + WRITTEN
    assert float(scores["dave"]["score"]) == TOTAL  # every open failed: no LEAK, full marks
    assert float(scores["erin"]["score"]) == TOTAL  # graded, although her notebook was broken
    assert "is not a valid notebook" in log

    graded = json.loads((course / "autograded" / "bob" / "vit" / "grade.ipynb").read_text())
    texts = ["".join(o.get("text", "")) for c in graded["cells"] for o in c.get("outputs", [])]
    assert any("not implemented" in t for t in texts)
    carol = json.loads((course / "autograded" / "carol" / "vit" / "grade.ipynb").read_text())
    assert "evil" not in {c.get("id") for c in carol["cells"]}
    check_written_gradebook(course)


def check_written_gradebook(course: Path) -> None:
    """Code and written points apart: the code in grade.ipynb autograded, each written answer a
    manually graded cell of vit.ipynb worth its question's points, waiting for a grader when
    answered, 0 when left as YOUR ANSWER HERE; the answers' text kept for the grader."""
    from nbgrader.api import Gradebook

    ids = [grade_id(q.id) for q in QUESTIONS]
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        notebooks = {nb.name: nb for nb in gb.find_assignment("vit").notebooks}
        assert {c.name for c in notebooks["vit"].grade_cells} == set(ids)
        assert {c.name for c in notebooks["grade"].grade_cells} == {grade_id(t) for t in LAB.tasks}
        assert notebooks["vit"].max_score == WRITTEN and notebooks["grade"].max_score == TOTAL
        for student, answered in (("alice", {ids[0], ids[2]}), ("bob", {ids[2]}),
                                  ("carol", {ids[0]})):
            for q, gid in zip(QUESTIONS, ids):
                grade = gb.find_grade(gid, "vit", "vit", student)
                assert grade.max_score == q.points
                if gid in answered:  # written: a person grades it
                    assert grade.auto_score is None and grade.needs_manual_grade, (student, gid)
                else:  # left empty: nbgrader's 0, nothing to grade
                    assert grade.auto_score == 0 and not grade.needs_manual_grade, (student, gid)
        assert not [c for c in gb.find_notebook("vit", "vit").grade_cells if c.name == "bonus"]
        # the instructor grades alice's first answer in formgrader: the written points join
        gb.find_grade(ids[0], "vit", "vit", "alice").manual_score = QUESTIONS[0].points
        gb.db.commit()
        assert gb.find_submission("vit", "alice").score == TOTAL + QUESTIONS[0].points
        assert gb.find_submission_notebook("vit", "vit", "alice").score == QUESTIONS[0].points
        assert gb.find_submission_notebook("grade", "vit", "alice").score == TOTAL
    alice = json.loads((course / "autograded" / "alice" / "vit" / "vit.ipynb").read_text())
    texts = {c["metadata"].get("nbgrader", {}).get("grade_id"): "".join(c["source"])
             for c in alice["cells"]}
    assert texts[ids[0]].startswith("Patches become tokens") and texts[ids[1]] == PLACEHOLDER
    carol = json.loads((course / "autograded" / "carol" / "vit" / "vit.ipynb").read_text())
    cell = next(c for c in carol["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == ids[0])
    assert cell["cell_type"] == "markdown" and cell["metadata"]["nbgrader"]["points"] == QUESTIONS[0].points
    assert "bonus" not in {c.get("id") for c in carol["cells"]}
    assert "Full marks" not in json.dumps(carol)  # the question cell is the released one


def test_nbgrader_init_marks_written_answers_as_manually_graded(tmp_path):
    labs = [lab for lab in lab_names() if (LABS_DIR / lab).is_dir() and questions(lab)]
    assert "vit" in labs
    init_course(tmp_path / "course", labs)
    for lab in labs:
        nb = json.loads((tmp_path / "course" / "source" / lab / f"{lab}.ipynb").read_text())
        asked = questions(lab)
        marked = [c for c in nb["cells"] if "nbgrader" in c["metadata"]]
        assert len(marked) == 2 * len(asked)  # each question's cell locked, its answer graded
        for question, ask, answer in zip(asked, marked[::2], marked[1::2]):
            meta = answer["metadata"]["nbgrader"]
            assert written_id(answer) == question.id and answer["cell_type"] == "markdown"
            assert (meta["grade"], meta["solution"], meta["locked"]) == (True, True, False)
            assert (meta["points"], meta["grade_id"]) == (question.points, grade_id(question.id))
            assert "".join(answer["source"]) == PLACEHOLDER
            assert ask["metadata"]["nbgrader"]["locked"] and not ask["metadata"]["nbgrader"]["grade"]
        grade = json.loads((tmp_path / "course" / "source" / lab / "grade.ipynb").read_text())
        assert not {c["metadata"]["nbgrader"]["grade_id"] for c in grade["cells"]} & \
            {grade_id(q.id) for q in asked}  # code and written grade ids never collide


def test_nbgrader_init_refuses_a_notebook_without_its_answer_cells():
    nb = json.loads((Path(LAB_NOTEBOOK)).read_text())
    nb["cells"] = [c for c in nb["cells"] if written_id(c) != QUESTIONS[-1].id]
    with pytest.raises(UsageError, match=f"written questions are inconsistent"):
        mark_written(nb, "vit")


def test_nbgrader_init_onto_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "course").write_text("not a folder")
    assert main(["nbgrader", "init", str(tmp_path / "course"), "--lab", "vit"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a course folder" in err and "Traceback" not in err
