"""Checks with points, the student's code behind one door, and the grade table.

A check is a function of the grader's. It draws its own inputs, computes its own references,
and touches the student's code only through `student.run(probe, **inputs)`: a probe is a small
function (in autograder/<lab>_probes.py) that builds the student's modules, runs them on those
inputs and returns plain tensors, numbers, strings, lists and dicts. Today the probe runs in
this process; because only plain values cross that door, the same checks can run with the
student's code in another process and the comparison still done here.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from vislab import AUTOGRADER_DIR
from vislab.impl import load_module, load_package

STATUSES = ("passed", "failed", "not implemented", "error", "timeout")


class CheckFailed(AssertionError):
    """The student's code ran but its result is wrong; the message says how."""


class CheckTimeout(BaseException):
    """A check ran past its time limit (BaseException so `except Exception` cannot swallow it)."""


class ForbiddenCall(Exception):
    """The student's code called a function the task asks them to write themselves."""


class UnknownLab(KeyError):
    """No autograder for the lab, or no such task in it."""

    def __str__(self):
        return self.args[0]


class StudentError(Exception):
    """The student's code raised; `status` is 'not implemented', 'failed' or 'error'."""

    def __init__(self, status: str, message: str, todo: str | None = None):
        super().__init__(message)
        self.status, self.message, self.todo = status, message, todo


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
        if task not in self.tasks:
            raise ValueError(f"check for unknown task {task!r}; tasks are {list(self.tasks)}")

        def register(fn):
            self.checks.append(Check(task, fn.__name__, points, fn, timeout))
            return fn
        return register

    def points(self, task: str) -> float:
        return sum(c.points for c in self.checks if c.task == task)


def load_lab(name: str) -> Lab:
    """The `lab` object of autograder/<name>.py."""
    pkg = "_vislab_autograder"
    if pkg not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            pkg, AUTOGRADER_DIR / "__init__.py", submodule_search_locations=[str(AUTOGRADER_DIR)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[pkg] = module
        spec.loader.exec_module(module)
    if not (AUTOGRADER_DIR / f"{name}.py").exists():
        labs = sorted(p.stem for p in AUTOGRADER_DIR.glob("*.py")
                      if not p.stem.startswith("_") and not p.stem.endswith("_probes"))
        raise UnknownLab(f"no lab named {name!r}; labs are: {', '.join(labs)}")
    return importlib.import_module(f"{pkg}.{name}").lab


# ------------------------------------------------------------------------ the student's side

class Modules:
    """`modules.model` imports the student's model.py on first use."""

    def __init__(self, path: Path):
        self._path = path
        self._package = None

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._package is None:
            self._package = load_package(self._path)
        return load_module(self._package, name)


class Student:
    """The student's code, reachable only through `run`."""

    def __init__(self, path: Path):
        self.path = Path(path).resolve()
        self._modules = Modules(self.path)

    def run(self, probe: Callable, **inputs):
        """`probe(modules, **inputs)` with the student's modules; returns plain values only."""
        sink = io.StringIO()  # a student's prints must not garble the grade table
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                out = probe(self._modules, **inputs)
        except (CheckTimeout, KeyboardInterrupt):
            raise
        except BaseException as exc:  # SystemExit at import time is the student's error too
            raise self._explain(exc) from None
        return plain(out)

    def _explain(self, exc: BaseException) -> StudentError:
        where = self._where(exc)
        if isinstance(exc, ForbiddenCall):
            return StudentError("failed", str(exc))
        if isinstance(exc, NotImplementedError) and str(exc).startswith("TODO("):
            todo = str(exc)[5:].split(")")[0]
            return StudentError("not implemented", f"TODO({todo}) not implemented{where}", todo)
        if isinstance(exc, SyntaxError) and exc.filename:
            return StudentError("error", f"SyntaxError in {Path(exc.filename).name} line "
                                         f"{exc.lineno}: {exc.msg}")
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return StudentError("error", f"{type(exc).__name__}{where}: {text}"[:400])

    def _where(self, exc: BaseException) -> str:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if self.path in Path(f.filename).resolve().parents]
        if not frames:
            return ""
        f = frames[-1]
        return f" at {Path(f.filename).name}:{f.lineno} in {f.name}"


def plain(value):
    """Copy a probe's result into plain Python/torch values (no subclasses, no custom objects)."""
    if isinstance(value, torch.Tensor):
        with torch._C.DisableTorchFunctionSubclass():
            return value.detach().cpu().clone().as_subclass(torch.Tensor)
    if type(value) in (int, float, bool, str, type(None)):
        return value
    if type(value) in (list, tuple):
        return [plain(v) for v in value]
    if type(value) is dict and all(type(k) is str for k in value):
        return {k: plain(v) for k, v in value.items()}
    raise CheckFailed(f"expected a tensor (or numbers), got a {type(value).__name__}")


@contextlib.contextmanager
def forbid(task: str, *targets: tuple[object, str]):
    """Inside the block, calling any `getattr(owner, name)` raises ForbiddenCall."""
    saved = [(owner, name, getattr(owner, name)) for owner, name in targets]

    def refuse(label):
        def call(*args, **kwargs):
            raise ForbiddenCall(f"{task} must be written from tensor operations: your code "
                                f"called {label}, which the task asks you to write yourself")
        return call
    try:
        for owner, name, _ in saved:
            setattr(owner, name, refuse(f"{getattr(owner, '__name__', owner)}.{name}"))
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


# ----------------------------------------------------------------------- helpers for checks

def as_tensor(value, what: str) -> torch.Tensor:
    if type(value) is not torch.Tensor:
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def expect_shape(value, shape, what: str) -> torch.Tensor:
    value = as_tensor(value, what)
    expect(tuple(value.shape) == tuple(shape),
           f"{what}: expected shape {tuple(shape)}, got {tuple(value.shape)}")
    return value


def expect_close(got, want: torch.Tensor, what: str, atol: float = 1e-5, rtol: float = 1e-4,
                 diagnoses: dict[str, torch.Tensor] | None = None) -> None:
    """`got` equals `want` within tolerance; otherwise say by how much and, where a known
    mistake reproduces `got`, which mistake it is."""
    got = expect_shape(got, want.shape, what)
    if not torch.isfinite(got).all():
        raise CheckFailed(f"{what}: contains NaN or inf")
    if torch.allclose(got.double(), want.double(), atol=atol, rtol=rtol):
        return
    diff = (got.double() - want.double()).abs().max().item()
    message = f"{what}: max abs diff {diff:.3g} (allowed {atol:g} + {rtol:g}*|expected|)"
    for mistake, wrong in (diagnoses or {}).items():
        if wrong.shape == got.shape and torch.allclose(got.double(), wrong.double(),
                                                       atol=atol, rtol=rtol):
            message += f"; it matches {mistake}"
            break
    raise CheckFailed(message)


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


@dataclass
class TaskResult:
    task: str
    title: str
    earned: float
    possible: float
    status: str
    message: str


def _on_alarm(signum, frame):
    raise CheckTimeout()


def run_check(check: Check, student: Student) -> CheckResult:
    start = time.perf_counter()
    status, message = "passed", ""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, check.timeout)
    try:
        check.fn(student)
    except CheckTimeout:
        status, message = "timeout", f"{check.name} did not finish in {check.timeout:g} s"
    except StudentError as exc:
        status, message = exc.status, exc.message
        if exc.todo and exc.todo != check.task:
            message = f"needs {exc.todo}, which is not implemented yet"
    except CheckFailed as exc:
        status, message = "failed", str(exc)
    except Exception as exc:  # a bug in the check itself: never crash the grade table
        status, message = "error", f"grader error in {check.name}: {type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    earned = check.points if status == "passed" else 0.0
    return CheckResult(check.task, check.name, check.points, earned, status, message,
                       round(time.perf_counter() - start, 3))


def grade(lab: Lab, path: Path, task: str | None = None) -> list[CheckResult]:
    if task is not None and task not in lab.tasks:
        raise UnknownLab(f"no task {task!r} in lab {lab.name}; tasks are: {', '.join(lab.tasks)}")
    student = Student(path)
    return [run_check(c, student) for c in lab.checks if task in (None, c.task)]


def summarize(lab: Lab, results: list[CheckResult]) -> list[TaskResult]:
    rows = []
    for task, title in lab.tasks.items():
        mine = [r for r in results if r.task == task]
        if not mine:
            continue
        failing = [r for r in mine if r.status != "passed"]
        if not failing:
            status, message = "passed", ""
        elif all(r.status == "not implemented" for r in mine):
            status, message = "not implemented", failing[0].message
        else:
            status, message = failing[0].status, f"{failing[0].check}: {failing[0].message}"
        rows.append(TaskResult(task, title, sum(r.earned for r in mine),
                               sum(r.points for r in mine), status, message))
    return rows


def format_table(rows: list[TaskResult]) -> str:
    width = max([len(r.task) for r in rows] + [len("total")])
    lines = [f"{'task':<{width}}  {'points':>7}  {'status':<15}  note"]
    for r in rows:
        points = f"{r.earned:g}/{r.possible:g}"
        lines.append(f"{r.task:<{width}}  {points:>7}  {r.status:<15}  {r.message}")
    earned, possible = sum(r.earned for r in rows), sum(r.possible for r in rows)
    lines.append(f"{'total':<{width}}  {f'{earned:g}/{possible:g}':>7}")
    return "\n".join(lines)


def report(lab: Lab, path: Path, results: list[CheckResult]) -> dict:
    rows = summarize(lab, results)
    return {"lab": lab.name, "impl": str(path),
            "earned": sum(r.earned for r in rows), "possible": sum(r.possible for r in rows),
            "tasks": [asdict(r) for r in rows], "checks": [asdict(r) for r in results]}
