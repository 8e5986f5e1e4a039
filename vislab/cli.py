"""The `vislab` command: release, grade, train, data, autograde, gradescope, nbgrader, report, docs.

Every subcommand reports a user's mistake (unknown lab, missing folder, missing data) as one
line on stderr and exit code 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vislab import LABS_DIR, SOLUTIONS_DIR
from vislab.errors import UsageError


def cmd_release(args) -> int:
    from vislab.release import drift, release

    if args.check:
        problems = drift(SOLUTIONS_DIR, LABS_DIR)
        if problems:
            print("labs/ differs from what `vislab release` writes from solutions/:")
            print("\n".join(f"  {p}" for p in problems))
            print("run `vislab release` (never edit labs/ by hand)")
            return 1
        print("labs/ is up to date with solutions/")
        return 0
    written, kept = release(SOLUTIONS_DIR, LABS_DIR)
    for rel in written:
        print(f"wrote {rel}" if rel.startswith("solutions/") else f"wrote labs/{rel}")
    if not written:
        print("labs/ was already up to date")
    for rel in kept:
        print(f"kept labs/{rel}: solutions/ has no such file, so release did not delete it "
              f"(remove it by hand if it should go)", file=sys.stderr)
    return 1 if kept else 0


def writable_file(path: Path, option: str) -> None:
    """Refuse, before any work, a file we could not write."""
    import os

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder: name a file")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: cannot write there (permission denied)")


def cmd_grade(args) -> int:
    from vislab.grading import grade_lab

    if args.json:
        writable_file(args.json, "--json")
    rep = grade_lab(args.lab, args.impl, args.task)
    if args.task is None:  # the written questions: listed as answered or not, never scored
        from vislab.written import report as written_report
        rep["written"] = written_report(args.lab, Path(rep["impl"]))
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if rep["earned"] == rep["possible"] else 1


DEVICE_RE = r"cpu|cuda(:[0-9]+)?|mps"
# Options that several labs' train.py add, and the values that make sense for them.
RANGES = {"lr": (0, None, "above 0"), "weight_decay": (0, None, "0 or more"),
          "temperature": (0, None, "above 0"), "mixup": (0, None, "0 or more"),
          "dropout": (0, 1, "from 0 up to (not including) 1")}


def check_ranges(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse an out-of-range learning rate, dropout, ... before any data is loaded."""
    for name, (low, high, words) in RANGES.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        strict = words.startswith("above")
        if value < low or (strict and value == low) or (high is not None and value >= high):
            parser.error(f"--{name.replace('_', '-')} must be {words}, got {value:g}")


def check_out(parser: argparse.ArgumentParser, out: Path | None, resume: bool) -> None:
    """--out must be a folder we may write, and an existing run is continued only with --resume
    (a run folder is somebody's results: never overwritten)."""
    import os

    if out is None:
        if resume:
            parser.error("--resume needs --out FOLDER: the run folder whose checkpoint.pt to continue")
        return
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file, not a folder: name a new folder for the run")
    if out.is_dir() and any(out.iterdir()) and not resume:
        parser.error(f"--out {out} already holds files (a run?): continue it with --resume, or "
                     f"name a new folder (a run folder is never overwritten)")
    existing = next((p for p in [out, *out.parents] if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"--out {out}: cannot write in {existing} (permission denied); "
                     f"name a folder you can write")


def todo_tasks(path: Path) -> dict[str, str]:
    """The TODOs still raised in a lab folder's .py files: task id -> 'file.py:line'."""
    import re

    found = {}
    pattern = re.compile(r"raise NotImplementedError\(\s*['\"]TODO\(([a-z0-9_.]+)\)")
    for file in sorted(path.glob("*.py")):
        for n, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
            match = pattern.search(line)
            if match:
                found.setdefault(match.group(1), f"{file.name}:{n}")
    return found


def check_todos(train, args, path: Path, lab: str) -> None:
    """Stop before the first epoch when a TODO that this run needs is not done yet (the lab's
    train.py says which with `required_tasks(args)`; without it, every TODO counts)."""
    todos = todo_tasks(path)
    required = getattr(train, "required_tasks", None)
    needed = sorted(set(todos) & set(required(args)) if required else todos)
    if needed:
        where = ", ".join(f"TODO({t}) at {todos[t]}" for t in needed)
        raise UsageError(f"this run needs {where}, not implemented yet; finish it first "
                         f"(`vislab grade {lab}` shows what is left), or train the reference with "
                         f"--impl solutions")


def cmd_train(argv: list[str]) -> int:
    import re

    from vislab.data import MissingData
    from vislab.impl import lab_dir
    from vislab.training import positive_int

    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("lab", nargs="?")
    first.add_argument("--impl", default="labs")
    known, _ = first.parse_known_args(argv)
    parser = argparse.ArgumentParser(prog="vislab train", description="Train a lab's models.")
    parser.add_argument("lab", help="the lab, e.g. vit")
    parser.add_argument("--impl", default="labs",
                        help="whose code trains: labs (yours, the default), solutions (the "
                             "reference), or a folder")
    parser.add_argument("--full", action="store_true",
                        help="the full data set and model (the GPU configuration)")
    parser.add_argument("--epochs", type=positive_int, help="default: the lab's, for small or --full")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if present)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads for torch (default 1: on a shared 2-core machine more "
                             "threads made epochs 5-10x slower; raise it on an idle machine with "
                             "more cores)")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<lab>/<model>-<time>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoint.pt")
    if known.lab is None:
        parser.parse_args(argv)  # prints usage (or --help) and exits
    path = lab_dir(known.lab, known.impl)
    train = load_train(path)
    train.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.device is not None and not re.fullmatch(DEVICE_RE, args.device):
        parser.error(f"--device must be cpu, cuda, cuda:N or mps, got {args.device!r}")
    check_ranges(parser, args)
    check_out(parser, args.out, args.resume)
    check_todos(train, args, path, known.lab)
    import torch
    torch.set_num_threads(args.threads)
    print(f"training the {known.lab} lab's code in {path}", file=sys.stderr)
    try:
        return train.main(args) or 0
    except (UsageError, MissingData):
        raise  # the kit's own one-line errors
    except Exception as exc:
        return stopped_in_student_code(exc, path, known.lab)


def load_train(path: Path):
    """The lab's train module; an error while importing the lab's files is one line."""
    from vislab.impl import import_lab
    from vislab.probing import explain, where

    try:
        return import_lab(path).train
    except Exception as exc:
        if isinstance(exc, SyntaxError) or where(exc, path):
            raise UsageError(f"cannot load the lab in {path}: {explain(exc, path).message}") from None
        raise


def stopped_in_student_code(exc: Exception, path: Path, lab: str) -> int:
    """A TODO left in the trained code: one line. Another error raised in the lab's files: the
    traceback (it points into those files) and then one line that says where. Anything else is
    the kit's bug and propagates."""
    import traceback

    from vislab.probing import explain, where

    error = explain(exc, path)
    if error.status == "not implemented":
        raise UsageError(f"{error.message}; finish it first (`vislab grade {lab}` shows what is "
                         f"left), or train the reference with --impl solutions") from None
    if not where(exc, path):
        raise exc
    traceback.print_exc()
    print(f"vislab: training stopped in the lab's code ({path}): {error.message}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vislab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("release", help="regenerate labs/ from solutions/")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 and list the files that differ")
    p.set_defaults(run=cmd_release)

    p = sub.add_parser("grade", help="grade a lab and print the task table")
    p.add_argument("lab", help="the lab, e.g. vit")
    p.add_argument("--impl", default="labs",
                   help="whose code is graded: labs (default), solutions, or a folder")
    p.add_argument("--task", help="grade one task only, e.g. vit.attention")
    p.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    p.set_defaults(run=cmd_grade)

    sub.add_parser("train", help="train a lab's models (see `vislab train LAB --help`)",
                   add_help=False)

    def cmd_docs(args) -> int:  # the site is vislab/site.py's: its main() does the work
        from vislab.site import main as site_main
        return site_main(["--student"] * args.student + ["--screenshots"] * args.screenshots
                         + (["--out", str(args.out)] if args.out else []))

    p = sub.add_parser("docs", help="build the self-study site offline (build/site/index.html)")
    p.add_argument("--student", action="store_true",
                   help="leave out the instructors' answers (build/site-student/)")
    p.add_argument("--out", type=Path, help="output folder (default build/site, or "
                   "build/site-student with --student)")
    p.add_argument("--screenshots", action="store_true",
                   help="then write docs/img/site_home.png and docs/img/site_lab.png")
    p.set_defaults(run=cmd_docs)

    from vislab.autograde import add_parser as add_autograde_parser
    add_autograde_parser(sub)
    from vislab.report import add_parser as add_report_parser
    add_report_parser(sub)
    from vislab.nbgrader import add_parser as add_nbgrader_parser
    add_nbgrader_parser(sub)

    from vislab.data.cli import add_parser as add_data_parser
    add_data_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("vislab: interrupted", file=sys.stderr)
        return 130


def other_checkout(cwd: Path) -> Path | None:
    """The vislab checkout that `cwd` is in, when it is not the one this vislab runs from."""
    from vislab import REPO_ROOT

    for folder in [cwd, *cwd.parents]:
        if all((folder / part).exists() for part in ("vislab/__init__.py", "solutions", "autograder")):
            return None if folder.resolve() == REPO_ROOT.resolve() else folder
    return None


def note_checkout() -> None:
    """vislab reads solutions/, labs/ and autograder/ next to its own package: say so when the
    user works in another checkout, whose files would otherwise be silently ignored."""
    from vislab import REPO_ROOT

    try:
        other = other_checkout(Path.cwd())
    except OSError:
        return
    if other is not None:
        print(f"vislab: note: this vislab is installed from {REPO_ROOT} and uses the solutions/, "
              f"labs/ and autograder/ there, not those of {other}, the checkout you are in "
              f"(to work on that one: pip install -e {other})", file=sys.stderr)


def _main(argv: list[str]) -> int:
    from vislab.data import MissingData
    from vislab.grading import UnknownLab
    from vislab.impl import ImplNotFound
    from vislab.release import ReleaseError

    if argv[:1] and argv[0] in ("release", "grade", "train", "autograde", "nbgrader"):
        note_checkout()
    try:
        if argv[:1] == ["train"]:
            return cmd_train(argv[1:])
        args = build_parser().parse_args(argv)
        return args.run(args)
    except (UsageError, ImplNotFound, MissingData, ReleaseError, UnknownLab) as exc:
        print(f"vislab: error: {exc}", file=sys.stderr)
        return 2
