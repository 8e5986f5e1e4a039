"""Run a submission's code in a worker process that can see and touch nothing else.

`IsolatedStudent(path)` has the interface of vislab.grading.Student: a check calls
`student.run(probe, **inputs)` and gets back plain values, but the probe runs in a worker process
that serves one submission, check after check:

- workers are forked by a fork server (`python -m vislab.sandbox zygote`, one per grader
  process) that has imported torch and warmed it up once, so a worker is ready in about 0.1 s
  instead of 4-6 s of imports (most of a submission's grading time before); the zygote runs
  only the kit's own code, so a worker inherits nothing secret from it;

- requests and results cross two pipes as `torch.save` bytes; the grader reads results with
  `torch.load(weights_only=True)`, caps their size and accepts only plain values (tensors,
  numbers, str, None, lists, str-keyed dicts): nothing the student's process sends is unpickled;
- the grader enforces each check's wall-clock limit by killing the worker (its cgroup, its PID
  namespace, its process group) and starts a fresh worker for the next check; it works from any
  thread, so several submissions can be graded at once;
- where the OS allows, the worker runs as an unprivileged user of its own, in its own mount, PID,
  network, IPC and UTS namespaces, in cgroups that cap its memory, processes and CPUs, with a
  root file system that holds only the system, Python, the installed packages and `vislab/`,
  plus read-only copies of the submission and of the lab's probes, and a private /tmp as cwd and
  HOME; solutions/, autograder/, tests/, .git, other submissions and the output folder are not
  there. Where a mechanism is not allowed (not root, no namespaces, not Linux), grading goes on
  with what is available and `protections` says which were active.

Every later check of the submission reuses the warm worker, unless one was killed. A module whose
import hung, crashed or ran out of memory is remembered, so later checks that need it report that
at once instead of waiting for another timeout.

This package is imported by the worker too; it holds nothing secret. The grader's side is here,
the worker's in `worker.py` (with `seccomp.py`), the wire format in `wire.py`, system calls and
cgroups in `system.py`.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from vislab import AUTOGRADER_DIR, REPO_ROOT, SOLUTIONS_DIR
from vislab.sandbox.system import Cgroups, GiB, MiB  # noqa: F401 - Cgroups: autograde, tests
from vislab.sandbox.wire import HEADER, check_plain, check_stored, decode, encode

UID_BASE = int(os.environ.get("VISLAB_SANDBOX_UID", "64000"))  # one uid per parallel worker


@dataclass(frozen=True)
class Limits:
    """What one submission's worker may use."""
    memory: int = 3 * GiB           # bytes (memory cgroup; else address space above torch's)
    pids: int = 128                 # processes and threads at once (pids cgroup / RLIMIT_NPROC)
    threads: int = 1                # torch threads, and the CPUs the worker may use (cpu cgroup);
    #                                 one: two OpenMP threads on a busy 2-core machine made the
    #                                 ViT training check >10x slower (measured)
    timeout_scale: float = 1.0      # multiplies every check's time limit
    budget_share: float = 0.6       # a submission's total time: this share of the sum of its
    #                                 checks' limits, at least the longest one (a submission that
    #                                 sleeps just under every limit loses its later checks
    #                                 instead of stalling the batch)
    startup: float = 120.0          # seconds for a fresh worker to import torch and say ready
    file_size: int = 64 * MiB       # the largest file the student's code may write
    tmp_size: int = 256 * MiB       # its private /tmp (tmpfs, counted as its memory)
    result_size: int = 32 * MiB     # the largest result the grader reads back
    output: int = 4000              # characters of the student's output kept per check
    cpu_seconds: int = 3600         # CPU time of the worker (a backstop; wall clock rules)


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the student's code): the worker could not start."""


# --------------------------------------------------------------- copying a submission

class SubmissionTooLarge(ValueError):
    """A submission holds more files or bytes than grading accepts."""


def copy_tree_safely(source: Path, target: Path, max_bytes: int = 50 * MiB,
                     max_files: int = 2000) -> None:
    """Copy the regular files and folders under `source` into `target`: symbolic links, devices,
    FIFOs and caches are skipped (a link must never pull in a file from elsewhere), and the
    total size and count are capped."""
    source = Path(source)
    target.mkdir(parents=True, exist_ok=True)
    total = count = 0
    for folder, dirs, files in os.walk(source, followlinks=False):
        here = Path(folder)
        rel = here.relative_to(source)
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", ".git", ".ipynb_checkpoints")
                         and not (here / d).is_symlink())
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            path = here / name
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                             | getattr(os, "O_NONBLOCK", 0))
            except OSError:
                continue  # a symbolic link, or unreadable
            with os.fdopen(fd, "rb") as src:
                if not stat.S_ISREG(os.fstat(src.fileno()).st_mode) or name.endswith(".pyc"):
                    continue
                count += 1
                if count > max_files:
                    raise SubmissionTooLarge(f"more than {max_files} files")
                with open(target / rel / name, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        total += len(chunk)
                        if total > max_bytes:
                            raise SubmissionTooLarge(f"more than {max_bytes // MiB} MiB")
                        dst.write(chunk)


def probe_files() -> list[Path]:
    """The probes of every lab (public code: they run the student's modules)."""
    return sorted(AUTOGRADER_DIR.glob("*_probes.py"))


def secret_paths() -> list[Path]:
    """Paths the worker must never see, whatever else is exposed."""
    return [SOLUTIONS_DIR, AUTOGRADER_DIR, REPO_ROOT / "tests", REPO_ROOT / ".git",
            REPO_ROOT / "labs", REPO_ROOT / "runs", REPO_ROOT / "benchmarks"]


def exposed_paths() -> list[str]:
    """What the worker's root file system holds, read-only: the system, the interpreter, the
    installed packages and the `vislab` package (nothing else of the repository)."""
    import site
    import vislab

    paths = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
             sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix,
             str(Path(sys.executable).resolve().parent), str(Path(vislab.__file__).parent)]
    with contextlib.suppress(Exception):
        paths += site.getsitepackages()
    unique = []
    for p in sorted({os.path.abspath(p) for p in paths if p}, key=len):
        if os.path.lexists(p) and not any(p == q or p.startswith(q.rstrip("/") + "/")
                                          for q in unique):
            unique.append(p)
    return unique


# ------------------------------------------------------------------ the grader's side

_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()
_scratch_root: Path | None = None


def _scratch_folder() -> Path:
    """A fresh folder for one worker, inside this grader's own temporary folder, which other
    users may pass through (mode 711) but not list."""
    global _scratch_root
    with _uid_lock:
        if _scratch_root is None or not _scratch_root.is_dir():
            _scratch_root = Path(tempfile.mkdtemp(prefix="vislab-sandbox-"))
            _scratch_root.chmod(0o711)
            atexit.register(shutil.rmtree, _scratch_root, True)
    return Path(tempfile.mkdtemp(dir=_scratch_root))


_uid_locks: dict[int, int] = {}  # uid -> the open lock file that claims it


def _take_uid() -> int:
    """A uid no other worker uses, in this process or another grader's on this machine (a
    lock file per uid, held while the worker lives): RLIMIT_NPROC and signals are per uid."""
    import fcntl

    folder = Path(tempfile.gettempdir()) / "vislab-sandbox-uids"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    with _uid_lock:
        for uid in range(UID_BASE, UID_BASE + 10000):
            if uid in _uids_in_use:
                continue
            try:
                fd = os.open(folder / str(uid), os.O_CREAT | os.O_RDWR, 0o600)
            except OSError:
                fd = None
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                _uid_locks[uid] = fd
            _uids_in_use.add(uid)
            return uid
    raise SandboxError("no free sandbox uid")


def _give_uid(uid: int) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)
        fd = _uid_locks.pop(uid, None)
        if fd is not None:
            os.close(fd)  # closing releases the lock


class _Dead(Exception):
    """The worker ended (or closed its pipe) before answering."""


class _Late(Exception):
    """The deadline passed before the worker answered."""


class _Zygote:
    """The grader's fork server: one process per grader that imports torch and warms it up once
    (about 4-6 s of CPU on the 2-core VM) and then forks a worker for each submission, so a
    worker starts in a fraction of a second. It runs only the kit's code: it never imports a
    submission, the solutions or the checks, so a worker inherits nothing secret from it.
    Requests (spawn, poll, kill) cross a Unix socket, one at a time under a lock; the worker's
    three pipes are passed with the spawn request. Only the zygote reaps its children, so a pid
    it has not reported as ended still names that worker (a kill never hits a reused pid). When
    the grader process ends, the socket closes, the zygote kills its workers and exits."""

    _lock = threading.Lock()
    _current: _Zygote | None = None

    @classmethod
    def get(cls, startup: float) -> _Zygote:
        with cls._lock:
            if cls._current is None or cls._current.proc.poll() is not None:
                cls._current = cls(startup)
            return cls._current

    def __init__(self, startup: float):
        import socket

        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-B", "-m", "vislab.sandbox", "zygote", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(theirs.fileno(),), start_new_session=True, env=env, cwd="/")
        finally:
            theirs.close()
        self.sock, self.lock = mine, threading.Lock()
        self.sock.settimeout(startup)
        try:
            ready = self.sock.recv(1 << 16)
        except OSError:
            ready = b""
        if ready != b"ready":
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            lines = err.decode("utf-8", "replace").strip().splitlines()
            raise SandboxError("the grading worker did not start (its fork server "
                               f"{'said: ' + lines[-1][:300] if lines else 'did not say ready'})")
        self.sock.settimeout(30)
        self.proc.stderr.close()

    def ask(self, request: dict, fds: tuple = ()) -> dict:
        import socket

        with self.lock:
            try:
                socket.send_fds(self.sock, [json.dumps(request).encode()], list(fds))
                reply = self.sock.recv(1 << 16)
            except OSError as exc:
                raise SandboxError(f"the grading worker's fork server is gone ({exc})") from None
        if not reply:
            raise SandboxError("the grading worker's fork server is gone")
        return json.loads(reply)


class _Forked:
    """A worker forked by the zygote, with the part of subprocess.Popen's interface the grader
    uses: `pid`, `poll()`, `wait(timeout)`, `kill()` (of its whole process group)."""

    def __init__(self, zygote: _Zygote, pid: int):
        self.zygote, self.pid, self.returncode = zygote, pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = self.zygote.ask({"op": "poll", "pid": self.pid})["code"]
            except SandboxError:  # the zygote is gone, and its workers died with it
                self.returncode = -signal.SIGKILL
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("vislab worker", timeout)
            time.sleep(0.02)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(SandboxError):
                self.zygote.ask({"op": "kill", "pid": self.pid})


class IsolatedStudent:
    """The student's code in a worker process; `run` as in vislab.grading.Student.

    `path` is the submission's lab folder (copied, links skipped, before anything runs).
    `hide` names more folders the worker must not see (the other submissions, the output).
    `expose` names more paths the worker may read (bound read-only at the same place).
    `disable` turns off "cgroups" and/or "namespaces" (to test the fallbacks; the switch to an
    unprivileged user, when running as root, cannot be turned off: a submission never runs as
    root, and the worker refuses to start where it would).
    Use it as a context manager, or call `close()`, to end the worker and remove its files.
    Use it from one thread at a time; its worker ends at `close()` or when the grader process ends.
    """

    def __init__(self, path, limits: Limits | None = None, probes: list | None = None,
                 hide: list | tuple = (), disable=(), expose: list | tuple = ()):
        unknown = set(disable) - {"cgroups", "namespaces"}
        if unknown:
            raise ValueError(f"cannot disable {sorted(unknown)}")
        self.disable = frozenset(disable)
        self.path = Path(path).resolve()
        self.limits = limits or Limits()
        self.probe_files = [Path(p).resolve() for p in (probes or probe_files())]
        self.hide = [Path(h).resolve() for h in hide]
        self.expose = [str(Path(e).resolve()) for e in expose]
        self.poisoned: dict[str, tuple[str, str]] = {}  # module -> (status, message)
        self.protections: list[str] = []
        self.startups = 0
        self._uid = _take_uid() if _is_root() else None
        self._scratch: Path | None = None
        self._proc = self._cgroups = None
        self._deadline: float | None = None
        self._limit = 0.0
        self.budget: float | None = None  # seconds left for this submission's checks
        self._buffer = bytearray()
        self._output = bytearray()
        self._output_dropped = 0
        self._next_id = 0
        self._importing: str | None = None
        self._failed_start = ""
        self._prepare()

    # -------------------------------------------------------------------- public interface

    def run(self, probe, **inputs):
        """`probe(lab, **inputs)` in the worker; plain values, or StudentError / CheckTimeout."""
        from vislab.grading import CheckTimeout
        from vislab.probing import StudentError

        module, name = self._probe_name(probe)
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        if self._deadline is None:  # a run outside time_limit ends too
            limit, deadline = 600.0, time.monotonic() + 600.0
        else:
            limit, deadline = self._limit, self._deadline
        self._next_id += 1
        request = {"id": self._next_id, "module": module, "name": name, "inputs": inputs}
        oom_before = self._cgroups.oom_kills() if self._cgroups else -1
        self._importing = None
        try:
            self._send(encode(request), deadline)
            while True:
                message = self._receive(deadline)
                if "event" in message:
                    self._importing = (message.get("module") if message["event"] == "importing"
                                       else None)
                    continue
                if message.get("id") != self._next_id:
                    continue  # a stale or forged frame
                break
        except _Late:
            self._stop()
            if self._importing:
                text = (f"importing {self._importing}.py did not finish in {limit:g} s "
                        f"(an endless loop at import time?)")
                self.poisoned[self._importing] = ("timeout", text)
                raise CheckTimeout(text) from None
            raise CheckTimeout(f"did not finish in {limit:g} s (an endless loop?)") from None
        except _Dead as exc:
            status, text = self._death(str(exc), oom_before)
            self._stop()
            if self._importing:
                text = f"importing {self._importing}.py: {text}"
                self.poisoned[self._importing] = (status, text)
            raise StudentError(status, text) from None
        self._keep_output(message.get("output"))
        if "error" in message:
            error = message["error"]
            if not isinstance(error, dict) or not isinstance(error.get("message"), str):
                raise StudentError("error", "the worker sent a malformed error")
            status = error.get("status")
            if status not in ("failed", "not implemented", "error", "timeout", "memory"):
                status = "error"
            from vislab.grading import TASK_ID, one_line

            todo = error.get("todo")
            todo = todo if isinstance(todo, str) and TASK_ID.fullmatch(todo) else None
            raise StudentError(status, one_line(error["message"][:4000], 1000), todo)
        return message.get("ok")

    def start(self) -> None:
        """Start the worker now (else the first `run` does); SandboxError if it cannot."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()

    def set_budget(self, limits: list[float]) -> None:
        """The submission's total time: a share of the sum of its checks' limits, at least the
        longest limit (scaled)."""
        share = max(self.limits.budget_share * sum(limits), max(limits, default=0.0))
        self.budget = share * self.limits.timeout_scale

    @contextlib.contextmanager
    def time_limit(self, seconds: float):
        """Every `run` inside the block shares one wall-clock budget of `seconds` (times the
        limits' scale), and no more than what is left of the submission's budget; a worker's
        start-up is not counted."""
        from vislab.grading import CheckTimeout

        if self.budget is not None and self.budget <= 0:
            raise CheckTimeout("not run: the submission used up its total time for grading in "
                               "earlier checks (are they much slower than they need to be?)")
        self._limit = seconds * self.limits.timeout_scale
        if self.budget is not None:
            self._limit = min(self._limit, self.budget)
        self._deadline = time.monotonic() + self._limit
        try:
            yield
        finally:
            if self.budget is not None:  # start-up time moved the deadline: it is not counted
                self.budget -= max(0.0, self._limit - (self._deadline - time.monotonic()))
            self._deadline = None

    def take_output(self) -> str:
        text = self._output.decode("utf-8", "replace")
        if self._output_dropped:
            text += f"\n... ({self._output_dropped} more bytes not shown)"
        self._output, self._output_dropped = bytearray(), 0
        return text

    def close(self) -> None:
        self._stop()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        if self._uid is not None:
            _give_uid(self._uid)
            self._uid = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    # ---------------------------------------------------------------------- the worker

    def _prepare(self) -> None:
        """The worker's files: a copy of the submission and of the probes, in a folder that
        only this worker's user may enter."""
        root = _scratch_folder()
        self._scratch = root
        try:
            copy_tree_safely(self.path, root / "lab" / self.path.name)
            (root / "probes").mkdir()
            for p in self.probe_files:
                shutil.copyfile(p, root / "probes" / p.name)
            (root / "home").mkdir()
            (root / "root").mkdir()
            if self._uid is not None:
                for folder, dirs, files in os.walk(root):
                    for name in [folder] + [os.path.join(folder, n) for n in dirs + files]:
                        os.chown(name, self._uid, self._uid)
                        os.chmod(name, 0o700 if os.path.isdir(name) else 0o600)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    def _config(self) -> dict:
        lab = self.path.name
        hide = [str(p) for p in secret_paths() + self.hide]
        hide.append(str(self._scratch.parent))  # other workers' scratch folders
        return {
            "scratch": str(self._scratch), "lab": lab, "uid": self._uid,
            "namespaces": "namespaces" not in self.disable,
            "exposed": exposed_paths() + self.expose, "hide": hide,
            "limits": asdict(self.limits),
            "poisoned": {k: list(v) for k, v in self.poisoned.items()},
            "probe_modules": [p.stem for p in self.probe_files],
        }

    def _start(self) -> None:
        self._stop()
        if self._failed_start:  # the sandbox itself is broken: do not retry for every check
            raise SandboxError(self._failed_start)
        began = time.monotonic()
        self.startups += 1
        try:
            zygote = _Zygote.get(self.limits.startup)
        except SandboxError as exc:
            self._failed_start = str(exc)
            raise
        name = f"vislab-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._cgroups = Cgroups(name, self.limits, enabled="cgroups" not in self.disable)
        config = self._config()
        config["cgroups"] = self._cgroups.procs_files
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        out_r, out_w = os.pipe()
        try:  # the configuration goes through the socket, never on a command line
            self._proc = _Forked(zygote, zygote.ask({"op": "spawn", "config": config},
                                                    (req_r, resp_w, out_w))["pid"])
        except SandboxError as exc:
            for fd in (req_w, resp_r, out_r):
                os.close(fd)
            self._failed_start = str(exc)
            raise
        finally:
            for fd in (req_r, resp_w, out_w):
                os.close(fd)
        self._req, self._resp, self._out = req_w, resp_r, out_r
        for fd in (req_w, resp_r, out_r):
            os.set_blocking(fd, False)
        self._buffer = bytearray()
        try:
            ready = self._receive(began + self.limits.startup)
        except (_Dead, _Late) as exc:
            lines = bytes(self._output).decode("utf-8", "replace").strip().splitlines()
            self._stop()
            self._failed_start = (f"the grading worker did not start ({exc}"
                                  f"{'; it said: ' + lines[-1][:300] if lines else ''})")
            raise SandboxError(self._failed_start) from None
        self._output, self._output_dropped = bytearray(), 0
        if not ready.get("ready"):
            self._stop()
            raise SandboxError("the grading worker did not start")
        self.protections = self._cgroups.active + [str(p) for p in ready.get("isolation", [])]
        if self._deadline is not None:  # start-up time is not the student's
            self._deadline += time.monotonic() - began

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
        if self._cgroups is not None:
            self._cgroups.remove()
            self._cgroups = None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            for fd in (self._req, self._resp, self._out):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _probe_name(self, probe) -> tuple[str, str]:
        module = sys.modules.get(getattr(probe, "__module__", None) or "")
        file = getattr(module, "__file__", None)
        qualname = getattr(probe, "__qualname__", "")
        if file is None or Path(file).resolve() not in self.probe_files or "<" in qualname:
            raise ValueError(f"{qualname or probe!r} is not a module-level function of a probes "
                             f"file this sandbox exposes ({[p.name for p in self.probe_files]})")
        return Path(file).stem, qualname

    # ------------------------------------------------------------------------ the pipes

    @staticmethod
    def _remaining(deadline: float) -> float:
        return deadline - time.monotonic()

    def _send(self, data: bytes, deadline: float) -> None:
        view = memoryview(HEADER.pack(len(data)) + data)
        with selectors.DefaultSelector() as sel:
            sel.register(self._req, selectors.EVENT_WRITE)
            sel.register(self._out, selectors.EVENT_READ)
            while view:
                left = self._remaining(deadline)
                if left <= 0:
                    raise _Late()
                for key, _ in sel.select(min(left, 0.5)):
                    if key.fd == self._out:
                        self._drain_output()
                        continue
                    try:
                        view = view[os.write(self._req, view[:1 << 16]):]
                    except BlockingIOError:
                        pass
                    except (BrokenPipeError, OSError):
                        raise _Dead("the worker closed its input") from None
                if view and self._proc.poll() is not None:
                    raise _Dead(self._exit_text())

    def _receive(self, deadline: float) -> dict:
        """The next frame from the worker, decoded and checked."""
        while True:
            if len(self._buffer) >= HEADER.size:
                size = HEADER.unpack_from(self._buffer)[0]
                if size > self.limits.result_size:
                    raise _Dead(f"it sent {size} bytes, more than the "
                                f"{self.limits.result_size // MiB} MiB allowed")
                if len(self._buffer) >= HEADER.size + size:
                    data = bytes(self._buffer[HEADER.size:HEADER.size + size])
                    del self._buffer[:HEADER.size + size]
                    return self._decode(data)
            self._fill(deadline)

    def _decode(self, data: bytes) -> dict:
        try:
            check_stored(data, self.limits.result_size)
            message = check_plain(decode(data))
        except Exception as exc:  # noqa: BLE001 - anything unreadable is the worker's fault
            return {"id": self._next_id, "error": {
                "status": "error", "message": f"the result could not be read back safely "
                                              f"({type(exc).__name__}: {str(exc)[:200]})"}}
        if not isinstance(message, dict):
            return {"id": self._next_id, "error": {"status": "error",
                                                   "message": "the worker sent a malformed reply"}}
        return message

    def _fill(self, deadline: float) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._resp, selectors.EVENT_READ)
            sel.register(self._out, selectors.EVENT_READ)
            while True:
                left = self._remaining(deadline)
                if left <= 0:
                    raise _Late()
                events = sel.select(min(left, 0.25))
                for key, _ in events:
                    if key.fd == self._out:
                        self._drain_output()
                for key, _ in events:
                    if key.fd == self._resp:
                        try:
                            chunk = os.read(self._resp, 1 << 20)
                        except BlockingIOError:
                            continue
                        if not chunk:
                            self._drain_output()
                            raise _Dead(self._exit_text(wait=True))
                        self._buffer += chunk
                        return
                if not events and self._proc.poll() is not None:
                    # the worker is gone; its pipe may stay open in a straggler's hands
                    self._drain_output()
                    raise _Dead(self._exit_text())

    def _drain_output(self) -> None:
        while True:
            try:
                chunk = os.read(self._out, 1 << 16)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            room = self.limits.output - len(self._output)
            self._output += chunk[:max(room, 0)]
            self._output_dropped += max(0, len(chunk) - max(room, 0))

    def _keep_output(self, text) -> None:
        if isinstance(text, str) and text:
            data = text.encode()
            room = self.limits.output - len(self._output)
            self._output += data[:max(room, 0)]
            self._output_dropped += max(0, len(data) - max(room, 0))

    def _exit_text(self, wait: bool = False) -> str:
        code = self._proc.poll()
        if code is None and wait:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self._proc.wait(timeout=2)
        if code is None:
            return "it closed the pipe to the grader"
        if code < 0 or code > 128:
            sig = -code if code < 0 else code - 128
            with contextlib.suppress(ValueError):
                return f"it was killed by {signal.Signals(sig).name}"
        return f"it exited with code {code}"

    def _death(self, how: str, oom_before: int) -> tuple[str, str]:
        oom_after = self._cgroups.oom_kills() if self._cgroups else -1
        if oom_after > oom_before >= 0 or (oom_before < 0 and "SIGKILL" in how):
            limit = self.limits.memory / GiB
            return "memory", (f"ran out of memory: the grading process was stopped at its "
                              f"{limit:g} GiB limit (a huge tensor?)")
        if "SIGXCPU" in how:
            return "timeout", "used up the CPU time grading allows"
        return "error", (f"the grading process ended while running your code ({how}): does "
                         f"your code call os._exit or sys.exit, or crash the interpreter?")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


