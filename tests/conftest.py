"""Shared helpers: copies of a lab's solution with one edit, graded task by task."""
import shutil
from pathlib import Path

import pytest

from vislab import SOLUTIONS_DIR
from vislab.grading import Lab, grade, load_lab, summarize


def variant(tmp_path: Path, lab: str, edits: dict[str, list[tuple[str, str]]]) -> Path:
    """A copy of solutions/<lab> with each (old, new) replacement made once in its file."""
    folder = tmp_path / lab
    shutil.copytree(SOLUTIONS_DIR / lab, folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name, replacements in edits.items():
        path = folder / name
        text = path.read_text()
        for old, new in replacements:
            assert text.count(old) == 1, f"{name}: expected {old!r} once in the solution"
            text = text.replace(old, new)
        path.write_text(text)
    return folder


def grade_task(lab: str, folder: Path, task: str) -> dict:
    """The task's row of the grade table (status, earned, possible, message)."""
    checks = load_lab(lab)
    rows = summarize(checks, grade(checks, folder, task))
    assert len(rows) == 1
    return rows[0]


def grade_task_messages(lab: str, folder: Path, task: str, skip=frozenset()) -> tuple[dict, str]:
    """The task's row and every failing check's message joined (the row shows only the first);
    the checks named in `skip` (slow training checks a test does not need) are left out."""
    checks = load_lab(lab)
    checks = Lab(checks.name, checks.tasks, [c for c in checks.checks if c.name not in skip])
    results = grade(checks, folder, task)
    rows = summarize(checks, results)
    assert len(rows) == 1
    return rows[0], " | ".join(r.message for r in results if r.status != "passed")


def by_task(cases: dict) -> list:
    """Each case tagged with its task: `pytest -m task` selects, `-k vit.attention` filters."""
    return [pytest.param(name, marks=pytest.mark.task(case[0]), id=f"{case[0]}: {name}")
            for name, case in cases.items()]


@pytest.fixture
def make_variant(tmp_path):
    return lambda lab, edits: variant(tmp_path, lab, edits)
