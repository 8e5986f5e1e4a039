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
"""
from __future__ import annotations

import json
import re
from pathlib import Path

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
TODO_RE = re.compile(r"#\s*TODO\(([a-z0-9_]+(?:\.[a-z0-9_]+)*)\):\s*(.*)")
SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}


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
    message = f"TODO({task}): {hint}" if hint else f"TODO({task})"
    return hint_lines + [f"{indent}raise NotImplementedError({message!r})\n"]


def strip_notebook(text: str, where: str = "<notebook>") -> str:
    """Strip solution blocks from each code cell and clear outputs."""
    nb = json.loads(text)
    for n, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", []))
        stripped = strip_source(source, f"{where}[cell {n}]")
        cell["source"] = stripped.splitlines(keepends=True)
        cell["outputs"] = []
        cell["execution_count"] = None
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


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


def drift(solutions: Path, labs: Path) -> list[str]:
    """Files under `labs` that differ from what release would write (sorted, with a reason)."""
    expected = render_tree(solutions)
    actual = {p.relative_to(labs).as_posix(): p for p in _files(labs)} if labs.exists() else {}
    problems = [f"{rel}: missing" for rel in expected if rel not in actual]
    problems += [f"{rel}: differs" for rel, p in actual.items()
                 if rel in expected and p.read_bytes() != expected[rel]]
    problems += [f"{rel}: not in solutions/" for rel in actual if rel not in expected]
    return sorted(problems)


def release(solutions: Path, labs: Path) -> list[str]:
    """Write `labs` from `solutions`; return the relative paths written or removed."""
    expected = render_tree(solutions)
    changed = []
    for rel in drift(solutions, labs):
        rel = rel.split(":")[0]
        target = labs / rel
        if rel in expected:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(expected[rel])
            tmp.replace(target)
        else:
            target.unlink()
        changed.append(rel)
    return changed
