"""`vislab nbgrader init COURSE_DIR`: an nbgrader course whose assignments are vislab labs.

Each lab becomes an assignment `<lab>` whose source is the lab's skeleton (labs/<lab>/, what
students edit) plus a notebook `grade.ipynb` with one locked, graded cell per task (worth the
task's points). The written questions' answer cells of the lab's notebook `<lab>.ipynb`
(vislab.written) become nbgrader's manually graded answer cells, worth each question's points,
so the gradebook holds the code points (autograded, in grade.ipynb) and the written points
(graded by hand in formgrader, in <lab>.ipynb) apart. `nbgrader generate_assignment`, `collect`, `autograde`, `generate_feedback` and
`export` work as usual, with one difference: `nbgrader autograde` runs no notebook.

Why: in a stock nbgrader course the score is decided inside a Jupyter kernel that has just run
the student's notebook, so the student's code can patch the test cells' world (an always-equal
object, a hook that blanks the tests, reading the instructor's source notebook, writing the
gradebook). Here the course's config replaces nbgrader's Execute step by
vislab.nbgrader_preprocessors.GradeWithVislab: the student's .py files run only in vislab's
sandbox (vislab.sandbox), the scores are decided in the grader's process, and each graded cell
receives an output that nbgrader's SaveAutoGrades reads as partial credit. The submitted
notebook's cells are replaced by the released ones first (UseReleasedCells), so nothing a
student adds to or changes in a notebook is run or read as a score.

This module only writes files; the preprocessors (which need nbgrader) are in
vislab.nbgrader_preprocessors.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from vislab import LABS_DIR
from vislab.errors import UsageError

GRADE_NOTEBOOK = "grade"  # source/<lab>/grade.ipynb

CONFIG = '''\
"""nbgrader course made by `vislab nbgrader init`: every assignment is a vislab lab.

`nbgrader autograde` runs no notebook: GradeWithVislab grades the student's .py files in
vislab's sandbox and writes each task's points under its cell in grade.ipynb, which nbgrader
then saves as partial credit. See docs/instructors.md in the vislab repository.
"""
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, LimitOutput,
                                   SaveAutoGrades)

from vislab.nbgrader_preprocessors import GradeWithVislab, ReadBrokenAsReleased, UseReleasedCells

c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = {course_id!r}

# The submitted notebooks' cells are replaced by the released ones; no kernel is ever started.
# A submitted notebook that is not valid JSON is read as the released one, so that the student's
# .py files are still graded (nbgrader would otherwise fail that student and export a 0).
c.Autograde.exporter_class = ReadBrokenAsReleased
c.Autograde.sanitize_preprocessors = [UseReleasedCells]
c.Autograde.autograde_preprocessors = [GradeWithVislab, LimitOutput, SaveAutoGrades,
                                       AssignLatePenalties, CheckCellMetadata]
# assignment -> vislab lab, and the limits of each submission's sandbox
c.GradeWithVislab.labs = {labs!r}
c.GradeWithVislab.memory_gib = 3.0
c.GradeWithVislab.timeout_scale = 1.0
c.GradeWithVislab.seed = 0  # draws the checks' inputs; the same seed regrades identically
# keep the student's own .py files in autograded/ (what was graded), not the skeleton's
c.Autograde.exclude_overwriting = {keep!r}
'''


def grade_id(task: str) -> str:
    return task.replace(".", "_")


def _cell(kind: str, source: str, cell_id: str, nbgrader: dict | None = None) -> dict:
    cell = {"cell_type": kind, "id": cell_id, "metadata": {}, "source": source}
    if nbgrader is not None:
        cell["metadata"]["nbgrader"] = dict(nbgrader, schema_version=3)
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def grade_notebook(lab_name: str) -> dict:
    """grade.ipynb: one locked, graded cell per task. Students may run it to grade their own
    copy; `nbgrader autograde` never runs it (vislab writes the outputs)."""
    from vislab.grading import load_lab

    from vislab.written import questions

    lab = load_lab(lab_name)
    asked = questions(lab_name)
    written = (f" The written questions ({sum(q.points for q in asked)} points) are answered in "
               f"`{lab_name}.ipynb` and graded by hand." if asked else "")
    cells = [_cell("markdown", (
        f"# Grading the {lab_name} lab\n\n"
        f"Edit the lab's `.py` files, not this notebook, and submit the whole folder. Each cell "
        f"below is one task; running it grades your own code here, in this kernel. When your "
        f"instructor grades, this notebook is not run: vislab grades your files in a sandbox "
        f"and writes each task's points under its cell.{written}"), "intro",
        {"grade": False, "solution": False, "locked": True, "task": False,
         "grade_id": "intro"})]
    cells.append(_cell("code", "from vislab.grading import grade_lab", "setup",
                       {"grade": False, "solution": False, "locked": True, "task": False,
                        "grade_id": "setup"}))
    for task, title in lab.tasks.items():
        points = lab.points(task)
        cells.append(_cell("code", f"# {task}: {title} ({points:g} points)\n"
                                   f"grade_lab({lab_name!r}, \".\", task={task!r});",
                           grade_id(task),
                           {"grade": True, "solution": False, "locked": True, "task": False,
                            "grade_id": grade_id(task), "points": points}))
    return {"cells": cells, "metadata": {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def mark_written(nb: dict, lab_name: str) -> list[str]:
    """Turn the notebook's written-answer cells into nbgrader's manually graded answer cells
    (markdown, `solution` and `grade`, worth the question's points, grade_id `<lab>_q<n>`),
    and lock the question cell before each; return the question ids marked. The points come
    from the lab's handout; an answer cell for a question the handout does not ask, or a
    question without its answer cell, is a UsageError (the lab is inconsistent)."""
    from vislab.written import answer_cells, notebook_problems, questions, written_id

    asked = questions(lab_name)
    if not asked and not answer_cells(nb):
        return []  # a lab without written questions (yet)
    problems = notebook_problems(nb, lab_name, asked, f"labs/{lab_name}/{lab_name}.ipynb")
    if problems:
        raise UsageError(f"the {lab_name} lab's written questions are inconsistent: "
                         f"{problems[0]}")
    points = {q.id: q.points for q in asked}
    cells = nb["cells"]
    for n, cell in enumerate(cells):
        qid = written_id(cell)
        if qid is None:
            continue
        cell["metadata"]["nbgrader"] = {
            "grade": True, "solution": True, "locked": False, "task": False,
            "points": points[qid], "grade_id": grade_id(qid), "schema_version": 3}
        cells[n - 1]["metadata"]["nbgrader"] = {
            "grade": False, "solution": False, "locked": True, "task": False,
            "grade_id": f"{grade_id(qid)}_question", "schema_version": 3}
    return [q.id for q in asked]


def init_course(course: Path, labs: list[str] | None = None, course_id: str = "vislab",
                force: bool = False) -> list[Path]:
    """Write COURSE/nbgrader_config.py and COURSE/source/<lab>/ for each lab; return what was
    written."""
    from vislab.grading import lab_names

    labs = labs or lab_names()
    unknown = [lab for lab in labs if lab not in lab_names() or not (LABS_DIR / lab).is_dir()]
    if unknown:
        raise UsageError(f"no lab named {', '.join(unknown)}; labs are: {', '.join(lab_names())}")
    course = Path(course).resolve()
    if course.exists() and not course.is_dir():
        raise UsageError(f"{course} is a file, not a course folder: name a folder (it is created "
                         f"if missing)")
    config = course / "nbgrader_config.py"
    if config.exists() and not force:
        raise UsageError(f"{config} exists; use --force to overwrite it and the labs' sources")
    written = []
    keep = {}
    for lab in labs:
        source = course / "source" / lab
        if source.exists():
            if not force:
                raise UsageError(f"{source} exists; use --force to overwrite it")
            shutil.rmtree(source)
        shutil.copytree(LABS_DIR / lab, source,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints"))
        notebook = source / f"{lab}.ipynb"
        if notebook.is_file():  # written answers: graded by hand in nbgrader
            nb = json.loads(notebook.read_text(encoding="utf-8"))
            if mark_written(nb, lab):
                notebook.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
        (source / f"{GRADE_NOTEBOOK}.ipynb").write_text(
            json.dumps(grade_notebook(lab), indent=1) + "\n")
        keep[lab] = sorted(str(p.relative_to(source)) for p in source.rglob("*")
                           if p.is_file() and p.suffix != ".ipynb")
        written.append(source)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(CONFIG.format(course_id=course_id, labs={lab: lab for lab in labs},
                                    keep=keep))
    written.append(config)
    return written


# ------------------------------------------------------------------------------- CLI

def add_parser(sub) -> None:
    p = sub.add_parser("nbgrader", help="make an nbgrader course that grades through vislab")
    nb = p.add_subparsers(dest="nbgrader_command", required=True)
    init = nb.add_parser("init", help="write nbgrader_config.py and source/<lab>/ into a course",
                         description="Make an nbgrader course whose assignments (one per lab) "
                                     "are graded by vislab in a sandbox.")
    init.add_argument("course", type=Path, help="the course folder (created if missing)")
    init.add_argument("--lab", action="append", dest="labs",
                      help="a lab to add (repeatable; default: every lab)")
    init.add_argument("--course-id", default="vislab")
    init.add_argument("--force", action="store_true",
                      help="overwrite an existing nbgrader_config.py and sources")
    init.set_defaults(run=cmd_init)


def cmd_init(args) -> int:
    try:
        written = init_course(args.course, args.labs, args.course_id, args.force)
    except OSError as exc:
        raise UsageError(f"cannot write the course into {args.course}: {exc.strerror} "
                         f"({exc.filename})") from None
    for path in written:
        print(f"wrote {path}")
    labs = [p.name for p in written if p.parent.name == "source"]
    print(f"next, in {args.course.resolve()}: nbgrader generate_assignment {labs[0]}, release "
          f"and collect as usual, then nbgrader autograde {labs[0]} and nbgrader export")
    return 0
