"""A seccomp filter for the grading worker: the system calls a submission never needs and a
sandbox escape would, refused with EPERM.

Installed last, after the worker has built its namespaces, private root and user (it needs
`no_new_privs`, which the worker sets). Refused: new namespaces (`unshare`, `setns`, `clone`
with a CLONE_NEW* flag; `clone3`, whose flags a filter cannot read, answers ENOSYS so that the C
library falls back to `clone`), mounts (old and new mount API, `pivot_root`), reading or writing
other processes (`ptrace`, `process_vm_*`), kernel attack surface that grading never uses
(`bpf`, `perf_event_open`, `userfaultfd`, keyrings, kernel modules, `kexec`, file handles). A
call from another architecture's ABI (x32, 32-bit compat) is refused whatever its number.

The filter is classic BPF over `struct seccomp_data` (nr at offset 0, arch at 4, args from 16);
see seccomp(2). Only x86_64 and aarch64 are known; elsewhere `install` says so and does nothing.
"""
from __future__ import annotations

import ctypes
import errno
import os

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# name -> (x86_64, aarch64) system call numbers (asm/unistd_64.h, asm-generic/unistd.h)
REFUSED = {
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39),
    "pivot_root": (155, 41), "ptrace": (101, 117), "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271), "bpf": (321, 280), "perf_event_open": (298, 241),
    "userfaultfd": (323, 282), "keyctl": (250, 219), "add_key": (248, 217),
    "request_key": (249, 218), "init_module": (175, 105), "finit_module": (313, 273),
    "delete_module": (176, 106), "kexec_load": (246, 104), "open_by_handle_at": (304, 265),
    "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430),
    "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433),
    "mount_setattr": (442, 442),
}
CLONE, CLONE3 = (56, 220), (435, 435)
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (not NEWTIME: in clone's
# flags 0x80 is part of the exit signal)
NEW_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 \
    | 0x20000000 | 0x40000000
X32_BIT = 0x40000000

LD_ABS_W, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def program(machine: str) -> list[tuple[int, int, int, int]]:
    """The filter for `machine` as (code, jt, jf, k) instructions."""
    column = 0 if machine == "x86_64" else 1
    body: list[tuple] = [("ld", 4), ("jeq", AUDIT_ARCH[machine], None, "deny"), ("ld", 0)]
    if machine == "x86_64":
        body.append(("jge", X32_BIT, "deny", None))
    body += [("jeq", numbers[column], "deny", None) for numbers in REFUSED.values()]
    body += [("jeq", CLONE3[column], "enosys", None), ("jeq", CLONE[column], None, "allow"),
             ("ld", 16), ("jset", NEW_NAMESPACE_FLAGS, "deny", "allow")]
    ends = {"allow": RET_ALLOW, "deny": RET_ERRNO | errno.EPERM, "enosys": RET_ERRNO | errno.ENOSYS}
    where = {name: len(body) + i for i, name in enumerate(ends)}
    codes = {"jeq": JEQ, "jge": JGE, "jset": JSET}

    def offset(target, i):  # None: the next instruction
        return 0 if target is None else where[target] - i - 1

    out = []
    for i, step in enumerate(body):
        if step[0] == "ld":
            out.append((LD_ABS_W, 0, 0, step[1]))
        else:
            out.append((codes[step[0]], offset(step[2], i), offset(step[3], i), step[1]))
    return out + [(RET, 0, 0, k) for k in ends.values()]


def install(libc) -> str:
    """Install the filter in this process (and every process it starts); a line for the
    worker's list of protections."""
    machine = os.uname().machine
    if machine not in AUDIT_ARCH or libc is None:
        return f"no seccomp filter (not known for {machine})"
    steps = program(machine)
    filters = (SockFilter * len(steps))(*[SockFilter(*s) for s in steps])
    prog = SockFprog(len(steps), filters)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        return f"no seccomp filter ({os.strerror(ctypes.get_errno())})"
    return "seccomp filter (no new namespaces, mounts, ptrace, bpf, keyrings)"
