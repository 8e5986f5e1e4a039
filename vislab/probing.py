"""The student's side of grading: run a probe on the student's modules, return plain values.

A probe is a function in autograder/<lab>_probes.py, `probe(lab, **inputs)`, where `lab` gives
the student's modules (`lab.model`, `lab.distill`, ...). It builds the student's objects, loads
weights the grader sent, runs them on inputs the grader drew, and returns only plain values:
tensors, numbers, strings, None, lists and str-keyed dicts of those. Nothing here decides a
score; the grader compares what comes back with references it computed itself. That is why
the same probes can run in this process (`vislab grade`) or in an isolated one
(`vislab autograde`).

This module is public: it is imported by the student's process and holds nothing secret.
"""
from __future__ import annotations

import contextlib
import io
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from vislab.impl import Lab


class ProbeFailed(Exception):
    """The student's code ran but broke the task's contract (wrong names, wrong type, ...)."""


class ForbiddenCall(ProbeFailed):
    """The student's code called a function the task asks them to write themselves."""


class StudentError(Exception):
    """What went wrong in the student's code: status 'not implemented', 'failed', 'error',
    'timeout' or 'memory'."""

    def __init__(self, status: str, message: str, todo: str | None = None):
        super().__init__(message)
        self.status, self.message, self.todo = status, message, todo

    def to_dict(self) -> dict:
        return {"status": self.status, "message": self.message, "todo": self.todo}


class Capture(io.TextIOBase):
    """A text sink that keeps the first `limit` characters written to it and counts the rest."""

    def __init__(self, limit: int = 4000):
        super().__init__()
        self.limit, self.parts, self.kept, self.dropped = limit, [], 0, 0

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        text = str(text)
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(text[:room])
            self.kept += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def take(self) -> str:
        """What was written since the last take (truncated), then start afresh."""
        text = "".join(self.parts)
        if self.dropped:
            text += f"\n... ({self.dropped} more characters not shown)"
        self.parts, self.kept, self.dropped = [], 0, 0
        return text


def warm_up() -> None:
    """Pay once, before any check, what a process's first backward pass and optimiser steps
    cost (lazy imports, torch._dynamo among them: 1-10 s depending on load), so that no check
    is charged for it: the grading worker's fork server does this before it forks, and
    in-process grading before its first check."""
    layer = nn.Linear(4, 3)
    for opt in (torch.optim.SGD(layer.parameters(), lr=0.1),
                torch.optim.AdamW(layer.parameters(), lr=0.1), torch.optim.Adam(layer.parameters())):
        nn.functional.cross_entropy(layer(torch.randn(2, 4)), torch.tensor([0, 2])).backward()
        opt.step()
        opt.zero_grad()
    torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(layer.parameters(), lr=0.1), lambda i: 1.0)


def run_probe(lab: Lab, probe: Callable, inputs: dict, output: io.TextIOBase | None = None,
              threads: int = 1):
    """`probe(lab, **inputs)` with the student's output captured (into `output`, or dropped);
    plain values or StudentError. Warnings go to stderr, so they are captured too. The torch
    thread count is set to `threads` first: the student's code may have changed it."""
    sink = output if output is not None else Capture(0)  # prints must not garble the table
    torch.set_num_threads(threads)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return plain(probe(lab, **inputs))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit at import time is the student's error too
        if type(exc).__name__ == "CheckTimeout":
            raise
        raise explain(exc, lab.path) from None


def explain(exc: BaseException, folder: Path) -> StudentError:
    """Turn an exception from the student's code into a status and one helpful line."""
    if isinstance(exc, StudentError):  # already explained (e.g. by the sandbox)
        return exc
    place = where(exc, folder)
    if isinstance(exc, ProbeFailed):
        return StudentError("failed", str(exc))
    if isinstance(exc, NotImplementedError) and str(exc).startswith("TODO("):
        todo = str(exc)[5:].split(")")[0]
        return StudentError("not implemented", f"TODO({todo}) not implemented{place}", todo)
    if isinstance(exc, SyntaxError) and exc.filename:
        return StudentError("error", f"SyntaxError in {Path(exc.filename).name} line "
                                     f"{exc.lineno}: {exc.msg}")
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("_vislab_impl_"):
        missing = exc.name.split(".", 1)[-1].replace(".", "/") + ".py"
        return StudentError("error", f"{missing} is missing from {Path(folder).name}/: copy it "
                                     f"from the lab's skeleton (labs/{Path(folder).name}/) and "
                                     f"keep every file of the lab in one folder")
    if isinstance(exc, SystemExit):
        return StudentError("error", f"your code called sys.exit({exc.code}){place}")
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError)
                                        and "can't allocate memory" in str(exc)):
        return StudentError("memory", f"ran out of memory{place}: your code asked for more "
                                      f"memory than grading allows (a huge tensor?)")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return StudentError("error", f"{type(exc).__name__}{place}: {text}"[:400])


def where(exc: BaseException, folder: Path) -> str:
    """' at file.py:LINE in function' for the innermost frame of the traceback inside `folder`
    (the student's files), or '' when the error did not pass through them."""
    folder = Path(folder).resolve()
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if folder in Path(f.filename).resolve().parents]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {Path(f.filename).name}:{f.lineno} in {f.name}"


def plain(value):
    """Copy a probe's result into plain values (no tensor subclasses, no custom objects)."""
    if isinstance(value, torch.Tensor):
        with torch._C.DisableTorchFunctionSubclass():
            return value.detach().cpu().clone().as_subclass(torch.Tensor)
    if type(value) in (int, float, bool, str, type(None)):
        return value
    if type(value) in (list, tuple):
        return [plain(v) for v in value]
    if type(value) is dict and all(type(k) is str for k in value):
        return {k: plain(v) for k, v in value.items()}
    raise ProbeFailed(f"expected a tensor (or numbers), got a {type(value).__name__}")


# --------------------------------------------------------------------- helpers for probes

@contextlib.contextmanager
def replaced(module, **values):
    """Put reference functions or classes in place of the student's in `module` while a probe
    runs, so that one unfinished task does not cost the next one its points; restored after."""
    old = {name: getattr(module, name) for name in values if hasattr(module, name)}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name in values:
            if name in old:
                setattr(module, name, old[name])
            else:
                delattr(module, name)


def returned(value, what: str) -> torch.Tensor:
    """`value` must be a real torch.Tensor (not a subclass, not a look-alike object)."""
    if type(value) is not torch.Tensor:
        raise ProbeFailed(f"{what} must return a torch.Tensor, got {type(value).__name__}")
    return value


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> nn.Module:
    """Load the grader's weights; a mismatch names the parameters the skeleton fixes."""
    if not isinstance(module, nn.Module):
        raise ProbeFailed(f"{what} is not an nn.Module (got {type(module).__name__})")
    have = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in state.items()}
    if have != want:
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        shapes = sorted(k for k in set(have) & set(want) if have[k] != want[k])
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}")
        if extra:
            parts.append(f"unexpected {extra[:4]}")
        for k in shapes[:3]:
            parts.append(f"{k} has shape {have[k]}, expected {want[k]}")
        raise ProbeFailed(f"{what}'s parameters differ from the skeleton's: {'; '.join(parts)} "
                          f"(keep the names and shapes that __init__ creates)")
    module.load_state_dict(state)
    return module


def gradients(module: nn.Module) -> dict[str, torch.Tensor | None]:
    """Every parameter's .grad by name (None where no gradient reached it)."""
    return {name: p.grad for name, p in module.named_parameters()}


def forward_backward(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor | None, what: str,
                     *args) -> dict:
    """module(x, *args) and, when grad_out is given, the gradients of <output, grad_out> for
    every parameter and for x. A wrong output shape comes back without gradients: the check
    reports the shape."""
    x = x.clone().requires_grad_(grad_out is not None)
    out = returned(module(x, *args), what)
    if grad_out is None or out.shape != grad_out.shape:
        return {"out": out}
    if not out.requires_grad:
        raise ProbeFailed(f"{what}'s output carries no gradient (torch.no_grad or .detach()?)")
    (out * grad_out).sum().backward()
    return {"out": out, "grads": gradients(module), "input_grad": x.grad}


def train_classifier(model: nn.Module, what: str, x_train: torch.Tensor, y_train: torch.Tensor,
                     epochs: int, batch_size: int, lr: float) -> nn.Module:
    """The training checks' recipe: AdamW (weight decay 0.05), 10 warm-up steps then linear decay
    to zero, cross-entropy on shuffled batches; returns the trained model in eval mode (the
    probe returns its weights, and the grader evaluates them on images it keeps)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps_per_epoch = len(x_train) // batch_size
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1, (i + 1) / 10) * (1 - i / total))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_train))
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = nn.functional.cross_entropy(returned(model(x_train[idx]), what), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


class Forbid(TorchFunctionMode):
    """Inside the block, calling any torch function named in `names` raises ForbiddenCall.

    A torch function mode sees every call, however the student imported or aliased it.
    """

    def __init__(self, task: str, names: set[str]):
        super().__init__()
        self.task, self.names = task, names

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.names:
            raise ForbiddenCall(f"{self.task} must be written from tensor operations, but your "
                                f"code called {name}, which the task asks you to write yourself")
        return func(*args, **(kwargs or {}))
