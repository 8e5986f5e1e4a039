"""Generate the student skeleton (labs/) from the reference solution (solutions/).

A solution block uses nbgrader's markers and starts with a TODO line naming its task:

    ### BEGIN SOLUTION
    # TODO(vit.attention): split the heads, softmax(q k^T / sqrt(d)) v, merge the heads.
    #   (further '#' lines continue the hint)
    q, k, v = ...
    ### END SOLUTION

In the skeleton the block becomes the hint lines plus
`raise NotImplementedError("TODO(vit.attention): ...")`. Everything outside blocks
(signatures, docstrings, shape comments) is copied unchanged. Notebooks get the same
treatment cell by cell, with outputs cleared.

A later lab that builds on an earlier one's finished code lists it in `solutions/<lab>/given.txt`,
one `FILE = LAB/FILE` per line (e.g. `swin.py = swin_cnn/swin.py`). Release writes each such
file into `solutions/<lab>/` (and so into `labs/<lab>/`) as the earlier lab's reference with its
solution markers and TODO hints removed: given code, generated from the one source, never kept
by hand. `--check` reports a given copy that differs.

Release never deletes: a file in `labs/` that `solutions/` does not have is left in place and
reported (it may be someone's work); remove it by hand if it should go.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
TODO_RE = re.compile(r"#\s*TODO\(([a-z0-9_]+(?:\.[a-z0-9_]+)*)\):\s*(.*)")
SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}
GIVEN = "given.txt"
GIVEN_HEADER = ("# Given code, written by `vislab release` from solutions/{source} (the {lab} lab's "
                "reference).\n# Do not edit: it is regenerated from there.\n")


class ReleaseError(ValueError):
    """A solution file whose markers cannot be turned into a skeleton."""


def strip_source(text: str, where: str = "<source>") -> str:
    """Replace every solution block in `text` (Python source) by its hint and a raise."""
    out: list[str] = []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == END:
            raise ReleaseError(f"{where}:{i + 1}: '{END}' without a matching '{BEGIN}'")
        if line.strip() != BEGIN:
            out.append(line)
            i += 1
            continue
        start = i
        indent = line[: len(line) - len(line.lstrip())]
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != END:
            if lines[i].strip() == BEGIN:
                raise ReleaseError(f"{where}:{i + 1}: nested '{BEGIN}' (block opened at line {start + 1})")
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ReleaseError(f"{where}:{start + 1}: '{BEGIN}' is never closed by '{END}'")
        i += 1  # skip END
        out.extend(_skeleton_block(body, indent, f"{where}:{start + 1}"))
    return "".join(out)


def _skeleton_block(body: list[str], indent: str, where: str) -> list[str]:
    first = body[0].strip() if body else ""
    match = TODO_RE.fullmatch(first)
    if not match:
        raise ReleaseError(
            f"{where}: a solution block must start with '# TODO(<lab>.<task>): <hint>', got {first!r}")
    task, hint = match.groups()
    hint_lines = [f"{indent}{first}\n"]
    for line in body[1:]:
        if not line.strip().startswith("#"):
            break
        hint_lines.append(f"{indent}{line.strip()}\n")
    # the whole hint, not its first line only (which often stops mid-sentence)
    hint = " ".join([hint] + [h.strip().lstrip("#").strip() for h in hint_lines[1:]]).strip()
    message = f"TODO({task}): {hint}" if hint else f"TODO({task})"
    return hint_lines + [f"{indent}raise NotImplementedError({message!r})\n"]


def strip_notebook(text: str, where: str = "<notebook>") -> str:
    """Strip solution blocks from each code cell and clear outputs."""
    try:
        nb = json.loads(text)
    except ValueError as exc:
        raise ReleaseError(f"{where}: not a valid notebook ({exc}); repair it or save it again "
                           f"from Jupyter") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells", []), list):
        raise ReleaseError(f"{where}: not a notebook (no list of cells)")
    for n, cell in enumerate(nb.get("cells", [])):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", []))
        stripped = strip_source(source, f"{where}[cell {n}]")
        cell["source"] = stripped.splitlines(keepends=True)
        cell["outputs"] = []
        cell["execution_count"] = None
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def unmark_source(text: str, where: str = "<source>") -> str:
    """The solution with its markers and each block's TODO hint removed: finished, given code."""
    out, lines, i = [], text.splitlines(keepends=True), 0
    while i < len(lines):
        if lines[i].strip() == BEGIN:
            i += 1
            if i < len(lines) and TODO_RE.fullmatch(lines[i].strip()):
                i += 1
                while i < len(lines) and lines[i].strip().startswith("#"):
                    i += 1
            continue
        if lines[i].strip() != END:
            out.append(lines[i])
        i += 1
    strip_source(text, where)  # the same marker errors as release
    return "".join(out)


def given_files(solutions: Path) -> dict[str, bytes]:
    """What each lab's given.txt asks for: path under `solutions` -> the file's content."""
    files = {}
    for manifest in sorted(solutions.glob(f"*/{GIVEN}")):
        lab = manifest.parent.name
        for n, line in enumerate(manifest.read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            target, eq, source = (part.strip() for part in line.partition("="))
            where = f"{lab}/{GIVEN}:{n}"
            if not eq or "/" in target or not target.endswith(".py") or source.count("/") != 1:
                raise ReleaseError(f"{where}: expected 'FILE.py = LAB/FILE.py', got {line!r}")
            path = solutions / source
            if not path.is_file() or path.parent.name == lab:
                raise ReleaseError(f"{where}: no solutions/{source} in another lab to give")
            header = GIVEN_HEADER.format(source=source, lab=path.parent.name)
            files[f"{lab}/{target}"] = (header + unmark_source(path.read_text(), source)).encode()
    return files


def render_file(path: Path, rel: str) -> bytes:
    """What `labs/<rel>` must contain, given `solutions/<rel>` at `path`."""
    if path.suffix == ".py":
        return strip_source(path.read_text(), rel).encode()
    if path.suffix == ".ipynb":
        return strip_notebook(path.read_text(), rel).encode()
    return path.read_bytes()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not SKIP_PARTS & set(p.relative_to(root).parts)
                  and p.suffix != ".pyc")


def render_tree(solutions: Path) -> dict[str, bytes]:
    """Every file of the skeleton tree, keyed by path relative to the tree root."""
    return {p.relative_to(solutions).as_posix(): render_file(p, p.relative_to(solutions).as_posix())
            for p in _files(solutions)}


def _given_drift(solutions: Path) -> list[str]:
    given = given_files(solutions)
    return [f"solutions/{rel}: given copy {'missing' if not (solutions / rel).is_file() else 'differs'}"
            for rel, data in given.items()
            if not (solutions / rel).is_file() or (solutions / rel).read_bytes() != data]


def drift(solutions: Path, labs: Path) -> list[str]:
    """Files under `labs` (and given copies under `solutions`) that differ from what release
    would write (sorted, with a reason)."""
    expected = render_tree(solutions)
    for rel, data in given_files(solutions).items():
        expected[rel] = data  # what the given copy renders to, once release has written it
    actual = {p.relative_to(labs).as_posix(): p for p in _files(labs)} if labs.exists() else {}
    problems = [f"{rel}: missing" for rel in expected if rel not in actual]
    problems += [f"{rel}: differs" for rel, p in actual.items()
                 if rel in expected and p.read_bytes() != expected[rel]]
    problems += [f"{rel}: not in solutions/" for rel in actual if rel not in expected]
    return sorted(problems + _given_drift(solutions))


def _write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


def release(solutions: Path, labs: Path) -> tuple[list[str], list[str]]:
    """Write the given copies into `solutions`, then `labs` from `solutions`. Returns the paths
    written (given copies as solutions/..., the rest relative to `labs`) and the files of `labs`
    that `solutions` lacks, which are kept, never deleted."""
    written = []
    for rel, data in given_files(solutions).items():
        if not (solutions / rel).is_file() or (solutions / rel).read_bytes() != data:
            _write(solutions / rel, data)
            written.append(f"solutions/{rel}")
    expected, kept = render_tree(solutions), []
    for problem in drift(solutions, labs):
        rel = problem.split(":")[0]
        if rel in expected:
            _write(labs / rel, expected[rel])
            written.append(rel)
        elif not rel.startswith("solutions/"):
            kept.append(rel)
    return written, kept
