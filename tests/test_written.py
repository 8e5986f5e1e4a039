"""Written questions (issue 19): every lab's handout, notebook and docs page follow the one
format of vislab.written, and `vislab grade` lists the questions as answered / not answered
without scoring them. The nbgrader side (manually graded cells) is in tests/test_nbgrader.py.

Every lab folder in solutions/ is picked up. A lab whose handout has no `## Written questions`
section yet is skipped with that reason, except the finished labs below, for which it fails."""
import json
import shutil
from pathlib import Path

import pytest

from vislab import LABS_DIR, REPO_ROOT, SOLUTIONS_DIR
from vislab import written
from vislab.cli import main
from vislab.written import (INSTRUCTORS, PLACEHOLDER, SECTION, WrittenFormatError, is_answered,
                            notebook_problems, parse_handout, strip_instructor_sections)

FINISHED = ["vit", "swin_cnn", "unet", "vae", "slots", "seq2seq"]  # must ask written questions
LABS = sorted(p.name for p in SOLUTIONS_DIR.iterdir()
              if p.is_dir() and ((p / "README.md").is_file() or (p / "__init__.py").is_file()))
DOCS = REPO_ROOT / "docs" / "labs"


def lab_questions(lab: str) -> list[written.Question]:
    if lab not in FINISHED and not (SOLUTIONS_DIR / lab / "README.md").is_file():
        pytest.skip(f"solutions/{lab}/ has no handout (README.md) yet: a lab in progress")
    qs = written.questions(lab, SOLUTIONS_DIR)
    if not qs:
        if lab in FINISHED:
            pytest.fail(f"solutions/{lab}/README.md has no '{SECTION}' section: every finished "
                        f"lab ends its handout with 2-4 written questions")
        pytest.skip(f"solutions/{lab}/README.md has no '{SECTION}' section yet (a lab in "
                    f"progress; add it before the lab is finished)")
    return qs


def test_the_finished_labs_exist():
    assert set(FINISHED) <= set(LABS)


@pytest.mark.parametrize("lab", LABS)
def test_handout_asks_two_to_four_questions(lab):
    qs = lab_questions(lab)
    assert 2 <= len(qs) <= 4, f"{lab}: {len(qs)} written questions; ask 2 to 4"
    assert [q.id for q in qs] == [f"{lab}.q{n}" for n in range(1, len(qs) + 1)]
    assert all(1 <= q.points <= 3 and q.title and len(q.text) > 80 for q in qs)
    # the released handout asks the same (vislab release copies it)
    assert written.questions(lab, LABS_DIR) == qs


@pytest.mark.parametrize("lab", LABS)
def test_notebook_ends_with_each_question_and_its_answer_cell(lab):
    qs = lab_questions(lab)
    for root, solution in ((SOLUTIONS_DIR, True), (LABS_DIR, False)):
        path = root / lab / f"{lab}.ipynb"
        if lab not in FINISHED and not path.is_file():
            pytest.skip(f"no {path.relative_to(REPO_ROOT)} yet (a lab in progress)")
        nb = json.loads(path.read_text())
        assert notebook_problems(nb, lab, qs, str(path), solution) == []
        answers = nb["cells"][-2 * len(qs) + 1::2]
        assert [c["metadata"][written.META]["written"] for c in answers] == [q.id for q in qs]
        assert all("".join(c["source"]) == PLACEHOLDER for c in answers)


@pytest.mark.parametrize("lab", LABS)
def test_docs_page_tells_instructors_what_a_good_answer_contains(lab):
    qs = lab_questions(lab)
    page = DOCS / f"{lab}.md"
    if lab not in FINISHED and not page.is_file():
        pytest.skip(f"no docs/labs/{lab}.md yet (a lab in progress): it will need '{INSTRUCTORS}'")
    assert page.is_file(), f"no docs/labs/{lab}.md"
    text = page.read_text()
    assert f"\n{INSTRUCTORS}\n" in text, f"docs/labs/{lab}.md has no '{INSTRUCTORS}' section"
    section = text[text.index(INSTRUCTORS):]
    section = section[:section.find("\n## ", 1) + 1 or None]
    for q in qs:  # each question named, by its id or its title
        assert q.id in section or q.title.lower() in section.lower(), \
            f"docs/labs/{lab}.md: the instructors' section names neither {q.id} nor {q.title!r}"
    student = strip_instructor_sections(text)
    assert INSTRUCTORS not in student and student.startswith(text[:text.index(INSTRUCTORS)].rstrip())


# ------------------------------------------------------------------------------ the format

GOOD = """# Lab

## 1. a task

```
## not a heading (in a fence)
```

## Written questions

Answer them in the notebook.

### demo.q1 (1 point): one thing
Why?

More lines.

### demo.q2 (3 points): another
How?
"""


def test_parse_handout_reads_ids_points_titles_and_text():
    q1, q2 = parse_handout(GOOD, "demo")
    assert (q1.id, q1.points, q1.title, q1.text) == ("demo.q1", 1, "one thing", "Why?\n\nMore lines.")
    assert (q2.id, q2.points, q2.title, q2.text) == ("demo.q2", 3, "another", "How?")
    assert q1.heading == "### demo.q1 (1 point): one thing"
    assert parse_handout("# Lab\n\n## 1. a task\n", "demo") == []


@pytest.mark.parametrize("text, words", [
    (GOOD.replace("demo.q2 (3 points)", "demo.q3 (3 points)"), "number them demo.q1, demo.q2"),
    (GOOD.replace("demo.q2 (3 points)", "other.q2 (3 points)"), "number them"),
    (GOOD.replace("(3 points)", "(4 points)"), "worth 4 points"),
    (GOOD.replace("(1 point)", "(0 points)"), "worth 0 points"),
    (GOOD.replace("### demo.q2 (3 points): another", "### demo.q2: another"), "not a question heading"),
    (GOOD.replace("### demo.q2", "#### demo.q2"), "not a question heading"),
    (GOOD + "\n## Appendix\n", "must be the handout's last section"),
    (GOOD + "\n## Written questions\n", "2 '## Written questions' sections"),
    (GOOD.replace("How?\n", ""), "demo.q2 has a heading but no question text"),
    ("# Lab\n\n## Written questions\n\nNothing yet.\n", "has no question"),
])
def test_a_malformed_section_is_one_clear_error(text, words):
    with pytest.raises(WrittenFormatError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_handout(text, "demo")


@pytest.mark.parametrize("source, answered", [
    (PLACEHOLDER, False), (f"  {PLACEHOLDER}\n", False), ("", False), ("   \n", False),
    ([], False), (["YOUR ANSWER ", "HERE"], False),
    ("Attention mixes every token.", True), ([f"{PLACEHOLDER}\n", "but also this"], True),
])
def test_answered_means_anything_but_the_placeholder(source, answered):
    assert is_answered({"cell_type": "markdown", "metadata": {}, "source": source}) is answered


def test_notebook_problems_name_what_is_wrong():
    qs = parse_handout(GOOD, "demo")
    nb = {"cells": [{"cell_type": "code", "source": "x = 1", "metadata": {}}]
          + written.question_cells("demo", qs)}
    assert notebook_problems(nb, "demo", qs) == []
    nb["cells"][-1]["source"] = "an answer"
    assert "exactly 'YOUR ANSWER HERE'" in notebook_problems(nb, "demo", qs)[0]
    assert notebook_problems(nb, "demo", qs, solution=False) == []
    swapped = dict(nb, cells=nb["cells"][:-4] + nb["cells"][-2:] + nb["cells"][-4:-2])
    assert any("demo.q1's markdown answer cell" in p for p in notebook_problems(swapped, "demo", qs))
    extra = dict(nb, cells=nb["cells"] + [dict(nb["cells"][-1], metadata={"vislab": {"written": "demo.q9"}})])
    assert any("does not ask" in p for p in notebook_problems(extra, "demo", qs))
    edited = json.loads(json.dumps(nb))
    edited["cells"][-2]["source"] = ["### demo.q2 (3 points): another\n", "\n", "Changed?"]
    assert any("as the handout asks it" in p for p in notebook_problems(edited, "demo", qs, solution=False))


def test_sync_notebook_rewrites_the_cells_from_the_handout(tmp_path):
    shutil.copytree(SOLUTIONS_DIR / "vit", tmp_path / "vit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    notebook = tmp_path / "vit" / "vit.ipynb"
    original = notebook.read_text()
    written.sync_notebook("vit", tmp_path)
    assert notebook.read_text() == original  # the shipped notebook is what sync writes
    readme = tmp_path / "vit" / "README.md"
    readme.write_text(readme.read_text().replace("vit.q4 (2 points)", "vit.q4 (1 point)"))
    written.sync_notebook("vit", tmp_path)
    nb = json.loads(notebook.read_text())
    assert "".join(nb["cells"][-2]["source"]).startswith("### vit.q4 (1 point): ")
    assert len(nb["cells"]) == len(json.loads(original)["cells"])


@pytest.mark.parametrize("page, student", [
    (f"# A\n\n{INSTRUCTORS}\n\n- secret\n", "# A\n"),
    (f"# A\n\n{INSTRUCTORS}\n\n```\n## in a fence\n```\n- secret\n\n# B\n", "# A\n\n# B\n"),
    (f"# A\n\n{INSTRUCTORS}\n\n### q1\n- secret\n\n## C\n", "# A\n\n## C\n"),
    ("# A\n\n## For instructors\n\nkept\n", "# A\n\n## For instructors\n\nkept\n"),
])
def test_strip_instructor_sections(page, student):
    assert strip_instructor_sections(page) == student


def test_strip_instructors_copies_docs_without_the_sections(tmp_path, capsys):
    docs = tmp_path / "docs"
    (docs / "labs").mkdir(parents=True)
    (docs / "labs" / "a.md").write_text(f"# A\n\n## Results\n\nx\n\n{INSTRUCTORS}\n\n- secret\n\n"
                                        f"## Later\n\ny\n")
    (docs / "index.md").write_text("# Home\n")
    assert written.main(["strip-instructors", str(docs), str(tmp_path / "out")]) == 0
    assert "stripped" in capsys.readouterr().out
    assert (tmp_path / "out" / "labs" / "a.md").read_text() == "# A\n\n## Results\n\nx\n\n## Later\n\ny\n"
    assert (tmp_path / "out" / "index.md").read_text() == "# Home\n"
    assert (docs / "labs" / "a.md").read_text().count("secret") == 1  # the source is untouched
    assert written.main(["strip-instructors", str(docs), str(tmp_path / "out")]) == 2
    assert "exists" in capsys.readouterr().err


# ------------------------------------------------------------------------------ vislab grade

def answer(folder: Path, lab: str, answers: dict[str, str]) -> None:
    path = folder / f"{lab}.ipynb"
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        qid = written.written_id(cell)
        if qid in answers:
            cell["source"] = answers[qid]
    path.write_text(json.dumps(nb))


def test_grade_lists_written_questions_unscored(tmp_path, capsys):
    folder = tmp_path / "vit"
    shutil.copytree(LABS_DIR / "vit", folder, ignore=shutil.ignore_patterns("__pycache__"))
    answer(folder, "vit", {"vit.q2": "Every token attends to every other one.", "vit.q3": "  \n"})
    out_json = tmp_path / "grade.json"
    assert main(["grade", "vit", "--impl", str(folder), "--json", str(out_json)]) == 1
    out = capsys.readouterr().out
    listing = out[out.index("written questions"):]
    assert out.index("total") < out.index("written questions")  # after the code table
    lines = {line.split()[0]: line for line in listing.splitlines()[1:] if line.strip()}
    assert " answered " in lines["vit.q2"] and "not answered" not in lines["vit.q2"]
    assert all("not answered" in lines[q] for q in ("vit.q1", "vit.q3", "vit.q4"))
    assert "2 points" in lines["vit.q1"] and "3 points" in lines["vit.q3"]
    rep = json.loads(out_json.read_text())
    assert rep["possible"] == sum(c["points"] for c in rep["checks"])  # written points not in it
    assert [(q["id"], q["status"]) for q in rep["written"]["questions"]] == [
        ("vit.q1", "not answered"), ("vit.q2", "answered"), ("vit.q3", "not answered"),
        ("vit.q4", "not answered")]
    assert [q["points"] for q in rep["written"]["questions"]] == [2, 2, 3, 2]


def test_grade_survives_a_missing_or_broken_notebook(tmp_path, capsys):
    folder = tmp_path / "vit"
    shutil.copytree(LABS_DIR / "vit", folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "vit.ipynb").write_text('{"cells": [')
    assert main(["grade", "vit", "--impl", str(folder)]) == 1  # the code's verdict, not an error
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("  vit.q")]
    assert "is not a readable notebook" in out and len(rows) == 4
    assert all("not answered" in row for row in rows)
    (folder / "vit.ipynb").unlink()
    assert written.status("vit", folder)["note"].startswith("no notebook")
    assert main(["grade", "vit", "--impl", str(folder), "--task", "vit.distill"]) == 1
    assert "written questions" not in capsys.readouterr().out  # one task: the code task only


def test_a_lab_without_questions_lists_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(written, "questions", lambda lab, root=None: [])
    rep = written.status("vit", LABS_DIR / "vit")
    assert rep["questions"] == [] and written.format_status(rep) == ""
