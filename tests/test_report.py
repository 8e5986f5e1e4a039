"""`vislab report`: what the class got wrong, counted exactly on a generated batch (the
solution, the skeleton, and copies of the solution with named mistakes from tests/test_vit.py)."""
import csv
import json

import pytest
from conftest import variant
from test_vit import MISTAKES

from vislab import LABS_DIR, SOLUTIONS_DIR
from vislab.cli import main
from vislab.grading import grade, load_lab, report
from vislab.report import summarize_batch, write_report

LAB = load_lab("vit")
TASKS = ["vit.attention", "vit.distill"]
BATCH = {  # student: the mistakes in their copy of the solution
    "solution": [], "no_scale_a": ["missing 1/sqrt(d) scale"],
    "no_scale_b": ["missing 1/sqrt(d) scale"], "softmax_queries": ["softmax over the queries"],
    "kd_no_t2": ["KD without T^2"], "both": ["missing 1/sqrt(d) scale", "KD without T^2"],
}


def graded(folder, sid: str) -> dict:
    results = [r for t in TASKS for r in grade(LAB, folder, t)]
    rep = report(LAB, folder, results)
    rep.update(student=sid, name=sid)
    return rep


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    base = tmp_path_factory.mktemp("class")
    reports = [graded(LABS_DIR / "vit", "skeleton")]
    for sid, mistakes in BATCH.items():
        edits = {}
        for name in mistakes:
            _, file, old, new, _ = MISTAKES[name]
            edits.setdefault(file, []).append((old, new))
        reports.append(graded(variant(base / sid, "vit", edits), sid))
    out = base / "results"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"lab": "vit", "reports": reports}))
    return out, reports


def test_counts_per_task_are_exact(results):
    _, reports = results
    counts = summarize_batch(reports, TASKS)
    assert counts["students"] == 7
    assert dict(counts["per_task"]["vit.attention"]) == {"passed": 2, "failed": 4, "not implemented": 1}
    assert dict(counts["per_task"]["vit.distill"]) == {"passed": 4, "failed": 2, "not implemented": 1}
    assert counts["mean"]["vit.distill"] == pytest.approx(4 * LAB.points("vit.distill") / 7)


def test_each_named_mistake_is_counted_once_per_student(results):
    _, reports = results
    mistakes = summarize_batch(reports, TASKS)["mistakes"]
    by_words = {words: sum(k for (task, m), k in mistakes.items() if words in m)
                for words in ("1/sqrt(head_dim) scale", "softmax over the queries", "without the T^2")}
    assert by_words == {"1/sqrt(head_dim) scale": 3, "softmax over the queries": 1, "without the T^2": 2}
    assert all(task in TASKS for task, _ in mistakes)


def test_failures_without_a_name_are_grouped_by_check(results):
    _, reports = results
    unnamed = summarize_batch(reports, TASKS)["unnamed"]
    raw = {}
    for rep in reports:
        for c in rep["checks"]:
            if c["status"] == "failed" and not c["mistake"]:
                raw[(c["task"], c["check"])] = raw.get((c["task"], c["check"]), 0) + 1
    assert dict(unnamed) == raw


def test_report_files_hold_counts_and_no_student_names_by_default(results):
    out, _ = results
    assert main(["report", str(out)]) == 0
    text = (out / "class_report.md").read_text()
    assert "| 3 | attention without the 1/sqrt(head_dim) scale | `vit.attention` | 3. `vit.attention`" in text
    assert "(class_report.png)" in text and (out / "class_report.png").stat().st_size > 1000
    for sid in BATCH:
        assert sid not in text
    rows = list(csv.DictReader(open(out / "class_report.csv")))
    task_row = next(r for r in rows if r["kind"] == "task" and r["task"] == "vit.attention")
    assert (task_row["passed"], task_row["failed"], task_row["not implemented"]) == ("2", "4", "1")
    write_report(out, names=True)
    assert "no_scale_a, no_scale_b, both" in (out / "class_report.md").read_text()


def test_report_on_a_folder_without_results_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"no {tmp_path / 'report.json'}" in err and "Traceback" not in err
