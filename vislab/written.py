"""Written questions: what each lab asks students to explain, besides the code.

One format for every lab (issue 19):

- the handout `solutions/<lab>/README.md` ends with a section `## Written questions`, where each
  question is a heading `### <lab>.q<n> (<P> points): <short title>` followed by its text;
- the notebook `solutions/<lab>/<lab>.ipynb` ends with, per question, a markdown cell with the
  question and a markdown answer cell whose source is `YOUR ANSWER HERE` and whose metadata is
  `{"vislab": {"written": "<lab>.q<n>"}}` (`sync_notebook` writes these cells from the handout);
- `docs/labs/<lab>.md` has a section `## For instructors: what a good answer contains`, which a
  student build of the docs drops (`strip_instructor_sections`).

Written answers are never scored by vislab: `vislab grade` lists each question as "answered"
(the answer cell holds something other than `YOUR ANSWER HERE`) or "not answered", and
`vislab nbgrader init` turns the answer cells into nbgrader's manually graded cells, so the
gradebook keeps the written points apart from the code points.

    python -m vislab.written sync LAB                 # (re)write LAB's notebook cells from its handout
    python -m vislab.written strip-instructors DOCS OUT   # a copy of DOCS without the instructors' sections
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from vislab import LABS_DIR, SOLUTIONS_DIR
from vislab.errors import UsageError

SECTION = "## Written questions"
INSTRUCTORS = "## For instructors: what a good answer contains"
PLACEHOLDER = "YOUR ANSWER HERE"
META = "vislab"  # cell metadata: {"vislab": {"written": "<lab>.q<n>"}}
HEADING_RE = re.compile(r"### (?P<id>[a-z0-9_]+\.q(?P<n>[0-9]+)) \((?P<points>[0-9]+) points?\): "
                        r"(?P<title>\S.*)")
MIN_POINTS, MAX_POINTS = 1, 3


class WrittenFormatError(UsageError):
    """A handout's or notebook's written questions do not follow the format."""


@dataclass(frozen=True)
class Question:
    id: str      # "<lab>.q<n>"
    points: int
    title: str
    text: str    # the question, Markdown, without its heading

    @property
    def heading(self) -> str:
        unit = "point" if self.points == 1 else "points"
        return f"### {self.id} ({self.points} {unit}): {self.title}"


# ------------------------------------------------------------------------------ the handout

def _sections(text: str) -> list[tuple[str, int]]:
    """(heading, line index) of every level-1 or level-2 heading outside fenced code."""
    found, fence = [], None  # a fence closes only on its own kind, at least as long
    for n, line in enumerate(text.splitlines()):
        m = re.match(r"^\s*(```+|~~~+)", line)
        if m and fence is None:
            fence = m[1]
        elif m and m[1][0] == fence[0] and len(m[1]) >= len(fence):
            fence = None
        elif fence is None and line.startswith(("# ", "## ")):
            found.append((line.rstrip(), n))
    return found


def parse_handout(text: str, lab: str, where: str = "README.md") -> list[Question]:
    """The questions of a handout, in order; [] when it has no `## Written questions` section.
    Anything in the section that does not follow the format is a WrittenFormatError."""
    sections = _sections(text)
    starts = [n for heading, n in sections if heading == SECTION]
    if not starts:
        return []
    if len(starts) > 1:
        raise WrittenFormatError(f"{where}: {len(starts)} '{SECTION}' sections; keep one, at the end")
    after = [heading for heading, n in sections if n > starts[0]]
    if after:
        raise WrittenFormatError(f"{where}: '{SECTION}' must be the handout's last section, but "
                                 f"{after[0]!r} follows it; move the questions to the end")
    lines = text.splitlines()[starts[0] + 1:]
    questions: list[Question] = []
    preamble: list[str] = []
    current: dict | None = None
    body: list[str] = []

    def close() -> None:
        if current is not None:
            questions.append(Question(current["id"], int(current["points"]),
                                      current["title"].strip(), "\n".join(body).strip()))

    for line in lines:
        if line.startswith("#"):
            match = HEADING_RE.fullmatch(line.rstrip())
            if not match:
                raise WrittenFormatError(
                    f"{where}: {line.strip()!r} in '{SECTION}' is not a question heading; write "
                    f"'### {lab}.q<n> (<points> points): <short title>'")
            close()
            current, body = match.groupdict(), []
        elif current is None:
            preamble.append(line)
        else:
            body.append(line)
    close()
    _check_questions(questions, lab, where)
    return questions


def _check_questions(questions: list[Question], lab: str, where: str) -> None:
    if not questions:
        raise WrittenFormatError(f"{where}: '{SECTION}' has no question; add "
                                 f"'### {lab}.q1 (<points> points): <short title>' and its text")
    for n, q in enumerate(questions, 1):
        if q.id != f"{lab}.q{n}":
            raise WrittenFormatError(f"{where}: question {n} is {q.id!r}; number them "
                                     f"{lab}.q1, {lab}.q2, ... in order")
        if not MIN_POINTS <= q.points <= MAX_POINTS:
            raise WrittenFormatError(f"{where}: {q.id} is worth {q.points} points; a written "
                                     f"question is worth {MIN_POINTS} to {MAX_POINTS}")
        if not q.text:
            raise WrittenFormatError(f"{where}: {q.id} has a heading but no question text")


def handout(lab: str, root: Path | None = None) -> Path:
    """The handout whose questions count: the released one (labs/, what students and a
    grading image have), else the solution's."""
    if root is not None:
        return Path(root) / lab / "README.md"
    released = LABS_DIR / lab / "README.md"
    return released if released.is_file() else SOLUTIONS_DIR / lab / "README.md"


def questions(lab: str, root: Path | None = None) -> list[Question]:
    """The lab's written questions ([] when its handout has none, or there is no handout)."""
    path = handout(lab, root)
    if not path.is_file():
        return []
    return parse_handout(path.read_text(encoding="utf-8"), lab, str(path))


# ------------------------------------------------------------------------------ the notebook

def cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def written_id(cell: dict) -> str | None:
    """The question id an answer cell answers, from its metadata; None for other cells."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    meta = meta.get(META) if isinstance(meta, dict) else None
    qid = meta.get("written") if isinstance(meta, dict) else None
    return qid if isinstance(qid, str) else None


def answer_cells(nb: dict) -> dict[str, list[dict]]:
    """Question id -> the notebook's answer cells for it (normally one)."""
    cells: dict[str, list[dict]] = {}
    for cell in nb.get("cells", []) if isinstance(nb, dict) else []:
        qid = written_id(cell)
        if qid is not None:
            cells.setdefault(qid, []).append(cell)
    return cells


def is_answered(cell: dict) -> bool:
    """An answer: the cell holds something other than the placeholder (spaces do not count)."""
    text = cell_source(cell).strip()
    return bool(text) and text != PLACEHOLDER


def question_cells(lab: str, qs: list[Question]) -> list[dict]:
    """The cells a notebook ends with: an introduction, then per question its text and an
    empty answer cell."""
    intro = (f"{SECTION}\n\nAnswer each question in the cell below it (Markdown; replace "
             f"`{PLACEHOLDER}`).\nThese answers are graded by hand, not by `vislab grade`, which "
             f"only lists them as\nanswered or not answered. Quote what you measured in this lab.")
    cells = [_markdown(f"{lab}-written", intro)]
    for q in qs:
        slug = q.id.replace(".", "-")
        cells.append(_markdown(slug, f"{q.heading}\n\n{q.text}"))
        cells.append(_markdown(f"{slug}-answer", PLACEHOLDER, {META: {"written": q.id}}))
    return cells


def _markdown(cell_id: str, text: str, metadata: dict | None = None) -> dict:
    return {"cell_type": "markdown", "id": cell_id, "metadata": metadata or {},
            "source": text.splitlines(keepends=True)}


def notebook_problems(nb: dict, lab: str, qs: list[Question], where: str = "notebook",
                      solution: bool = True) -> list[str]:
    """What is wrong with a notebook's written cells against the handout's questions: [] when
    it ends with, per question, the question's cell and then its answer cell, in the handout's
    order (and, for the solution notebook, every answer cell still the placeholder)."""
    cells = nb.get("cells", []) if isinstance(nb, dict) else []
    asked = {q.id for q in qs}
    found = answer_cells(nb)
    problems = [f"{where}: an answer cell for {qid}, a question the handout does not ask"
                for qid in found if qid not in asked]
    problems += [f"{where}: {len(found[qid])} answer cells for {qid}; keep one"
                 for qid in found if qid in asked and len(found[qid]) > 1]
    tail = cells[-2 * len(qs):] if qs else []
    if len(tail) < 2 * len(qs):
        return problems + [f"{where}: {len(cells)} cells, too few to end with the "
                           f"{len(qs)} questions' cells"]
    for n, q in enumerate(qs):
        ask, answer = tail[2 * n], tail[2 * n + 1]
        if written_id(answer) != q.id or answer.get("cell_type") != "markdown":
            problems.append(f"{where}: cell {len(cells) - 2 * len(qs) + 2 * n + 1} must be "
                            f"{q.id}'s markdown answer cell, with metadata "
                            f"{{\"{META}\": {{\"written\": \"{q.id}\"}}}} (the notebook ends "
                            f"with each question and its answer cell, in the handout's order)")
        elif solution and cell_source(answer).strip() != PLACEHOLDER:
            problems.append(f"{where}: {q.id}'s answer cell must be exactly '{PLACEHOLDER}'")
        if ask.get("cell_type") != "markdown" or \
                cell_source(ask).strip() != f"{q.heading}\n\n{q.text}".strip():
            problems.append(f"{where}: the cell before {q.id}'s answer cell must be the "
                            f"question as the handout asks it (`python -m vislab.written sync "
                            f"{lab}` writes it)")
    return problems


def sync_notebook(lab: str, root: Path = SOLUTIONS_DIR) -> Path:
    """Rewrite `<root>/<lab>/<lab>.ipynb`'s written cells from the handout: the old ones (the
    intro and every question and answer cell) are removed, the handout's appended."""
    path = Path(root) / lab / f"{lab}.ipynb"
    qs = questions(lab, root)
    nb = json.loads(path.read_text(encoding="utf-8"))
    ours = {c["id"] for c in question_cells(lab, qs)} | {f"{lab}-written"}
    nb["cells"] = [c for c in nb["cells"] if c.get("id") not in ours and written_id(c) is None
                   and not (c.get("cell_type") == "markdown" and
                            re.match(rf"### {re.escape(lab)}\.q[0-9]+ ", cell_source(c)))]
    nb["cells"] += question_cells(lab, qs) if qs else []
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ vislab grade

def status(lab: str, folder: Path) -> dict:
    """What `vislab grade` reports: each question's points and whether `folder/<lab>.ipynb`
    answers it. Never raises for the student's notebook (missing, not JSON): it says so in
    `note` and counts every question as not answered."""
    try:
        qs = questions(lab)
    except WrittenFormatError as exc:  # the kit's bug, not the student's: say it, grade on
        return {"notebook": None, "note": f"the handout's questions cannot be read: {exc}",
                "questions": []}
    notebook = Path(folder) / f"{lab}.ipynb"
    note, nb = "", {}
    if qs:
        try:
            nb = json.loads(notebook.read_text(encoding="utf-8"))
        except FileNotFoundError:
            note = f"no notebook {notebook}: every question counts as not answered"
        except (OSError, ValueError) as exc:
            note = (f"{notebook} is not a readable notebook ({type(exc).__name__}): every "
                    f"question counts as not answered")
    found = answer_cells(nb)
    rows = [dict(asdict(q), status="answered" if any(is_answered(c) for c in found.get(q.id, []))
                 else "not answered") for q in qs]
    for row in rows:
        del row["text"]
    return {"notebook": str(notebook), "note": note, "questions": rows}


def format_status(rep: dict) -> str:
    """The list printed after the code table ('' for a lab without written questions)."""
    rows = rep["questions"]
    if not rows and not rep["note"]:
        return ""
    total = sum(r["points"] for r in rows)
    lines = [f"written questions ({total:g} points, graded by hand, not scored here; answer them "
             f"in {Path(rep['notebook']).name if rep['notebook'] else 'the notebook'}):"]
    width = max([len(r["id"]) for r in rows] + [0])
    for r in rows:
        points = f"{r['points']:g} point{'' if r['points'] == 1 else 's'}"
        lines.append(f"  {r['id']:<{width}}  {points:>8}  {r['status']:<12}  {r['title']}")
    if rep["note"]:
        lines.append(f"  note: {rep['note']}")
    return "\n".join(lines)


def report(lab: str, folder: Path, show: bool = True) -> dict:
    rep = status(lab, folder)
    text = format_status(rep)
    if show and text:
        print(f"\n{text}")
    return rep


# ------------------------------------------------------------------------------ the docs

def strip_instructor_sections(text: str) -> str:
    """The docs page without its `## For instructors: what a good answer contains` section
    (from that heading up to the next `#` or `##` heading, or to the end)."""
    lines = text.splitlines(keepends=True)
    bounds = _sections(text) + [("", len(lines))]
    drop = [(start, end) for (heading, start), (_, end) in zip(bounds, bounds[1:])
            if heading == INSTRUCTORS]
    if not drop:
        return text
    keep = [line for n, line in enumerate(lines) if not any(a <= n < b for a, b in drop)]
    return "".join(keep).rstrip("\n") + "\n"


def strip_instructors_tree(docs: Path, out: Path) -> list[Path]:
    """Copy `docs` to `out` (which must not exist) with every Markdown page's instructors'
    section removed; return the pages that had one."""
    docs, out = Path(docs), Path(out)
    if not docs.is_dir():
        raise UsageError(f"{docs} is not a folder: name the docs folder to copy")
    if out.exists():
        raise UsageError(f"{out} exists; name a new folder (nothing is overwritten)")
    shutil.copytree(docs, out)
    stripped = []
    for page in sorted(out.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        new = strip_instructor_sections(text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            stripped.append(page)
    return stripped


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vislab.written",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sync", help="write LAB's notebook question and answer cells from its "
                                    "handout (solutions/LAB/)")
    p.add_argument("lab")
    p = sub.add_parser("strip-instructors", help="copy DOCS to OUT without the instructors' "
                                                 "sections")
    p.add_argument("docs", type=Path)
    p.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "sync":
            if not (SOLUTIONS_DIR / args.lab / f"{args.lab}.ipynb").is_file():
                raise UsageError(f"no notebook solutions/{args.lab}/{args.lab}.ipynb")
            print(f"wrote {sync_notebook(args.lab)}")
        else:
            for page in strip_instructors_tree(args.docs, args.out):
                print(f"stripped {page}")
    except UsageError as exc:
        print(f"vislab: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
