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
    OUT/students/<student>.json           each student's report, written as soon as it is graded
    OUT/class_report.{md,png,csv}         what the class got wrong (vislab.report)

One bad submission never stops the batch or changes another's grade: every failure is turned
into a status for that student only. Every entry of SUBMISSIONS gets a row (a .tar.gz, a loose
.py or a link gets one that says why it was not graded) or a printed line (hidden files, notes).
An interrupted batch keeps what it graded: the same command again grades only the rest
(--regrade grades everyone again). OUT is the batch's own: a folder holding other files, or
another batch's results, is refused.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import unicodedata
import zipfile
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from vislab.errors import UsageError
from vislab.sandbox import MiB, Limits, SubmissionTooLarge, copy_tree_safely

# vislab.grading (and torch) are imported where needed: `vislab --help` stays quick.

MAX_BYTES = 50 * MiB     # a submission's files, unpacked
MAX_FILES = 2000
SKIPPED = ("__MACOSX", "__pycache__", ".ipynb_checkpoints", ".git")
MARKER = ".vislab-autograde.json"  # in OUT: the settings of the batch whose results it holds
OWNED = ("grades.csv", "report.json", "students", "feedback", "gradescope", "class_report.md",
         "class_report.png", "class_report.csv", MARKER)
# entries that are a student's work in a form we do not grade: each gets a row saying why
UNGRADED = {".tar.gz": "a .tar.gz archive", ".tgz": "a .tgz archive", ".tar": "a .tar archive",
            ".rar": "a .rar archive", ".7z": "a .7z archive", ".gz": "a .gz file",
            ".py": "a single .py file", ".ipynb": "a single notebook"}


class BadSubmission(ValueError):
    """A submission that cannot be graded at all (bad zip, no lab folder, too large)."""


# ------------------------------------------------------------------------ submissions

class Submission(NamedTuple):
    sid: str            # a file-name-safe id, unique in the batch
    name: str           # the entry's own name, as the student gave it
    entry: Path         # the folder or .zip
    problem: str = ""   # why it cannot be graded, when it cannot


def student_id(name: str) -> str:
    """A file-name-safe id from a folder or zip name; letters of every script are kept, so that
    `Zoë` and `Zo_` stay two ids."""
    stem = name[:-4] if name.lower().endswith(".zip") else name
    stem = unicodedata.normalize("NFC", stem)
    return re.sub(r"[^\w.@+-]", "_", stem).strip(".") or "student"


def _ungraded(entry: Path, lab: str) -> str | None:
    """Why an entry that is a student's work cannot be graded, or None if it is no student's."""
    how = f"submit the whole labs/{lab}/ folder, or a .zip of it"
    if entry.is_symlink():
        return f"a symbolic link (never followed): copy the submission itself here; {how}"
    lower = entry.name.lower()
    for suffix, what in UNGRADED.items():
        if lower.endswith(suffix):
            return f"{what}, not a folder or a .zip: {how}"
    return None


def find_submissions(folder: Path, lab: str = "<lab>") -> tuple[list[Submission], list[str]]:
    """Every entry of `folder`, sorted: the submissions (ids made unique; those that cannot be
    graded carry the reason) and a line for each entry that is no submission."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"no folder {folder} (SUBMISSIONS holds one folder or .zip per student)")
    found, skipped, seen = [], [], set()
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            skipped.append(f"skipped {entry.name}: a hidden file or folder, not a submission")
            continue
        problem = _ungraded(entry, lab)
        if problem is None and not (entry.is_dir() or entry.suffix.lower() == ".zip"):
            skipped.append(f"skipped {entry.name}: not a folder or a .zip, so not a submission")
            continue
        sid = base = student_id(entry.name)
        n = 2
        while sid in seen:
            sid, n = f"{base}-{n}", n + 1
        seen.add(sid)
        found.append(Submission(sid, unicodedata.normalize("NFC", entry.name), entry, problem or ""))
    return found, skipped


def fingerprint(entry: Path) -> str:
    """A digest of a submission's files (names and contents): a rerun regrades what changed."""
    digest = sha256()
    if entry.is_symlink() or not entry.exists():
        digest.update(b"link or missing")
    elif entry.is_file():
        digest.update(entry.read_bytes())
    else:
        for path in sorted(entry.rglob("*")):
            rel = path.relative_to(entry).as_posix()
            if path.is_file() and not path.is_symlink() and not set(PurePosixPath(rel).parts) & set(SKIPPED):
                digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


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


def grade_submission(lab, sub: Submission, workdir: Path, limits: Limits,
                     task: str | None = None, hide: tuple = (), seed: int = 0) -> dict:
    """Grade one submission of `lab` (a vislab.grading.Lab) in its own sandbox; never raises
    for anything the student did."""
    from vislab.grading import grade, report
    from vislab.sandbox import IsolatedStudent, SandboxError

    start = time.perf_counter()
    protections, problem = [], ""
    try:
        if sub.problem:
            raise BadSubmission(f"not graded: {sub.problem}")
        folder = unpack(sub.entry, workdir / sub.sid, lab.name)
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
    rep = report(lab, sub.entry, results)
    rep.update(student=sub.sid, name=sub.name, submission=str(sub.entry), protections=protections,
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


def prepare_out(out: Path, settings: dict, regrade: bool) -> None:
    """Make `out` this batch's folder: new or empty, or holding results of a batch with the same
    settings (which this run continues). Never deletes what another program wrote; --regrade
    clears only what a batch writes."""
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: name a folder for the results")
    if out.is_dir() and any(out.iterdir()):
        if not marker.is_file():
            raise UsageError(f"--out {out} holds files that vislab autograde did not write: name "
                             f"an empty or new folder for the results")
        try:
            before = json.loads(marker.read_text())
        except ValueError:
            before = None
        if before != settings and not regrade:
            raise UsageError(f"--out {out} holds the results of another batch ({before}); name a "
                             f"new folder, or add --regrade to replace them")
        if regrade:
            for name in OWNED:
                path = out / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    try:
        (out / "students").mkdir(parents=True, exist_ok=True)
        _write_text(marker, json.dumps(settings, indent=2) + "\n")
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror}); name a folder you "
                         f"can write") from None


def _write_text(path: Path, text: str) -> None:
    """Write a whole file or nothing (a temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _done(out: Path, sub: Submission, digest: str) -> dict | None:
    """This submission's report from an earlier, interrupted run of the same batch, if its
    files have not changed since."""
    path = out / "students" / f"{sub.sid}.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved["report"] if saved.get("fingerprint") == digest else None


def autograde(lab_name: str, submissions: Path, out: Path, workers: int = 1,
              limits: Limits | None = None, task: str | None = None, seed: int = 0,
              progress=print, regrade: bool = False, names: bool = False) -> list[dict]:
    """Grade every submission in `submissions`; write the outputs into `out`; return the
    reports (one per student, sorted by id). `seed` decides every check's inputs: the same
    seed regrades identically; a seed of your own makes the inputs unknowable in advance.
    Each student's results are written as soon as they are graded; a rerun of an interrupted
    batch grades only the rest (and what changed), unless `regrade`."""
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
    entries, skipped = find_submissions(submissions, lab_name)
    for line in skipped:
        progress(line)
    if not entries:
        raise UsageError(f"no submissions in {submissions} (one folder or .zip per student)")
    workers = max(1, int(workers))
    limits = limits or Limits()
    settings = {"lab": lab_name, "task": task, "seed": seed, "submissions": str(submissions),
                "memory": limits.memory, "timeout_scale": limits.timeout_scale}
    prepare_out(out, settings, regrade)
    digests = {sub.sid: fingerprint(sub.entry) for sub in entries}
    reports = {sub.sid: rep for sub in entries if (rep := _done(out, sub, digests[sub.sid]))}
    todo = [sub for sub in entries if sub.sid not in reports]
    if reports:
        progress(f"{len(reports)} submission(s) already graded in {out} (unchanged since): kept; "
                 f"--regrade grades them again")
    if workers > 1 and len(todo) > 1 and not parallel_is_safe(limits):
        progress("note: grading one submission at a time: without root or a pids cgroup every "
                 "worker runs as your user under one process limit, so a process storm in one "
                 "submission could starve another's worker")
        workers = 1
    # One torch thread per process: with two OpenMP threads on two cores that are not both
    # free, the MNIST training check ran more than ten times slower (measured here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    workdir = Path(tempfile.mkdtemp(prefix="vislab-autograde-"))  # mode 700: the grader's own
    hide = (submissions, out, workdir)
    progress(f"grading {len(todo)} submission(s) of lab {lab_name} with {workers} worker(s)")
    start = time.perf_counter()

    def one(sub: Submission) -> dict:
        rep = grade_submission(lab, sub, workdir, limits, task, hide, seed)
        write_student(lab, rep, out, digests[sub.sid])  # kept even if the batch stops later
        problem = f"  GRADER PROBLEM: {rep['grader_problem']}" if rep["grader_problem"] else ""
        progress(f"  {sub.sid:<24} {rep['earned']:g}/{rep['possible']:g}"
                 f"  ({rep['seconds']:.1f} s){problem}")
        return rep
    try:
        if workers == 1:
            for sub in todo:
                reports[sub.sid] = one(sub)
        else:
            pool = ThreadPoolExecutor(max_workers=workers)
            try:
                for sub, rep in zip(todo, pool.map(one, todo)):
                    reports[sub.sid] = rep
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    except KeyboardInterrupt:
        done = [rep for s in entries  # what finished, as written to disk by one()
                if (rep := reports.get(s.sid) or _done(out, s, digests[s.sid]))]
        write_outputs(lab, done, out, [s.sid for s in entries])
        progress(f"interrupted: {len(done)} of {len(entries)} submission(s) graded and written to "
                 f"{out}; run the same command again to grade the rest")
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        torch.set_num_threads(threads)
    elapsed = time.perf_counter() - start
    reports = [reports[s.sid] for s in entries]
    write_outputs(lab, reports, out, [s.sid for s in entries])
    from vislab.report import write_report
    write_report(out, names)
    protections = next((r["protections"] for r in reports if r["protections"]), [])
    if todo:
        progress(f"graded {len(todo)} submission(s) in {elapsed:.1f} s "
                 f"({60 * len(todo) / elapsed:.1f} per minute)")
    progress("protections: " + ("; ".join(protections) if protections else "none recorded"))
    missing = [p for p in protections if "NOT" in p or p.startswith("no namespaces")]
    if missing or not any("cgroup" in p for p in protections):
        progress("WARNING: some protections were not available here (see docs/instructors.md): "
                 + "; ".join(missing or ["no cgroups"]))
    progress(f"wrote {out / 'grades.csv'}, {out / 'feedback'}/, {out / 'gradescope'}/, "
             f"{out / 'report.json'}, {out / 'class_report.md'} (what the class got wrong)")
    return reports


# ---------------------------------------------------------------------------- outputs

def write_student(lab, rep: dict, out: Path, digest: str) -> None:
    """One student's files, written as soon as they are graded."""
    sid = rep["student"]
    _write_text(out / "feedback" / f"{sid}.txt", feedback(lab, rep))
    _write_text(out / "gradescope" / sid / "results.json", json.dumps(gradescope(lab, rep), indent=2) + "\n")
    _write_text(out / "students" / f"{sid}.json",
                json.dumps({"fingerprint": digest, "report": rep}, indent=2) + "\n")


def write_outputs(lab, reports: list[dict], out: Path, batch: list[str] | None = None) -> None:
    """grades.csv and report.json for `reports`; the per-student files of anyone not in
    `batch` (the ids of this batch's entries) are removed: they belong to an earlier batch."""
    tasks = [t for t in lab.tasks if any(row["task"] == t for r in reports for row in r["tasks"])]
    lines = [["student", "name"] + tasks + ["total"]]
    for rep in reports:
        earned = {row["task"]: row["earned"] for row in rep["tasks"]}
        lines.append([rep["student"], rep.get("name", rep["student"])]
                     + [f"{earned.get(t, 0):g}" for t in tasks] + [f"{rep['earned']:g}"])
    tmp = out / ".grades.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(lines)
    tmp.replace(out / "grades.csv")
    _write_text(out / "report.json", json.dumps({"lab": lab.name, "reports": reports}, indent=2) + "\n")
    if batch is None:
        return
    keep = set(batch)
    for folder, suffix in (("feedback", ".txt"), ("students", ".json")):
        for path in (out / folder).glob(f"*{suffix}"):
            if path.name[: -len(suffix)] not in keep:
                path.unlink()
    for path in (out / "gradescope").glob("*"):
        if path.is_dir() and path.name not in keep:
            shutil.rmtree(path)


def _short(text: str, limit: int = 1500) -> str:
    text = text.rstrip()
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more " \
                                                          f"characters not shown)"


def feedback(lab, rep: dict) -> str:
    """What the student may read: the task table, each check's result, their own output."""
    from vislab.grading import format_table

    lines = [f"vislab autograde: lab {lab.name}, submission {rep['student']} "
             f"({rep.get('name', rep['student'])})", "",
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
            "output": f"{lab.name}: {rep['earned']:g}/{rep['possible']:g} points "
                      f"({rep.get('name', rep['student'])})", "tests": tests}


# ------------------------------------------------------------------------- Gradescope

def overlay_on_skeleton(lab: str, upload: Path, target: Path) -> Path:
    """labs/<lab>/ with the uploaded files laid over it: an upload of only the files a student
    edited (no __init__.py, no untouched modules) keeps the skeleton's others. The upload may
    hold the files directly, in <lab>/, or in one wrapping folder; links are never followed."""
    from vislab import LABS_DIR

    if not upload.is_dir() or upload.is_symlink():
        raise BadSubmission(f"no upload folder at {upload}")
    copy_tree_safely(LABS_DIR / lab, target / lab, MAX_BYTES, MAX_FILES)
    copy_tree_safely(upload, target / "upload", MAX_BYTES, MAX_FILES)
    root = target / "upload"
    for _ in range(3):  # unwrap <lab>/ or a single wrapping folder
        children = [c for c in root.iterdir() if c.name not in SKIPPED]
        if any(c.is_file() and c.suffix in (".py", ".ipynb") for c in children):
            break
        folders = [c for c in children if c.is_dir()]
        if (root / lab).is_dir():
            root = root / lab
        elif len(folders) == 1:
            root = folders[0]
        else:
            break
    for path in root.iterdir():
        if path.is_file():
            shutil.copy2(path, target / lab / path.name)
    return target / lab


def gradescope_submission(lab_name: str, upload: Path, results: Path, seed: int = 0,
                          limits: Limits | None = None) -> dict:
    """Gradescope's run_autograder in one call: grade the upload (laid over the skeleton) in the
    sandbox and write results.json, always: if the grader itself fails, results.json says so
    (score 0, the reason) instead of leaving Gradescope with no results at all."""
    from vislab.grading import load_lab

    lab = load_lab(lab_name)
    work = Path(tempfile.mkdtemp(prefix="vislab-gradescope-"))
    try:
        folder = overlay_on_skeleton(lab_name, Path(upload), work / "prepared")
        rep = grade_submission(lab, Submission("submission", Path(upload).name, folder),
                               work / "graded", limits or Limits(), seed=seed)
        result = gradescope(lab, rep)
        if rep["grader_problem"]:
            result["output"] += f"\nThe grader itself failed: {rep['grader_problem']}; tell your instructor."
    except (SubmissionTooLarge, OSError, BadSubmission) as exc:
        rep = None
        result = {"score": 0, "visibility": "visible", "tests": [],
                  "output": f"vislab could not grade this upload: {_one_line(str(exc))}"}
    except Exception as exc:  # noqa: BLE001 - Gradescope must get a results.json
        rep = None
        result = {"score": 0, "visibility": "visible", "tests": [],
                  "output": f"the grader failed ({type(exc).__name__}: {_one_line(str(exc))}); "
                            f"tell your instructor"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _write_text(Path(results), json.dumps(result, indent=2) + "\n")
    return {"result": result, "report": rep}


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


# ------------------------------------------------------------------------------- CLI

def positive_float(text: str) -> float:
    """argparse type for amounts that must be above zero (GiB, a time scale)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def add_parser(sub) -> None:
    from vislab.training import positive_int

    p = sub.add_parser("autograde", help="grade a folder of untrusted submissions, isolated",
                       description="Grade one folder or .zip per student, each in its own "
                                   "sandboxed worker; write grades.csv, feedback and Gradescope "
                                   "results.json. An interrupted batch continues where it "
                                   "stopped when run again.")
    p.add_argument("lab", help="the lab, e.g. vit")
    p.add_argument("submissions", type=Path, help="folder with one folder or .zip per student")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="submissions graded at once (default 1; at most one per CPU is useful)")
    p.add_argument("--out", type=Path, default=Path("autograded"),
                   help="folder for the results (default ./autograded): new, empty, or holding "
                        "this batch's results from an earlier run, which it continues")
    p.add_argument("--regrade", action="store_true",
                   help="grade every submission again, replacing the results in --out")
    p.add_argument("--task", help="grade one task only, e.g. vit.attention")
    p.add_argument("--memory", type=positive_float, default=3.0,
                   help="GiB per submission (default 3; at least 0.5)")
    p.add_argument("--timeout-scale", type=positive_float, default=1.0,
                   help="multiply every check's time limit (for a slow or busy machine)")
    p.add_argument("--seed", type=int, default=0,
                   help="draws every check's inputs (default 0; the same seed regrades "
                        "identically)")
    p.add_argument("--names", action="store_true",
                   help="name the students behind each mistake in class_report.md (default: counts)")
    p.set_defaults(run=cmd_autograde)

    g = sub.add_parser("gradescope", help="grade one Gradescope upload and write its results.json",
                       description="For Gradescope's run_autograder: lay the upload over the "
                                   "lab's skeleton, grade it in the sandbox, and always write "
                                   "results.json (docs/instructors.md, docs/gradescope/).")
    g.add_argument("lab", help="the lab, e.g. vit")
    g.add_argument("upload", type=Path, nargs="?", default=Path("/autograder/submission"),
                   help="the student's upload (default /autograder/submission)")
    g.add_argument("results", type=Path, nargs="?",
                   default=Path("/autograder/results/results.json"),
                   help="where results.json goes (default /autograder/results/results.json)")
    g.add_argument("--memory", type=positive_float, default=3.0, help="GiB (default 3)")
    g.add_argument("--timeout-scale", type=positive_float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(run=cmd_gradescope)


def cmd_gradescope(args) -> int:
    from vislab.grading import load_lab

    load_lab(args.lab)  # an unknown lab is the instructor's mistake: one line, exit 2
    limits = Limits(memory=int(args.memory * 2**30), timeout_scale=args.timeout_scale)
    done = gradescope_submission(args.lab, args.upload, args.results, args.seed, limits)
    print(f"wrote {args.results}: {done['result']['score']:g} points")
    rep = done["report"]
    return 1 if rep is None or rep["grader_problem"] else 0


def cmd_autograde(args) -> int:
    if args.memory < 0.5:
        raise UsageError(f"--memory {args.memory:g} GiB is too little for Python and torch to "
                         f"start; give at least 0.5 (the default is 3)")
    limits = Limits(memory=int(args.memory * 2**30), timeout_scale=args.timeout_scale)
    reports = autograde(args.lab, args.submissions, args.out, args.workers, limits, args.task,
                        args.seed, regrade=args.regrade, names=args.names)
    problems = [r["student"] for r in reports if r["grader_problem"]]
    if problems:
        print(f"vislab: the grader failed on {', '.join(problems)} (see report.json)",
              file=sys.stderr)
        return 1
    return 0
