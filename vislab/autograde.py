"""`vislab autograde`: grade a folder of untrusted submissions, each in its own sandbox.

SUBMISSIONS holds one folder or .zip per student (the student's copy of labs/<lab>/, or a folder
that holds `<lab>/`). Each is unpacked safely into the grader's own temporary folder, graded by
vislab.sandbox.IsolatedStudent (the student's code runs only in the worker process; every score
is decided here), and the batch writes:

    OUT/grades.csv                        a row per student: one column per task, then total
    OUT/feedback/<student>.txt            the task table, each check's message, the student's
                                          own output (truncated); never a check's source
    OUT/gradescope/<student>/results.json Gradescope's format (tests, score, output, visibility)
    OUT/report.json                       everything above, for scripts

One bad submission never stops the batch or changes another's grade: every failure is turned
into a status for that student only.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from vislab.errors import UsageError
from vislab.sandbox import MiB, Limits, SubmissionTooLarge, copy_tree_safely

# vislab.grading (and torch) are imported where needed: `vislab --help` stays quick.

MAX_BYTES = 50 * MiB     # a submission's files, unpacked
MAX_FILES = 2000
SKIPPED = ("__MACOSX", "__pycache__", ".ipynb_checkpoints", ".git")


class BadSubmission(ValueError):
    """A submission that cannot be graded at all (bad zip, no lab folder, too large)."""


# ------------------------------------------------------------------------ submissions

def student_id(name: str) -> str:
    """A file-name-safe id from a folder or zip name."""
    stem = name[:-4] if name.lower().endswith(".zip") else name
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", stem).strip("._") or "student"


def find_submissions(folder: Path) -> list[tuple[str, Path]]:
    """(student id, folder or zip) for every entry of `folder`, sorted; ids made unique."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"no folder {folder} (SUBMISSIONS holds one folder or .zip per student)")
    found, seen = [], set()
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.is_symlink():
            continue
        if not (entry.is_dir() or (entry.is_file() and entry.suffix.lower() == ".zip")):
            continue
        sid = base = student_id(entry.name)
        n = 2
        while sid in seen:
            sid, n = f"{base}-{n}", n + 1
        seen.add(sid)
        found.append((sid, entry))
    return found


def extract_zip(archive: Path, target: Path, max_bytes: int = MAX_BYTES,
                max_files: int = MAX_FILES) -> None:
    """Extract regular files only: no absolute paths, no `..`, no links, sizes capped as they
    are written (the sizes a zip declares are not trusted)."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadSubmission(f"not a readable zip file ({exc})") from None
    target.mkdir(parents=True, exist_ok=True)
    total = count = 0
    with zf:
        for member in zf.infolist():
            name = member.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if (name.startswith("/") or not parts or any(p in ("..", ".") for p in parts)
                    or ":" in parts[0]):
                raise BadSubmission(f"the zip holds an unsafe path: {member.filename!r}")
            if any(p in SKIPPED for p in parts) or name.endswith(".pyc"):
                continue
            kind = stat.S_IFMT(member.external_attr >> 16)
            if member.is_dir() or (kind and kind != stat.S_IFREG):
                continue  # a folder (made as needed), a symbolic link or a device: never extracted
            count += 1
            if count > max_files:
                raise BadSubmission(f"the zip holds more than {max_files} files")
            path = target.joinpath(*parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(member) as src, open(path, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        total += len(chunk)
                        if total > max_bytes:
                            raise BadSubmission(f"the zip unpacks to more than "
                                                f"{max_bytes // MiB} MiB")
                        dst.write(chunk)
            except (zipfile.BadZipFile, RuntimeError, OSError, EOFError) as exc:
                raise BadSubmission(f"could not extract {member.filename!r} ({exc})") from None


def find_lab_folder(root: Path, lab: str, depth: int = 3) -> Path | None:
    """The lab folder in an unpacked submission: `root` itself, `root/<lab>`, or the same inside
    a single wrapping folder (as zips often have)."""
    if (root / "__init__.py").is_file():
        return root
    if (root / lab / "__init__.py").is_file():
        return root / lab
    children = [c for c in root.iterdir() if c.is_dir() and c.name not in SKIPPED]
    files = [c for c in root.iterdir() if c.is_file() and c.suffix == ".py"]
    if depth > 0 and len(children) == 1 and not files:
        return find_lab_folder(children[0], lab, depth - 1)
    return None


def unpack(entry: Path, target: Path, lab: str) -> Path:
    """Copy or extract one submission into `target`; return its lab folder."""
    try:
        if entry.is_dir():
            copy_tree_safely(entry, target, MAX_BYTES, MAX_FILES)
        else:
            extract_zip(entry, target)
    except SubmissionTooLarge as exc:
        raise BadSubmission(f"the submission holds {exc}") from None
    folder = find_lab_folder(target, lab)
    if folder is None:
        raise BadSubmission(f"no lab folder: the submission must hold the files of labs/{lab}/ "
                            f"(with __init__.py), or a folder {lab}/ with them")
    return folder


# ---------------------------------------------------------------------------- grading

def failed_results(lab, task: str | None, status: str, message: str) -> list:
    from vislab.grading import CheckResult

    return [CheckResult(c.task, c.name, c.points, 0.0, status, message, 0.0)
            for c in lab.checks if task in (None, c.task)]


def grade_submission(lab, sid: str, entry: Path, workdir: Path, limits: Limits,
                     task: str | None = None, hide: tuple = (), seed: int = 0) -> dict:
    """Grade one submission of `lab` (a vislab.grading.Lab) in its own sandbox; never raises
    for anything the student did."""
    from vislab.grading import grade, report
    from vislab.sandbox import IsolatedStudent, SandboxError

    start = time.perf_counter()
    protections, problem = [], ""
    try:
        folder = unpack(entry, workdir / sid, lab.name)
    except BadSubmission as exc:
        results = failed_results(lab, task, "error", str(exc))
    else:
        try:
            with IsolatedStudent(folder, limits, hide=hide) as student:
                student.start()
                protections = student.protections
                results = grade(lab, folder, task, seed=seed, student=student)
                protections = student.protections or protections
        except SandboxError as exc:  # the grader's machinery, not the student
            problem = str(exc)
            results = failed_results(lab, task, "error", f"not graded: {exc}")
        except Exception as exc:  # noqa: BLE001 - one submission never stops the batch
            problem = f"{type(exc).__name__}: {exc}"
            results = failed_results(lab, task, "error", f"not graded (grader problem: "
                                                          f"{problem})")
    rep = report(lab, entry, results)
    rep.update(student=sid, submission=str(entry), protections=protections,
               grader_problem=problem, seconds=round(time.perf_counter() - start, 2))
    return rep


def parallel_is_safe(limits: Limits) -> bool:
    """Parallel workers cannot starve each other of processes: each has its own uid (root) or
    its own pids cgroup."""
    from vislab.sandbox import Cgroups, _is_root

    if _is_root():
        return True
    probe = Cgroups(f"vislab-{os.getpid()}-probe", limits)
    try:
        return any(p.startswith("pids") for p in probe.active)
    finally:
        probe.remove()


def autograde(lab_name: str, submissions: Path, out: Path, workers: int = 1,
              limits: Limits | None = None, task: str | None = None, seed: int = 0,
              progress=print) -> list[dict]:
    """Grade every submission in `submissions`; write the outputs into `out`; return the
    reports (one per student, sorted by id). `seed` decides every check's inputs: the same
    seed regrades identically; a seed of your own makes the inputs unknowable in advance."""
    import torch

    from vislab.grading import load_lab

    lab = load_lab(lab_name)
    if task is not None and task not in lab.tasks:
        raise UsageError(f"no task {task!r} in lab {lab_name}; tasks are: {', '.join(lab.tasks)}")
    submissions, out = Path(submissions).resolve(), Path(out).resolve()
    if out == submissions or submissions in out.parents:
        raise UsageError(f"--out {out} is inside SUBMISSIONS; put the results elsewhere")
    if out in submissions.parents:
        raise UsageError(f"SUBMISSIONS {submissions} is inside --out; put the results elsewhere")
    entries = find_submissions(submissions)
    if not entries:
        raise UsageError(f"no submissions in {submissions} (one folder or .zip per student)")
    workers = max(1, int(workers))
    limits = limits or Limits()
    if workers > 1 and not parallel_is_safe(limits):
        progress("note: grading one submission at a time: without root or a pids cgroup every "
                 "worker runs as your user under one process limit, so a process storm in one "
                 "submission could starve another's worker")
        workers = 1
    # One torch thread per process: with two OpenMP threads on two cores that are not both
    # free, the MNIST training check ran more than ten times slower (measured here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="vislab-autograde-"))  # mode 700: the grader's own
    hide = (submissions, out, workdir)
    progress(f"grading {len(entries)} submission(s) of lab {lab_name} with {workers} worker(s)")
    start = time.perf_counter()
    try:
        def one(item):
            sid, entry = item
            rep = grade_submission(lab, sid, entry, workdir, limits, task, hide, seed)
            problem = f"  GRADER PROBLEM: {rep['grader_problem']}" if rep["grader_problem"] else ""
            progress(f"  {sid:<24} {rep['earned']:g}/{rep['possible']:g}"
                     f"  ({rep['seconds']:.1f} s){problem}")
            return rep
        if workers == 1:
            reports = [one(item) for item in entries]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                reports = list(pool.map(one, entries))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        torch.set_num_threads(threads)
    elapsed = time.perf_counter() - start
    write_outputs(lab, reports, out)
    protections = next((r["protections"] for r in reports if r["protections"]), [])
    progress(f"graded {len(reports)} submission(s) in {elapsed:.1f} s "
             f"({60 * len(reports) / elapsed:.1f} per minute)")
    progress("protections: " + ("; ".join(protections) if protections else "none recorded"))
    missing = [p for p in protections if "NOT" in p or p.startswith("no namespaces")]
    if missing or not any("cgroup" in p for p in protections):
        progress("WARNING: some protections were not available here (see docs/instructors.md): "
                 + "; ".join(missing or ["no cgroups"]))
    progress(f"wrote {out / 'grades.csv'}, {out / 'feedback'}/, {out / 'gradescope'}/, "
             f"{out / 'report.json'}")
    return reports


# ---------------------------------------------------------------------------- outputs

def write_outputs(lab, reports: list[dict], out: Path) -> None:
    tasks = [t for t in lab.tasks if any(row["task"] == t for r in reports for row in r["tasks"])]
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student"] + tasks + ["total"])
        for rep in reports:
            earned = {row["task"]: row["earned"] for row in rep["tasks"]}
            writer.writerow([rep["student"]] + [f"{earned.get(t, 0):g}" for t in tasks]
                            + [f"{rep['earned']:g}"])
    (out / "feedback").mkdir(exist_ok=True)
    for rep in reports:
        (out / "feedback" / f"{rep['student']}.txt").write_text(feedback(lab, rep))
        folder = out / "gradescope" / rep["student"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps(gradescope(lab, rep), indent=2) + "\n")
    (out / "report.json").write_text(json.dumps({"lab": lab.name, "reports": reports},
                                                indent=2) + "\n")


def _short(text: str, limit: int = 1500) -> str:
    text = text.rstrip()
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more " \
                                                          f"characters not shown)"


def feedback(lab, rep: dict) -> str:
    """What the student may read: the task table, each check's result, their own output."""
    from vislab.grading import format_table

    lines = [f"vislab autograde: lab {lab.name}, submission {rep['student']}", "",
             format_table(rep), "", "checks:"]
    for c in rep["checks"]:
        lines.append(f"  {c['task']:<18} {c['check']:<40} {c['earned']:g}/{c['points']:g}  "
                     f"{c['status']}")
        if c["message"]:
            lines.append(f"      {c['message']}")
    outputs = [c for c in rep["checks"] if c.get("output", "").strip()]
    if outputs:
        lines += ["", "your code's output (never costs points; truncated):"]
        for c in outputs:
            lines.append(f"  --- during {c['check']}:")
            lines += ["      " + line for line in _short(c["output"]).splitlines()]
    return "\n".join(lines) + "\n"


def gradescope(lab, rep: dict) -> dict:
    """Gradescope's results.json: one test per task, plus the total."""
    tests = []
    for row in rep["tasks"]:
        checks = [c for c in rep["checks"] if c["task"] == row["task"]]
        output = [f"{c['check']}: {c['status']}" + (f" - {c['message']}" if c["message"] else "")
                  for c in checks]
        printed = "".join(c.get("output", "") for c in checks).strip()
        if printed:
            output.append("your code's output (truncated):\n" + _short(printed, 1000))
        tests.append({"name": f"{row['task']}: {row['title']}", "score": row["earned"],
                      "max_score": row["possible"], "status":
                      "passed" if row["status"] == "passed" else "failed",
                      "output": "\n".join(output), "visibility": "visible"})
    return {"score": rep["earned"], "visibility": "visible", "stdout_visibility": "hidden",
            "output": f"{lab.name}: {rep['earned']:g}/{rep['possible']:g} points", "tests": tests}


# ------------------------------------------------------------------------------- CLI

def add_parser(sub) -> None:
    p = sub.add_parser("autograde", help="grade a folder of untrusted submissions, isolated",
                       description="Grade one folder or .zip per student, each in its own "
                                   "sandboxed worker; write grades.csv, feedback and Gradescope "
                                   "results.json.")
    p.add_argument("lab", help="the lab, e.g. vit")
    p.add_argument("submissions", type=Path, help="folder with one folder or .zip per student")
    p.add_argument("--workers", type=int, default=1,
                   help="submissions graded at once (default 1; at most one per CPU is useful)")
    p.add_argument("--out", type=Path, default=Path("autograded"),
                   help="folder for the results (default ./autograded)")
    p.add_argument("--task", help="grade one task only, e.g. vit.attention")
    p.add_argument("--memory", type=float, default=3.0, help="GiB per submission (default 3)")
    p.add_argument("--timeout-scale", type=float, default=1.0,
                   help="multiply every check's time limit (for a slow or busy machine)")
    p.add_argument("--seed", type=int, default=0,
                   help="draws every check's inputs (default 0; the same seed regrades "
                        "identically)")
    p.set_defaults(run=cmd_autograde)


def cmd_autograde(args) -> int:
    workers = max(1, args.workers)
    limits = Limits(memory=int(args.memory * 2**30), timeout_scale=args.timeout_scale)
    reports = autograde(args.lab, args.submissions, args.out, workers, limits, args.task,
                        args.seed)
    problems = [r["student"] for r in reports if r["grader_problem"]]
    if problems:
        print(f"vislab: the grader failed on {', '.join(problems)} (see report.json)",
              file=sys.stderr)
        return 1
    return 0
