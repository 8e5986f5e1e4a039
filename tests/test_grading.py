"""The grader itself: every lab's skeleton scores 0 as "not implemented", every solution full
marks; --impl decides what is graded; a broken submission never crashes the grader."""
import json
import shutil

import pytest

from vislab import LABS_DIR, SOLUTIONS_DIR
from vislab.cli import main
from vislab.grading import (Check, Lab, Student, grade, lab_names, load_lab, report,
                            run_check, summarize)

LABS = lab_names()


def test_every_lab_has_a_grader_a_solution_and_a_skeleton():
    assert "vit" in LABS
    for lab in LABS:
        assert (SOLUTIONS_DIR / lab).is_dir() and (LABS_DIR / lab).is_dir(), lab


@pytest.mark.parametrize("lab", LABS)
def test_skeleton_scores_zero_and_every_check_is_not_implemented(lab):
    checks = load_lab(lab)
    results = grade(checks, LABS_DIR / lab)
    assert results, f"{lab} has no checks"
    wrong = [(r.check, r.status, r.message) for r in results if r.status != "not implemented"]
    assert not wrong, f"on the skeleton these checks did not report 'not implemented': {wrong}"
    assert sum(r.earned for r in results) == 0
    assert {row["status"] for row in summarize(checks, results)} == {"not implemented"}


@pytest.mark.parametrize("lab", LABS)
def test_solution_scores_full_marks(lab):
    checks = load_lab(lab)
    results = grade(checks, SOLUTIONS_DIR / lab)
    failed = [(r.check, r.status, r.message) for r in results if r.status != "passed"]
    assert not failed
    rep = report(checks, SOLUTIONS_DIR / lab, results)
    assert rep["earned"] == rep["possible"] > 0


@pytest.mark.parametrize("lab", LABS)
def test_every_task_has_points_and_a_todo_in_the_skeleton(lab):
    checks = load_lab(lab)
    skeleton = "".join(p.read_text() for p in (LABS_DIR / lab).rglob("*.py"))
    for task in checks.tasks:
        assert checks.points(task) > 0, f"{task} has no graded check"
        assert f"TODO({task})" in skeleton, f"{task} has no TODO in labs/{lab}"


def test_impl_labs_grades_labs_not_solutions():
    """The modules graded for --impl labs are read from labs/, never from solutions/."""
    student = Student(LABS_DIR / "vit")
    model = student._lab.model
    assert model.__file__ == str(LABS_DIR / "vit" / "model.py")
    solution = Student(SOLUTIONS_DIR / "vit")._lab.model
    assert solution.__file__ == str(SOLUTIONS_DIR / "vit" / "model.py")
    assert model is not solution and student._lab.model is model  # loaded side by side


def test_a_lab_copy_without_a_module_does_not_fall_back(tmp_path):
    shutil.copytree(SOLUTIONS_DIR / "vit", tmp_path / "vit")
    (tmp_path / "vit" / "distill.py").unlink()
    rows = summarize(load_lab("vit"), grade(load_lab("vit"), tmp_path / "vit", "vit.distill"))
    assert rows[0]["status"] == "error"
    assert "distill.py is missing from vit/: copy it from the lab's skeleton" in rows[0]["message"]
    assert "_vislab_impl_" not in rows[0]["message"]


def test_another_labs_folder_is_refused(capsys):
    assert main(["grade", "vit", "--impl", str(LABS_DIR / "swin_cnn")]) == 2
    err = capsys.readouterr().err
    assert "does not look like the vit lab" in err and "looks like the swin_cnn lab" in err


# ----------------------------------------------------------- the grader survives bad code

def lab_with(check_fn, timeout=5.0) -> Lab:
    lab = Lab("demo", {"demo.task": "a task"})
    lab.check("demo.task", points=1, timeout=timeout)(check_fn)
    return lab


def student_folder(tmp_path, source: str):
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "model.py").write_text(source)
    return folder


def call_model(lab):
    return lab.model.f()


def graded(tmp_path, source, timeout=5.0):
    check = lambda student, g: student.run(call_model)  # noqa: E731
    lab = lab_with(check, timeout)
    return grade(lab, student_folder(tmp_path, source))[0]


@pytest.mark.parametrize("source, status, words", [
    ("def f(:\n", "error", "SyntaxError in model.py line 1"),
    ("raise RuntimeError('boom')\n", "error", "RuntimeError at model.py:1"),
    ("import sys\nsys.exit(3)\n", "error", "sys.exit(3)"),
    ("def f():\n    raise NotImplementedError('TODO(demo.task): do it')\n", "not implemented",
     "TODO(demo.task) not implemented at model.py:2"),
    ("def f():\n    raise NotImplementedError('TODO(demo.other): x')\n", "not implemented",
     "needs demo.other"),
    ("def f():\n    while True:\n        pass\n", "timeout", "did not finish in 0.5 s"),
    ("class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n"
     "def f():\n    return AlwaysEqual()\n", "failed", "got a AlwaysEqual"),
])
def test_broken_code_gets_a_status_and_a_message(tmp_path, source, status, words):
    result = graded(tmp_path, source, timeout=0.5)
    assert result.status == status, result
    assert words in result.message, result.message
    assert result.earned == 0


def test_prints_of_the_student_do_not_reach_the_table(tmp_path, capsys):
    result = graded(tmp_path, "print('noise')\nimport sys\nprint('more', file=sys.stderr)\n"
                              "def f():\n    return 1\n")
    assert result.status == "passed"
    assert "noise" not in capsys.readouterr().out


def test_a_bug_in_a_check_is_an_error_not_a_crash(tmp_path):
    def buggy(student, g):
        return {}["missing"]
    result = grade(lab_with(buggy), student_folder(tmp_path, ""))[0]
    assert result.status == "error" and "grader error in buggy" in result.message


def test_regrading_gives_identical_scores():
    lab = load_lab("vit")
    first = [(r.check, r.status, r.message) for r in grade(lab, SOLUTIONS_DIR / "vit", "vit.attention")]
    again = [(r.check, r.status, r.message) for r in grade(lab, SOLUTIONS_DIR / "vit", "vit.attention")]
    assert first == again


# ------------------------------------------------------------------------------------ CLI

def test_cli_grade_skeleton_prints_the_table_and_fails(capsys):
    assert main(["grade", "vit", "--task", "vit.mlp"]) == 1
    out = capsys.readouterr().out
    assert "vit.mlp" in out and "not implemented" in out and "Traceback" not in out
    assert f"grading vit in {LABS_DIR / 'vit'}" in out


def test_cli_grade_solution_passes_and_writes_json(tmp_path, capsys):
    path = tmp_path / "grade.json"
    assert main(["grade", "vit", "--impl", "solutions", "--task", "vit.distill",
                 "--json", str(path)]) == 0
    rep = json.loads(path.read_text())
    assert rep["earned"] == rep["possible"] == load_lab("vit").points("vit.distill")


@pytest.mark.parametrize("argv, words", [
    (["grade", "nosuchlab"], "no lab named 'nosuchlab'; labs are: "),
    (["grade", "vit", "--task", "vit.nope"], "no task 'vit.nope' in lab vit"),
    (["grade", "vit", "--impl", "/no/such/folder"], "no folder /no/such/folder"),
    (["train", "nosuchlab"], "no folder"),
])
def test_cli_user_mistakes_are_one_line(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_check_points_add_up():
    lab = load_lab("vit")
    assert sum(c.points for c in lab.checks) == sum(lab.points(t) for t in lab.tasks)
    assert all(isinstance(c, Check) for c in lab.checks)


def test_working_in_another_checkout_is_said(tmp_path, monkeypatch, capsys):
    """vislab uses the checkout it is installed from; run from inside another checkout it says
    which one it uses instead of silently ignoring the files around the user."""
    other = tmp_path / "clone"
    for part in ("vislab", "solutions", "autograder", "labs"):
        (other / part).mkdir(parents=True)
    (other / "vislab" / "__init__.py").write_text("")
    monkeypatch.chdir(other / "labs")
    assert main(["grade", "vit", "--task", "vit.distill"]) == 1
    err = capsys.readouterr().err
    assert f"not those of {other}" in err and "pip install -e" in err
    monkeypatch.chdir(LABS_DIR)
    main(["grade", "vit", "--task", "vit.distill"])
    assert "note:" not in capsys.readouterr().err


def test_an_unwritable_json_is_refused_before_grading(tmp_path, capsys):
    assert main(["grade", "vit", "--json", str(tmp_path / "no" / "such" / "r.json")]) == 2
    assert "--json" in capsys.readouterr().err
    assert main(["grade", "vit", "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_the_source_check_finds_forbidden_calls_and_escape_hatches(tmp_path):
    """A guard in the student's process can be switched off from inside; the grader reads the
    source itself: forbidden names and the escape hatches fail, comments and strings do not."""
    from types import SimpleNamespace

    from vislab.grading import CheckFailed, expect_not_in_source, names_in_source

    folder = tmp_path / "lab"
    folder.mkdir()
    (folder / "model.py").write_text(
        "import torch\n"
        "# scaled_dot_product_attention is not allowed, says the handout\n"
        "doc = 'scaled_dot_product_attention'\n"
        "with torch._C.DisableTorchFunction():\n"
        "    y = torch.nn.functional.scaled_dot_product_attention(q, k, v)\n")
    (folder / "clean.py").write_text("x = 1  # DisableTorchFunction in a comment\n")
    student = SimpleNamespace(path=folder)
    assert names_in_source(student, ["model.py"], {"scaled_dot_product_attention"}) == [
        "model.py:5 scaled_dot_product_attention"]
    with pytest.raises(CheckFailed, match="found model.py:4 _C, model.py:4 DisableTorchFunction"):
        expect_not_in_source(student, ["model.py"], {"scaled_dot_product_attention"}, "vit.attention")
    expect_not_in_source(student, ["clean.py", "missing.py"], {"scaled_dot_product_attention"}, "t")


def test_a_labs_helper_files_are_not_labs(tmp_path, monkeypatch):
    """autograder/<lab>_<part>.py (probes, checks split along tasks) belongs to <lab>; a lab
    whose own name has an underscore (swin_cnn) is still a lab."""
    import vislab.grading as grading

    for name in ("vit", "vit_probes", "vit_references", "swin_cnn", "swin_cnn_probes", "_x"):
        (tmp_path / f"{name}.py").write_text("")
    monkeypatch.setattr(grading, "AUTOGRADER_DIR", tmp_path)
    assert grading.lab_names() == ["swin_cnn", "vit"]
