"""nbgrader preprocessors that make `nbgrader autograde` grade through vislab's sandbox.

Configured by the nbgrader_config.py that `vislab nbgrader init` writes:

- UseReleasedCells (replaces nbgrader's sanitize step): the submitted notebook's cells and
  metadata are replaced by the released notebook's, outputs empty. Nothing a student wrote into
  a notebook (extra cells, changed grade cells, fake outputs, metadata) survives, except the
  text of each written answer (a manually graded markdown cell), which an instructor grades.
- GradeWithVislab (replaces nbgrader's Execute step): no kernel is started. For an assignment
  that is a vislab lab, the student's submitted folder is copied safely (links skipped) and
  graded by vislab.autograde.grade_submission, i.e. in vislab's sandbox, with the scores
  decided in this process; each graded cell then gets the task's message as text and its
  points as the cell's result, which nbgrader's SaveAutoGrades stores as partial credit.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nbformat
from nbconvert.exporters import NotebookExporter
from nbformat.v4 import new_output
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Dict, Float, Integer

from vislab.nbgrader import grade_id


def released_notebook(config, assignment: str, notebook: str) -> Path:
    coursedir = CourseDirectory(config=config)
    return Path(coursedir.format_path(coursedir.release_directory, ".", assignment)) / f"{notebook}.ipynb"


class ReadBrokenAsReleased(NotebookExporter):
    """nbgrader's notebook reader, except that a submitted notebook that is not a valid notebook
    (not JSON, cut short) is read as the released one. Its cells are replaced by the released
    ones anyway (UseReleasedCells), and the score comes from the student's .py files, so the
    student is graded instead of failed (which nbgrader's export shows as a 0, like a real one)."""

    def from_filename(self, filename, resources=None, **kw):
        info = (resources or {}).get("nbgrader", {})
        try:
            nbformat.read(filename, as_version=4)
        except Exception as exc:  # noqa: BLE001 - whatever makes it unreadable
            if "assignment" not in info:
                raise
            released = released_notebook(self.config, info["assignment"], info["notebook"])
            self.log.warning("%s is not a valid notebook (%s: %s); grading the student's files "
                             "with the released %s instead", filename, type(exc).__name__,
                             str(exc)[:200], released.name)
            filename = str(released)
        return super().from_filename(filename, resources, **kw)


class UseReleasedCells(NbGraderPreprocessor):
    """Replace the submitted notebook by the released one (cells, metadata; no outputs)."""

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        released = released_notebook(self.config, info["assignment"], info["notebook"])
        if not released.is_file():  # nbgrader skips notebooks it does not know; be safe anyway
            raise FileNotFoundError(f"no released notebook {released}: run "
                                    f"`nbgrader generate_assignment {info['assignment']}` first")
        clean = nbformat.read(released, as_version=4)
        answers = written_answers(nb)
        for cell in clean.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            elif is_written_answer(cell):  # a written answer: the student's text, nothing else
                cell.source = answers.get(cell.metadata["nbgrader"]["grade_id"], cell.source)
        nb.cells, nb.metadata = clean.cells, clean.metadata
        return nb, resources


def is_written_answer(cell) -> bool:
    """A manually graded markdown answer cell (vislab.written's, marked by `nbgrader init`)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return (cell.get("cell_type") == "markdown" and isinstance(meta, dict)
            and bool(meta.get("solution")) and bool(meta.get("grade")))


def written_answers(nb) -> dict[str, str]:
    """grade_id -> the text of the submitted notebook's answer cell. Only the text is kept: the
    released cell (type, metadata, points, checksum) replaces everything else about it."""
    answers = {}
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell, dict) else {}
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if isinstance(grade_id, str) and grade_id not in answers:
            source = cell.get("source", "")
            answers[grade_id] = "".join(source) if isinstance(source, list) else str(source)
    return answers


class GradeWithVislab(NbGraderPreprocessor):
    """Grade the submission's lab files in vislab's sandbox; write points under grade cells."""

    labs = Dict({}, help="assignment name -> vislab lab name").tag(config=True)
    memory_gib = Float(3.0, help="memory per submission's sandbox, GiB").tag(config=True)
    timeout_scale = Float(1.0, help="multiplies every check's time limit").tag(config=True)
    seed = Integer(0, help="draws every check's inputs (same seed, same scores)").tag(config=True)

    def preprocess(self, nb, resources):
        from vislab.autograde import Submission, grade_submission
        from vislab.grading import load_lab
        from vislab.sandbox import Limits

        info = resources["nbgrader"]
        lab_name = self.labs.get(info["assignment"])
        grade_cells = [c for c in nb.cells
                       if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]
        if not lab_name or not grade_cells:
            return nb, resources  # not a vislab notebook: nothing is run, nothing is graded
        coursedir = CourseDirectory(config=self.config)
        submitted = Path(coursedir.format_path(coursedir.submitted_directory, info["student"],
                                               info["assignment"]))
        lab = load_lab(lab_name)
        limits = Limits(memory=int(self.memory_gib * 2**30), timeout_scale=self.timeout_scale)
        workdir = Path(tempfile.mkdtemp(prefix="vislab-nbgrader-"))
        try:
            rep = grade_submission(lab, Submission("submission", info["student"], submitted),
                                   workdir, limits,
                                   hide=(Path(coursedir.root).resolve(),), seed=self.seed)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self.log.info("vislab graded %s/%s: %g/%g points (%s)", info["student"],
                      info["assignment"], rep["earned"], rep["possible"],
                      "; ".join(rep["protections"]) or "no protections recorded")
        rows = {grade_id(r["task"]): r for r in rep["tasks"]}
        for cell in grade_cells:
            cell.outputs = self._outputs(cell, rows.get(cell.metadata["nbgrader"]["grade_id"]),
                                         rep)
            cell.execution_count = None
        return nb, resources

    @staticmethod
    def _outputs(cell, row: dict | None, rep: dict) -> list:
        max_points = float(cell.metadata["nbgrader"].get("points", 0))
        if row is None:
            return [new_output("error", ename="NotGraded", evalue="vislab has no task for this "
                               "cell", traceback=[])]
        checks = [c for c in rep["checks"] if c["task"] == row["task"]]
        lines = [f"{row['task']}: {row['earned']:g}/{row['possible']:g} {row['status']}"]
        lines += [f"  {c['check']}: {c['status']}" + (f" - {c['message']}" if c["message"] else "")
                  for c in checks]
        fraction = row["earned"] / row["possible"] if row["possible"] else 0.0
        points = round(min(max(fraction, 0.0), 1.0) * max_points, 4)
        return [new_output("stream", name="stdout", text="\n".join(lines) + os.linesep),
                new_output("execute_result", data={"text/plain": f"{points:g}"},
                           execution_count=None)]
