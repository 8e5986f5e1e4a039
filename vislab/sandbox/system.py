"""Linux system calls (mount, pivot_root, prctl) through the C library, and the cgroups a
worker runs in."""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from typing import TYPE_CHECKING
from pathlib import Path



GiB, MiB = 2**30, 2**20
INSIDE = "/sandbox"  # where the submission and the probes appear in the worker's file system

if TYPE_CHECKING:
    from vislab.sandbox import Limits


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


