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

This module is imported by the worker too; it holds nothing secret.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import importlib.machinery
import importlib.util
import io
import json
import os
import selectors
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from vislab import AUTOGRADER_DIR, REPO_ROOT, SOLUTIONS_DIR

GiB, MiB = 2**30, 2**20
HEADER = struct.Struct(">Q")
UID_BASE = int(os.environ.get("VISLAB_SANDBOX_UID", "64000"))  # one uid per parallel worker
INSIDE = "/sandbox"  # where the submission and the probes appear in the worker's file system


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


# ----------------------------------------------------------------------------- the wire

def encode(value) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def decode(data: bytes):
    """Bytes from the other process -> plain values. Never unpickles: weights_only=True."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


class BadResult(ValueError):
    """What came back from the worker is not made of plain values."""


def check_stored(data: bytes, limit: int) -> None:
    """A reply must be what torch.save writes: a zip of stored (uncompressed) members whose
    declared sizes add up to no more than the reply itself. A deflated member could inflate to
    gigabytes inside torch.load (holding the GIL), so it is refused unread."""
    import zipfile

    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BadResult(f"not a torch.save archive ({exc})") from None
    total = 0
    for m in members:
        if m.compress_type != zipfile.ZIP_STORED or m.file_size != m.compress_size:
            raise BadResult(f"a compressed member {m.filename[:80]!r} (replies are stored as "
                            f"torch.save writes them)")
        total += m.file_size
    if total > min(limit, len(data)):
        raise BadResult(f"members declare {total} bytes, more than the reply holds")


class Budget:
    """How much a reply may expand to: containers and tensor elements, counted as checked."""

    def __init__(self, items: int = 1_000_000, tensor_bytes: int = 256 * MiB):
        self.items, self.tensor_bytes = items, tensor_bytes
        self.seen: set[int] = set()

    def spend(self, items: int = 1, tensor_bytes: int = 0) -> None:
        self.items -= items
        self.tensor_bytes -= tensor_bytes
        if self.items < 0:
            raise BadResult("too many values (more than a probe ever returns)")
        if self.tensor_bytes < 0:
            raise BadResult("tensors larger than grading allows (an expanded view?)")


def check_plain(value, depth: int = 0, budget: Budget | None = None):
    """`value` rebuilt from plain types only (what a probe may return); BadResult otherwise.
    A list or dict that appears twice (shared references, which expand exponentially when
    rebuilt) is refused, and the whole value must stay within a budget."""
    import torch

    budget = budget if budget is not None else Budget()
    if depth > 40:
        raise BadResult("nested too deeply")
    budget.spend()
    kind = type(value)
    if kind in (torch.Tensor, torch.nn.Parameter):
        if (value.layout != torch.strided or value.is_quantized or value.device.type != "cpu"
                or getattr(value, "is_nested", False)):
            raise BadResult(f"a tensor with layout {value.layout} on {value.device}")
        plain = value.detach()
        if type(plain) is not torch.Tensor:
            raise BadResult(f"a {type(plain).__name__}")
        budget.spend(tensor_bytes=plain.numel() * plain.element_size())
        return plain
    if kind in (int, float, bool, type(None)):
        return value
    if kind is str:
        budget.spend(items=len(value) // 64)
        return value
    if kind in (list, tuple, dict):
        if id(value) in budget.seen:
            raise BadResult("a list or dict that appears more than once (shared references)")
        budget.seen.add(id(value))
    if kind in (list, tuple):
        return [check_plain(v, depth + 1, budget) for v in value]
    if kind is dict:
        if not all(type(k) is str for k in value):
            raise BadResult("a dict with keys that are not str")
        return {k: check_plain(v, depth + 1, budget) for k, v in value.items()}
    raise BadResult(f"a {kind.__name__}")


def write_frame(fd: int, data: bytes) -> None:
    """Blocking write of one frame (the worker's side)."""
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def read_frame(fd: int) -> bytes | None:
    """Blocking read of one frame (the worker's side); None at end of file."""
    def exactly(n):
        chunks = []
        while n:
            chunk = os.read(fd, min(n, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    header = exactly(HEADER.size)
    if header is None:
        return None
    return exactly(HEADER.unpack(header)[0])


# ------------------------------------------------------------------- Linux system calls

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}


_LIBC = []


def _libc():
    """The C library, or None off Linux. (Not ctypes.util.find_library: it starts processes,
    and the first process started in a new PID namespace becomes its init.)"""
    if not sys.platform.startswith("linux"):
        return None
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]


def _ok(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc, source, target, fstype, flags, data=None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _ok(libc.mount(enc(source), enc(str(target)), enc(fstype), ctypes.c_ulong(flags),
                   enc(data)), f"mount {target}")


# ----------------------------------------------------------------------------- cgroups

def _cgroup_mounts() -> dict[str, Path]:
    """controller -> mount point, for cgroup v1 hierarchies; 'unified' -> the v2 mount."""
    found = {}
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        if parts[2] == "cgroup":
            for option in parts[3].split(","):
                if option in ("memory", "pids", "cpu"):
                    found.setdefault(option, Path(parts[1]))
        elif parts[2] == "cgroup2":
            found.setdefault("unified", Path(parts[1]))
    return found


def _own_cgroups() -> dict[str, str]:
    """controller (or '' for v2) -> this process's cgroup path."""
    own = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path
    except (OSError, ValueError):
        pass
    return own


class Cgroups:
    """A worker's cgroups: memory, pids and CPU limits, a reliable kill, and an OOM count.

    Uses cgroup v1 hierarchies where they are mounted writable, else cgroup v2 where this
    process may create a child group with those controllers; empty where neither is allowed."""

    def __init__(self, name: str, limits: Limits, enabled: bool = True):
        self.dirs: list[Path] = []
        self.memory_dir: Path | None = None
        self.active: list[str] = []
        self.v2 = False
        if not enabled or not sys.platform.startswith("linux"):
            return
        mounts, own = _cgroup_mounts(), _own_cgroups()
        wanted = {
            "memory": [("memory.limit_in_bytes", str(limits.memory)),
                       ("memory.memsw.limit_in_bytes", str(limits.memory))],
            "pids": [("pids.max", str(limits.pids))],
            "cpu": [("cpu.cfs_period_us", "100000"),
                    ("cpu.cfs_quota_us", str(int(limits.threads * 100000)))],
        }
        for controller, settings in wanted.items():
            if controller not in mounts or controller not in own:
                continue
            folder = mounts[controller] / own[controller].lstrip("/") / name
            try:
                folder.mkdir()
            except OSError:
                continue
            self.dirs.append(folder)
            self._limit(folder, controller, settings, limits, "")
        if not self.dirs and "unified" in mounts and "" in own:
            self._try_v2(mounts["unified"] / own[""].lstrip("/"), name, limits)

    def _try_v2(self, parent: Path, name: str, limits: Limits) -> None:
        try:
            available = (parent / "cgroup.controllers").read_text().split()
            wanted = [c for c in ("memory", "pids", "cpu") if c in available]
            if not wanted:
                return
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
            folder = parent / name
            folder.mkdir()
        except OSError:
            return
        self.dirs, self.v2 = [folder], True
        settings = {"memory": [("memory.max", str(limits.memory)), ("memory.swap.max", "0")],
                    "pids": [("pids.max", str(limits.pids))],
                    "cpu": [("cpu.max", f"{int(limits.threads * 100000)} 100000")]}
        for controller in wanted:
            self._limit(folder, controller, settings[controller], limits, " v2")

    def _limit(self, folder: Path, controller: str, settings: list[tuple[str, str]], limits: Limits,
               version: str) -> None:
        """Write one controller's limits into `folder`; count it as active only if all were taken."""
        try:
            for key, value in settings:
                if (folder / key).exists():
                    (folder / key).write_text(value)
        except OSError:
            return
        if controller == "memory":
            self.memory_dir = folder
        self.active.append({"memory": f"memory cgroup{version} ({limits.memory / GiB:g} GiB)",
                            "pids": f"pids cgroup{version} ({limits.pids} tasks)",
                            "cpu": f"cpu cgroup{version} ({limits.threads:g} CPU)"}[controller])

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found = set()
        for d in self.dirs:
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return found

    def oom_kills(self) -> int:
        """How many processes the kernel killed for exceeding the memory limit (or -1)."""
        if self.memory_dir is None:
            return -1
        name = "memory.events" if self.v2 else "memory.oom_control"
        try:
            for line in (self.memory_dir / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
            return int((self.memory_dir / "memory.failcnt").read_text()) if not self.v2 else -1
        except (OSError, ValueError):
            return -1

    def kill(self, seconds: float = 10.0) -> None:
        """SIGKILL every process in the groups until they are empty (at most `seconds`: after
        a process storm the kernel may take a while to reap hundreds of tasks)."""
        for d in self.dirs:
            if (d / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    (d / "cgroup.kill").write_text("1")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            left = self.pids()
            if not left:
                return
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self, seconds: float = 10.0) -> list[Path]:
        """Kill and remove the groups, waiting (bounded) until each is empty; returns the
        folders that could not be removed, and says so on stderr."""
        self.kill(seconds)
        left = []
        for d in self.dirs:
            end = time.monotonic() + seconds
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > end:
                        left.append(d)
                        break
                    time.sleep(0.05)
        if left:
            print(f"vislab sandbox: could not remove {', '.join(map(str, left))} (still busy "
                  f"after {seconds:g} s); remove it by hand (rmdir) once its processes are gone",
                  file=sys.stderr)
        self.dirs = []
        return left


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


# ------------------------------------------------------------------ the worker's side

def _stage_start(config: dict) -> None:
    """In the worker just forked by the zygote, still privileged: cgroups, limits, namespaces,
    the private root file system, an unprivileged user; then serve (never returns)."""
    libc = _libc()
    report = []
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    for procs in config["cgroups"]:
        with contextlib.suppress(OSError):
            Path(procs).write_text(str(os.getpid()))
    limits = config["limits"]
    nproc = _set_rlimits(limits, config["uid"] is not None)
    report.append(f"rlimits (files {limits['file_size'] // MiB} MiB, CPU "
                  f"{limits['cpu_seconds']} s{', ' + nproc if nproc else ''})")

    scratch = Path(config["scratch"])
    lab_dir, probes_dir = scratch / "lab" / config["lab"], scratch / "probes"
    home = scratch / "home"
    namespaces, reason = _unshare(libc, config["uid"]) if config["namespaces"] else ([], "off")
    if namespaces:
        report.append("namespaces: " + ", ".join(namespaces))
    else:
        report.append(f"no namespaces ({reason})")
    if "pid" in namespaces:
        _become_init()  # returns in the worker, PID 2 of the new namespace
    if "mount" in namespaces:
        try:
            _private_root(libc, config, pid_namespace="pid" in namespaces)
            lab_dir = Path(INSIDE) / "lab" / config["lab"]
            probes_dir, home = Path(INSIDE) / "probes", Path("/tmp/home")
            report.append("private root file system (solutions, checks, other submissions and "
                          "the output are not in it)")
        except OSError as exc:
            report.append(f"no private file system ({exc})")
    if config["uid"] is not None:
        uid = config["uid"]
        if home == Path("/tmp/home"):
            home.mkdir(mode=0o700)
            os.chown(home, uid, uid)
        blocked = _unreadable_for(uid, [lab_dir, probes_dir, home])
        if blocked and not os.path.exists(blocked):  # never run a submission as root
            os.write(2, f"vislab sandbox: refusing to run the submission: {blocked} is not "
                        f"visible inside the sandbox (its file system holds only the system, "
                        f"Python, the installed packages and this vislab's package); is it "
                        f"another checkout's or another installation's? Run the vislab that is "
                        f"installed from this checkout\n".encode())
            os._exit(70)
        if blocked:
            os.write(2, f"vislab sandbox: refusing to run the submission as root: its user (uid "
                        f"{uid}) cannot use {blocked}, which it or a folder above it keeps from "
                        f"other users; allow namespaces, or install Python where other users "
                        f"can read it\n".encode())
            os._exit(70)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        report.append(f"unprivileged user (uid {uid})")
    elif "user" in namespaces and home == Path("/tmp/home"):
        home.mkdir(mode=0o700)
    report.append("no network (own network namespace)" if "net" in namespaces
                  else "network: NOT isolated")
    if libc is not None:
        from vislab.seccomp import install

        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        report.append(install(libc))  # last: the setup above needed what it refuses
    # Only what the serving stage needs: no host path of the grader's reaches the worker's
    # environment or its command line (it is the zygote's: /proc/1/cmdline shows no folder).
    serve = {key: config[key] for key in ("fds", "limits", "poisoned", "probe_modules")}
    serve.update(lab_dir=str(lab_dir), probes_dir=str(probes_dir), report=report)
    threads = str(int(limits["threads"]))
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                       "HOME": str(home), "TMPDIR": str(home), "OMP_NUM_THREADS": threads,
                       "MKL_NUM_THREADS": threads, "MPLBACKEND": "Agg",
                       "MPLCONFIGDIR": str(home / ".matplotlib"),
                       "TORCH_HOME": str(home / ".torch")})
    tempfile.tempdir = None
    os.chdir(home)
    _stage_serve(serve)


def _unreadable_for(uid: int, folders: list[Path]) -> str:
    """The first path the worker needs that `uid` could not use ('' if none): the interpreter,
    the standard library, the installed packages, vislab, and the worker's own folders."""
    import site
    import vislab

    needs = [(Path(sys.executable).resolve(), os.X_OK), (Path(os.__file__).parent, os.X_OK),
             (Path(vislab.__file__).parent, os.X_OK)]
    needs += [(Path(p), os.X_OK) for p in site.getsitepackages() if os.path.isdir(p)]
    needs += [(folder, os.X_OK) for folder in folders]
    child = os.fork()
    if child == 0:
        code = 0
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for number, (path, mode) in enumerate(needs, start=1):
                if not os.access(path, os.R_OK | mode):
                    code = number
                    break
        except BaseException:  # noqa: BLE001
            code = 255
        os._exit(code)
    _, status = os.waitpid(child, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 255
    if code == 0:
        return ""
    return str(needs[code - 1][0]) if code <= len(needs) else "its files"


def _set_rlimits(limits: dict, switching_user: bool) -> str:
    """Core dumps off, file size and CPU time capped; RLIMIT_NPROC, which counts all of a
    user's tasks and never binds root: the worker's own uid's (when root switches to one), else
    what the user runs now plus the worker's share. Returns what NPROC was set to."""
    import resource

    def set_limit(kind, value):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            soft, hard = resource.getrlimit(kind)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(kind, (value, value))
            return value
        return None

    set_limit(resource.RLIMIT_CORE, 0)
    set_limit(resource.RLIMIT_FSIZE, int(limits["file_size"]))
    set_limit(resource.RLIMIT_CPU, int(limits["cpu_seconds"]))
    if switching_user:
        value = set_limit(resource.RLIMIT_NPROC, int(limits["pids"]))
        return f"processes {value}" if value else ""
    if os.geteuid() != 0 and sys.platform.startswith("linux"):
        running = _tasks_of(os.getuid())
        if running:
            value = set_limit(resource.RLIMIT_NPROC, running + int(limits["pids"]))
            return f"processes {value} for your user ({running} running)" if value else ""
    return ""


def _tasks_of(uid: int) -> int:
    """How many tasks (threads count) `uid` runs now; 0 if /proc cannot tell."""
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += sum(1 for _ in (entry / "task").iterdir())
    return count


def _unshare(libc, uid) -> tuple[list[str], str]:
    if libc is None:
        return [], "not Linux"
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    names = ["mount", "pid", "net", "ipc", "uts"]
    if uid is not None and libc.unshare(flags) == 0:
        return names, ""
    if uid is None:  # not root: a user namespace makes the others possible
        outer_uid, outer_gid = os.getuid(), os.getgid()
        if libc.unshare(flags | CLONE_NEWUSER) == 0:
            try:
                Path("/proc/self/setgroups").write_text("deny")
                Path("/proc/self/uid_map").write_text(f"1000 {outer_uid} 1")
                Path("/proc/self/gid_map").write_text(f"1000 {outer_gid} 1")
            except OSError as exc:
                return ["user"] + names, f"uid map: {exc}"
            return ["user"] + names, ""
    return [], os.strerror(ctypes.get_errno())


def _become_init() -> None:
    """In a new PID namespace: fork PID 1, which reaps orphans and ends with the worker (the
    kernel then kills everything left in the namespace); the worker is PID 2. The first stage,
    outside, waits and exits with the worker's status."""
    libc = _libc()
    child = os.fork()
    if child:  # outside the namespace: wait, mirror the exit status
        _close_all_from(3)
        _, status = os.waitpid(child, 0)
        os._exit(_exit_code(status))
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    worker = os.fork()
    if worker == 0:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        return
    _close_all_from(3)  # PID 1 keeps no pipe to the grader open
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == worker:
            os._exit(_exit_code(status))


def _close_all_from(low: int) -> None:
    import resource

    os.closerange(low, max(low, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def _private_root(libc, config: dict, pid_namespace: bool) -> None:
    """A new root file system on a tmpfs: the exposed paths bound read-only, the submission and
    the probes read-only under /sandbox, a private /tmp, a few devices and /proc; then
    pivot_root into it and drop the old one."""
    scratch = Path(config["scratch"])
    root = scratch / "root"
    limits = config["limits"]
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    _mount(libc, "tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")

    def bind(source: str, target: str, writable: bool = False, devices: bool = False):
        inside = root / target.lstrip("/")
        if os.path.islink(source):
            inside.parent.mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(inside):
                os.symlink(os.readlink(source), inside)
            return
        if not os.path.exists(source):
            return
        if os.path.isdir(source):
            inside.mkdir(parents=True, exist_ok=True)
        else:
            inside.parent.mkdir(parents=True, exist_ok=True)
            inside.touch()
        _mount(libc, source, inside, None, MS_BIND | MS_REC)
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (0 if devices else MS_NODEV)
        _mount(libc, None, inside, None, flags | (0 if writable else MS_RDONLY))

    # the private /tmp and /dev/shm first: an exposed path may live under /tmp (a checkout there)
    for folder in ("tmp", "dev/shm"):
        (root / folder).mkdir(parents=True)
        _mount(libc, "tmpfs", root / folder, "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={limits['tmp_size']},mode=1777")
    for path in config["exposed"]:
        bind(path, path)
    for name in ("null", "zero", "full", "random", "urandom"):
        bind(f"/dev/{name}", f"/dev/{name}", writable=True, devices=True)
    for name, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                     ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(to, root / "dev" / name)
    # copied, not bound: a bind mount's source (the grader's scratch folder) would show in
    # /proc/self/mountinfo; a copy on its own tmpfs shows only "tmpfs /sandbox"
    inside = root / INSIDE.lstrip("/")
    inside.mkdir(parents=True)
    _mount(libc, "tmpfs", inside, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=755")
    for part in ("lab", "probes"):
        shutil.copytree(scratch / part, inside / part)
    for folder, _, files in os.walk(inside):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    _mount(libc, None, inside, None, MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_RDONLY)
    # where an exposed path holds a secret, an empty read-only folder covers it
    for secret in config["hide"]:
        inside = root / secret.lstrip("/")
        exposed = any(secret == e or secret.startswith(e.rstrip("/") + "/")
                      for e in config["exposed"])
        if exposed and os.path.isdir(inside):
            _mount(libc, "tmpfs", inside, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k")
    (root / "proc").mkdir(exist_ok=True)
    (root / ".old").mkdir()
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(0, f"pivot_root: unknown machine {os.uname().machine}")
    _ok(libc.syscall(number, str(root).encode(), str(root / ".old").encode()), "pivot_root")
    try:  # past this point the old root is reachable at /.old: a failure ends the worker
        os.chdir("/")
        if pid_namespace:
            _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        else:
            _mount(libc, "/.old/proc", "/proc", None, MS_BIND | MS_REC)
        _ok(libc.umount2(b"/.old", MNT_DETACH), "umount the old root")
        os.rmdir("/.old")
        _mount(libc, None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    except BaseException as exc:  # noqa: BLE001
        os.write(2, f"vislab sandbox: could not finish the private root: {exc}\n".encode())
        os._exit(70)


class _WatchedLab:
    """The student's lab as probes see it: each module's first import is announced to the
    grader (so a hang or crash at import is pinned on the module); a module the grader knows to
    hang or crash at import is refused at once."""

    def __init__(self, lab, announce, poisoned: dict):
        self._lab, self._announce, self._poisoned = lab, announce, poisoned
        self._modules = {}
        self.path = lab.path

    def _load(self, name: str, load):
        from vislab.probing import StudentError

        if name in self._poisoned:
            status, message = self._poisoned[name]
            raise StudentError(status, message)
        self._announce({"event": "importing", "module": name})
        module = load()
        self._announce({"event": "imported", "module": name})
        return module

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._modules:
            if self._lab._package is None:
                from vislab.impl import load_package
                self._lab._package = self._load("__init__", lambda: load_package(self.path))
            self._modules[name] = self._load(name, lambda: getattr(self._lab, name))
        return self._modules[name]


class _Unloadable:
    """A lab folder that cannot be imported at all: every module access says why."""

    def __init__(self, path: str, why: str):
        self.path, self._why = Path(path), why

    def __getattr__(self, name: str):
        from vislab.probing import StudentError

        if name.startswith("_"):
            raise AttributeError(name)
        raise StudentError("error", self._why[:300])


def _stage_serve(config: dict) -> None:
    """Unprivileged now: say ready, serve probe calls until EOF (torch is the zygote's)."""
    req, resp = config["fds"]
    for fd in (req, resp):
        os.set_inheritable(fd, False)
    limits = config["limits"]
    import torch

    torch.set_num_threads(max(1, int(limits["threads"])))
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    report = list(config["report"])
    if not any(r.startswith("memory cgroup") for r in report):
        _limit_address_space(limits["memory"])
        report.append(f"address space limit ({limits['memory'] / GiB:g} GiB above torch's)")

    from vislab.impl import import_lab
    from vislab.probing import Capture, StudentError, run_probe

    package = "_vislab_autograder"
    spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
    module = importlib.util.module_from_spec(spec)
    module.__path__ = [config["probes_dir"]]
    sys.modules[package] = module

    def send(message: dict) -> None:
        write_frame(resp, encode(message))

    _warm_up()  # before "ready": the first optimiser step imports torch._dynamo (6-10 s)
    send({"ready": True, "isolation": report})
    try:
        lab = _WatchedLab(import_lab(config["lab_dir"]), send,
                          {k: tuple(v) for k, v in config["poisoned"].items()})
    except Exception as exc:  # noqa: BLE001 - e.g. no __init__.py: every probe says so
        lab = _Unloadable(config["lab_dir"], f"{type(exc).__name__}: {exc}")
    capture = Capture(limits["output"])
    while True:
        data = read_frame(req)
        if data is None:
            os._exit(0)
        request = decode(data)
        reply = {"id": request["id"]}
        try:
            if request["module"] not in config["probe_modules"]:
                raise StudentError("error", f"grader error: no probes module {request['module']}")
            probe = _fresh_probes(package, config["probes_dir"], request["module"])
            for part in request["name"].split("."):
                probe = getattr(probe, part)
            reply["ok"] = run_probe(lab, probe, request["inputs"], capture,
                                    threads=max(1, int(limits["threads"])))
        except StudentError as exc:
            reply["error"] = exc.to_dict()
        reply["output"] = capture.take()
        try:
            data = encode(reply)
        except Exception as exc:  # noqa: BLE001
            data = encode({"id": request["id"], "output": reply["output"], "error": {
                "status": "error", "message": f"the result could not be sent: {exc}"[:300]}})
        write_frame(resp, data)


def _warm_up() -> None:
    """What a fresh worker pays once for the first backward pass and optimiser steps (lazy
    imports, torch._dynamo among them), paid before the worker says ready: start-up time is
    not a check's."""
    import torch

    layer = torch.nn.Linear(4, 3)
    for opt in (torch.optim.SGD(layer.parameters(), lr=0.1),
                torch.optim.AdamW(layer.parameters(), lr=0.1), torch.optim.Adam(layer.parameters())):
        torch.nn.functional.cross_entropy(layer(torch.randn(2, 4)), torch.tensor([0, 2])).backward()
        opt.step()
        opt.zero_grad()
    torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(layer.parameters(), lr=0.1), lambda i: 1.0)


def _fresh_probes(package: str, folder: str, name: str):
    """The probes module `name`, executed anew from its read-only file for every request:
    replacements that the student's code made in an earlier copy are not used."""
    path = Path(folder) / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{package}.{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _limit_address_space(extra: int) -> None:
    """Without a memory cgroup: cap virtual memory at what torch already mapped plus `extra`."""
    import resource

    try:
        size = int(next(line.split()[1] for line in Path("/proc/self/status").read_text()
                        .splitlines() if line.startswith("VmSize:"))) * 1024
    except (OSError, StopIteration, ValueError):
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (size + extra + GiB, size + extra + GiB))


def _stage_zygote(control: int) -> None:
    """The fork server (see _Zygote): import torch and warm it up once, then fork one worker
    per spawn request; reap the workers and answer polls; exit, killing every worker, when the
    grader closes the socket."""
    import socket

    sock = socket.socket(fileno=control)
    import torch

    torch.set_num_threads(1)  # no OpenMP pool before a fork: a forked pool would hang
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    import vislab.impl  # noqa: F401 - what every worker imports, paid once
    import vislab.probing  # noqa: F401
    with contextlib.suppress(ImportError):
        import torchvision  # noqa: F401
    _warm_up()
    sock.sendall(b"ready")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    codes: dict[int, int | None] = {}  # worker pid -> Popen-style return code, None: running
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
        except OSError:
            data, fds = b"", []
        if not data:
            for pid, code in codes.items():
                if code is None:
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)
            os._exit(0)
        request = json.loads(data)
        if request["op"] == "spawn":
            pid = os.fork()
            if pid == 0:
                _forked_worker(request["config"], fds, sock)
            for fd in fds:
                os.close(fd)
            codes[pid] = None
            reply = {"pid": pid}
        else:
            _reap(codes)
            pid = request["pid"]
            if request["op"] == "kill" and codes.get(pid, 0) is None:
                for kill in (os.killpg, os.kill):
                    with contextlib.suppress(OSError):
                        kill(pid, signal.SIGKILL)
            reply = {"code": codes.get(pid, -signal.SIGKILL)}
        sock.sendall(json.dumps(reply).encode())


def _reap(codes: dict) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        codes[pid] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else _exit_code(status)


def _forked_worker(config: dict, fds: list[int], control) -> None:
    """In the zygote's child: the worker's pipes in place of the zygote's, then the sandbox."""
    try:
        req, resp, out = fds
        os.close(control.detach())
        os.setsid()  # its own process group: a kill reaches whatever it starts
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        keep = {0, 1, 2, req, resp}
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in keep:
                with contextlib.suppress(OSError):
                    os.close(int(name))
        config["fds"] = [req, resp]
        _stage_start(config)
    except BaseException as exc:  # noqa: BLE001 - never return into the zygote's loop
        with contextlib.suppress(OSError):
            os.write(2, f"vislab sandbox: the worker failed to start: {exc!r}\n".encode())
    os._exit(70)


def main(argv: list[str]) -> None:
    if argv[:1] == ["zygote"]:
        _stage_zygote(int(argv[1]))
    else:
        raise SystemExit(f"usage: python -m vislab.sandbox zygote FD (not {argv})")


if __name__ == "__main__":
    main(sys.argv[1:])
