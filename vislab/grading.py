"""Checks with points, the student's code behind one door, and the grade table.

A check is a function of the grader's, `check(student, g)`. It draws its inputs from the
generator `g`, computes its own references (torch built-ins, torchvision blocks, closed forms)
and reaches the student's code only through `student.run(probe, **inputs)`, which returns plain
values (see vislab.probing). The comparison that decides the score happens here, in the
grader's process, so the same checks serve `vislab grade` (student code in this process) and
`vislab autograde` (student code isolated in another one, vislab.sandbox.IsolatedStudent).

A student object has `run(probe, **inputs)` and may have `time_limit(seconds)`, a context
manager that bounds a check's wall-clock time (raising CheckTimeout), and `take_output()`, the
student's captured prints and warnings since the last call. The in-process Student bounds time
with SIGALRM (main thread only); the isolated one kills its worker process, from any thread.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
import signal
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from vislab import AUTOGRADER_DIR
from vislab.impl import import_lab
from vislab.probing import Capture, StudentError, run_probe

STATUSES = ("passed", "failed", "not implemented", "error", "timeout", "memory")
TASK_ID = re.compile(r"[a-z0-9_]{1,40}(\.[a-z0-9_]{1,40}){0,3}")


class UnknownLab(KeyError):
    """No autograder for the lab, or no such task in it."""

    def __str__(self):
        return self.args[0]


class CheckFailed(AssertionError):
    """The student's code ran but its result is wrong; the message says how. `mistake` names
    the known mistake the result matches, when one does (a structured field for reports)."""

    def __init__(self, message: str, mistake: str | None = None):
        super().__init__(message)
        self.mistake = mistake


class CheckTimeout(BaseException):
    """A check ran past its time limit (BaseException so `except Exception` cannot swallow it).
    The message, when there is one, says what did not finish."""


# ---------------------------------------------------------------------------- the lab's checks

@dataclass(frozen=True)
class Check:
    task: str
    name: str
    points: float
    fn: Callable
    timeout: float


@dataclass
class Lab:
    """A lab's graded tasks (id -> title) and the checks that earn their points."""
    name: str
    tasks: dict[str, str]
    checks: list[Check] = field(default_factory=list)

    def check(self, task: str, points: float, timeout: float = 10.0):
        """Decorator: register `fn(student, g)` as a check worth `points` of `task`."""
        if task not in self.tasks:
            raise ValueError(f"check for unknown task {task!r}; tasks are {list(self.tasks)}")

        def register(fn):
            self.checks.append(Check(task, fn.__name__, points, fn, timeout))
            return fn
        return register

    def points(self, task: str) -> float:
        return sum(c.points for c in self.checks if c.task == task)


def lab_names() -> list[str]:
    """The labs: autograder/<lab>.py. A file <lab>_<part>.py next to <lab>.py (its probes, or
    its checks split along tasks) is part of that lab, not a lab of its own."""
    stems = {p.stem for p in AUTOGRADER_DIR.glob("*.py") if not p.stem.startswith("_")}
    return sorted(s for s in stems
                  if not any(s.startswith(f"{other}_") for other in stems - {s}))


def load_lab(name: str) -> Lab:
    """The `lab` object of autograder/<name>.py."""
    if name not in lab_names():
        raise UnknownLab(f"no lab named {name!r}; labs are: {', '.join(lab_names())}")
    pkg = "_vislab_autograder"
    if pkg not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            pkg, AUTOGRADER_DIR / "__init__.py", submodule_search_locations=[str(AUTOGRADER_DIR)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[pkg] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{pkg}.{name}").lab


# ------------------------------------------------------------------------ the student's side

class Student:
    """The student's code, reachable only through `run`; this one runs it in-process.

    For the student's own code (`vislab grade`, notebooks). Untrusted code is graded with
    vislab.sandbox.IsolatedStudent, which has the same interface."""

    def __init__(self, path: Path):
        self.path = Path(path).resolve()
        self._lab = import_lab(self.path)
        self._output = Capture()

    def run(self, probe: Callable, **inputs):
        """`probe(lab, **inputs)` on the student's modules; plain values, or StudentError."""
        return run_probe(self._lab, probe, inputs, self._output)

    def time_limit(self, seconds: float):
        return alarm(seconds)

    def take_output(self) -> str:
        return self._output.take()


# ----------------------------------------------------------------------- helpers for checks

def expect(condition: bool, message: str, mistake: str | None = None) -> None:
    """Fail with `message` unless `condition`; `mistake` names the known mistake it detects."""
    if not condition:
        raise CheckFailed(message, mistake)


def expect_tensor(value, what: str) -> torch.Tensor:
    if type(value) is not torch.Tensor:
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def expect_shape(value, shape, what: str) -> torch.Tensor:
    value = expect_tensor(value, what)
    expect(tuple(value.shape) == tuple(shape),
           f"{what}: expected shape {tuple(shape)}, got {tuple(value.shape)}")
    return value


def expect_close(got, want: torch.Tensor, what: str, atol: float = 1e-5, rtol: float = 1e-4,
                 diagnoses: dict[str, torch.Tensor] | None = None) -> None:
    """`got` equals `want` within tolerance; otherwise say by how much and, where a known
    mistake reproduces `got`, which mistake it is."""
    got = expect_shape(got, want.shape, what)
    expect(torch.isfinite(got).all().item(), f"{what}: contains NaN or inf")
    if torch.allclose(got.double(), want.double(), atol=atol, rtol=rtol):
        return
    diff = (got.double() - want.double()).abs().max().item()
    allowed = ("must be exactly equal" if atol == rtol == 0
               else f"allowed {atol:g} + {rtol:g}*|expected|")
    message = f"{what}: max abs diff {diff:.3g} ({allowed})"
    for mistake, wrong in (diagnoses or {}).items():
        if wrong.shape == got.shape and torch.allclose(got.double(), wrong.double(),
                                                       atol=atol, rtol=rtol):
            raise CheckFailed(f"{message}; it matches {mistake}", mistake)
    raise CheckFailed(message)


def expect_gradients(got: dict, want: dict[str, torch.Tensor], what: str,
                     atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Every parameter in `want` got a finite gradient equal to the reference's."""
    for name, ref in want.items():
        grad = got.get(name)
        expect(grad is not None, f"{what}: {name} got no gradient (is it used in forward, "
                                 f"and is the graph kept, e.g. no .detach() or torch.no_grad()?)")
        expect_close(grad, ref, f"{what}: gradient of {name}", atol=atol, rtol=rtol)


# Ways out of a torch function mode (vislab.probing.Forbid): a submission that names one is
# refused by the source check, since an in-process guard cannot stop code that disables it.
ESCAPE_HATCHES = {"DisableTorchFunction", "DisableTorchFunctionSubclass", "_pop_mode",
                  "_pop_torch_function_stack", "_len_torch_function_stack", "_get_function_stack_at",
                  "_set_torch_function_mode", "aten", "_ops", "_C", "__torch_function__",
                  "TorchFunctionMode", "_disabled_torch_function_impl"}


def names_in_source(student, files: list[str], names: set[str]) -> list[str]:
    """Where the student's files use any of `names` as code (comments and strings do not
    count): 'file.py:LINE name' for each, read in the grader's process from the grader's copy
    of the submission (what the worker might report about itself is not asked)."""
    import io
    import tokenize

    found = []
    for name in files:
        path = Path(student.path) / name
        try:
            text = path.read_text(errors="replace")
            tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        except (OSError, tokenize.TokenError, SyntaxError, IndentationError):
            continue  # a missing or broken file is reported by the checks that import it
        found += [f"{name}:{t.start[0]} {t.string}" for t in tokens
                  if t.type == tokenize.NAME and t.string in names]
    return found


def expect_not_in_source(student, files: list[str], forbidden: set[str], task: str) -> None:
    """The source check behind "you may not call X": the forbidden functions and the ways to
    switch the in-process guard off, found in the student's files, fail the check."""
    hits = names_in_source(student, files, forbidden | ESCAPE_HATCHES)
    expect(not hits, f"{task} must be written from tensor operations without {', '.join(sorted(forbidden))} "
                     f"and without switching off the grader's guard; found {', '.join(hits[:3])}",
           "a forbidden built-in or a way around the guard")


# ---------------------------------------------------------------------------------- running

@dataclass
class CheckResult:
    task: str
    check: str
    points: float
    earned: float
    status: str
    message: str
    seconds: float
    output: str = ""  # the student's prints and warnings during the check (truncated)
    mistake: str = ""  # the known mistake the student's result matched, if any


def _on_alarm(signum, frame):
    raise CheckTimeout()


@contextlib.contextmanager
def alarm(seconds: float):
    """Raise CheckTimeout in this thread after `seconds` (SIGALRM). Signals reach only the main
    thread, so elsewhere (and where there is no SIGALRM) this sets no limit: code that must be
    stopped from any thread runs in a worker process (vislab.sandbox)."""
    if (not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


MESSAGE_LIMIT, OUTPUT_LIMIT = 1500, 8000  # characters of a check's message and of its output


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A message as feedback shows it: one line, no control characters (no escape sequences,
    carriage returns or newlines from the student's code), at most `limit` characters."""
    text = " ".join(CONTROL.sub(" ", str(text)).split())
    return text if len(text) <= limit else text[:limit] + f" ... ({len(text) - limit} more characters)"


def printable(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """The student's printed output as feedback shows it: lines kept, other control
    characters (escape sequences, carriage returns) removed, at most `limit` characters."""
    text = CONTROL.sub("", str(text).replace("\r\n", "\n").replace("\t", "    "))
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def check_seed(check: Check, seed: int) -> int:
    """Each check's inputs come from its own seed: regrading gives identical scores."""
    return zlib.crc32(f"{seed}:{check.task}:{check.name}".encode())


def run_check(check: Check, student, seed: int = 0) -> CheckResult:
    start = time.perf_counter()
    status, message, mistake = "passed", "", ""
    time_limit = getattr(student, "time_limit", alarm)
    try:
        with time_limit(check.timeout):
            check.fn(student, torch.Generator().manual_seed(check_seed(check, seed)))
    except CheckTimeout as exc:
        status = "timeout"
        message = str(exc) or f"did not finish in {check.timeout:g} s (an endless loop?)"
    except StudentError as exc:
        status, message = exc.status, exc.message
        if exc.todo and exc.todo != check.task:
            todo = exc.todo if TASK_ID.fullmatch(exc.todo) else "another task"
            message = f"needs {todo}, which is not implemented yet"
    except CheckFailed as exc:
        status, message, mistake = "failed", str(exc), exc.mistake or ""
    except Exception as exc:  # a bug in the check itself: never crash the grade table
        status, message = "error", f"grader error in {check.name}: {type(exc).__name__}: {exc}"
    take_output = getattr(student, "take_output", None)
    output = printable(take_output()) if take_output else ""
    earned = check.points if status == "passed" else 0.0
    return CheckResult(check.task, check.name, check.points, earned, status, one_line(message),
                       round(time.perf_counter() - start, 3), output, one_line(mistake, 300))


@contextlib.contextmanager
def one_torch_thread():
    """Run the block with one torch thread, then restore the count. Measured on a 2-core
    machine with one other busy process: the ViT lab's checks took 4 s with one thread and ran
    past the 60 s limit of the MNIST training check with two (OpenMP threads wait for each
    other at every operation while one of them is not running)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def grade(lab: Lab, path: Path, task: str | None = None, seed: int = 0,
          student=None) -> list[CheckResult]:
    """Run the lab's checks (or one task's) against the lab folder `path`."""
    if task is not None and task not in lab.tasks:
        raise UnknownLab(f"no task {task!r} in lab {lab.name}; tasks are: {', '.join(lab.tasks)}")
    student = student or Student(path)
    checks = [c for c in lab.checks if task in (None, c.task)]
    if isinstance(student, Student):  # in this process: its one-off costs are no check's
        from vislab.probing import warm_up
        warm_up()
    if hasattr(student, "set_budget"):  # an isolated submission: a total time for all checks
        student.set_budget([c.timeout for c in checks])
    with one_torch_thread():
        return [run_check(c, student, seed) for c in checks]


def grade_lab(name: str, impl: str | Path = "labs", task: str | None = None,
              show: bool = True) -> dict:
    """Grade lab `name` in `impl` (labs, solutions or a folder, e.g. "." in a notebook), print
    the task table, and return the report."""
    from vislab.impl import lab_dir

    lab = load_lab(name)
    path = lab_dir(name, impl)
    rep = report(lab, path, grade(lab, path, task))
    if show:
        print(f"grading {name} in {path}")
        print(format_table(rep))
    return rep


def summarize(lab: Lab, results: list[CheckResult]) -> list[dict]:
    """One row per task: points earned and possible, a status and the first helpful message."""
    rows = []
    for task, title in lab.tasks.items():
        mine = [r for r in results if r.task == task]
        if not mine:
            continue
        failing = [r for r in mine if r.status != "passed"]
        if not failing:
            status, message = "passed", ""
        elif all(r.status == "not implemented" for r in failing):
            status, message = "not implemented", failing[0].message
        else:
            first = next(r for r in failing if r.status != "not implemented")
            status, message = first.status, f"{first.check}: {first.message}"
            others = [r.check for r in failing if r is not first]
            if others:  # every failing check is named; --json has each one's message
                message += f" (+{len(others)} more failing: {', '.join(others)})"
        rows.append({"task": task, "title": title, "earned": sum(r.earned for r in mine),
                     "possible": sum(r.points for r in mine), "status": status,
                     "message": message})
    return rows


def report(lab: Lab, path: Path, results: list[CheckResult]) -> dict:
    rows = summarize(lab, results)
    return {"lab": lab.name, "impl": str(path),
            "earned": sum(r["earned"] for r in rows), "possible": sum(r["possible"] for r in rows),
            "tasks": rows, "checks": [asdict(r) for r in results]}


def format_table(rep: dict) -> str:
    rows = rep["tasks"]
    width = max([len(r["task"]) for r in rows] + [len("total")])
    lines = [f"{'task':<{width}}  {'points':>7}  {'status':<15}  note"]
    for r in rows:
        points = f"{r['earned']:g}/{r['possible']:g}"
        lines.append(f"{r['task']:<{width}}  {points:>7}  {r['status']:<15}  {r['message']}")
    total = f"{rep['earned']:g}/{rep['possible']:g}"
    lines.append(f"{'total':<{width}}  {total:>7}")
    return "\n".join(lines)
