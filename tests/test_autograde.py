"""`vislab autograde`: untrusted submissions, each graded in its own sandbox.

Every hostile submission is a copy of solutions/vit with a hostile edit, graded in one batch
with two parallel workers next to a solution and a skeleton. Each must earn exactly what its
real work earns: the tasks it did not break get full marks, the one it broke gets a clear status.
Where the hostile code probes the sandbox (reading solutions, writing the output, the network, a
process storm) it prints what happened (the feedback shows it) and raises if the sandbox let it
through, so a leak costs the task's points and fails the test.
"""
import csv
import inspect
import json
import os
import shutil
import socket
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest import variant
from vislab import LABS_DIR, REPO_ROOT, SOLUTIONS_DIR
from vislab.autograde import (BadSubmission, autograde, extract_zip, find_lab_folder,
                              find_submissions)
from vislab.cli import main
from vislab.errors import UsageError
from vislab.grading import Student, grade, load_lab, summarize
from vislab.sandbox import (UID_BASE, IsolatedStudent, Limits, SandboxError,
                            copy_tree_safely)

LAB = load_lab("vit")
FULL = {task: LAB.points(task) for task in LAB.tasks}
MODEL_TASKS = ["vit.patch_embed", "vit.mlp", "vit.attention", "vit.block", "vit.model"]
LINUX_ROOT = sys.platform.startswith("linux") and os.geteuid() == 0

SOLVE = "    ### BEGIN SOLUTION\n"  # the start of distillation_loss's body in distill.py


def at_solve(code: str) -> dict:
    """Hostile code at the start of distillation_loss; the solution's code follows."""
    return {"distill.py": [(SOLVE, SOLVE + code)]}


READ_SECRETS = """\
    import os as _os
    from pathlib import Path as _P
    _here = _P(__file__).resolve()
    _tries = [_P("../../solutions/vit/model.py"), _P("../../autograder/vit.py"),
              _P("../../../tests/conftest.py")]
    _tries += [p / "solutions" / "vit" / "model.py" for p in _here.parents]
    _tries += [p / "autograder" / "vit.py" for p in _here.parents]
    _tries += [_P(@REPO@) / "solutions" / "vit" / "model.py", _P(@REPO@) / "autograder" / "vit.py",
               _P(@REPO@) / "tests" / "conftest.py", _P(@REPO@) / ".git" / "HEAD",
               _P(@SUBS@) / "solution" / "vit" / "model.py"]
    for _p in _tries:
        try:
            _p.read_bytes()
        except OSError as _e:
            print("blocked read", _p, type(_e).__name__)
        else:
            raise RuntimeError(f"LEAK: read {_p}")
    if _os.path.isdir(@REPO@) and {"solutions", "autograder", "tests"} & set(_os.listdir(@REPO@)):
        raise RuntimeError("LEAK: the repository's secret folders are visible")
"""

WRITE_OTHERS = """\
    for _p in [@SUBS@ + "/solution/vit/distill.py", @SUBS@ + "/planted.py",
               @OUT@ + "/grades.csv", @OUT@ + "/planted.txt",
               @REPO@ + "/solutions/vit/planted.py", @REPO@ + "/autograder/planted.py"]:
        try:
            with open(_p, "a") as _f:
                _f.write("# tampered\\n")
        except OSError as _e:
            print("blocked write", _p, type(_e).__name__)
        else:
            raise RuntimeError(f"LEAK: wrote {_p}")
"""

IMPORT_SOLUTIONS = """\
    import importlib as _il
    import sys as _sys
    _sys.path[:0] = [@REPO@, @REPO@ + "/solutions", "../..", "../../.."]
    for _name in ["solutions.vit.distill", "solutions", "autograder.vit", "vit.distill"]:
        try:
            _il.import_module(_name)
        except ImportError as _e:
            print("blocked import", _name, type(_e).__name__)
        else:
            raise RuntimeError(f"LEAK: imported {_name}")
"""

NETWORK = """\
    import socket as _socket
    for _address in [("127.0.0.1", @PORT@), ("8.8.8.8", 53)]:
        try:
            _socket.create_connection(_address, timeout=2).close()
        except OSError as _e:
            print("blocked network", _address, type(_e).__name__)
        else:
            raise RuntimeError(f"LEAK: connected to {_address}")
"""

# Signal 0 only asks whether a signal could be sent: harmless even where the sandbox is missing.
PROCESSES = """\
    import os as _os
    _visible = [p for p in _os.listdir("/proc") if p.isdigit()]
    print("blocked processes: sees", len(_visible), "processes")
    if len(_visible) > 10:
        raise RuntimeError(f"LEAK: sees {len(_visible)} processes")
    try:
        _os.kill(1, 0)
    except PermissionError:
        print("blocked signal to pid 1")
    else:
        raise RuntimeError("LEAK: may signal pid 1")
"""

# A bounded storm: 300 children that each sleep 1 s and exit (never an unbounded fork bomb).
STORM = """import torch
import os as _os
import time as _time
_children = []
for _ in range(300):
    try:
        _pid = _os.fork()
    except OSError:
        break
    if _pid == 0:
        _time.sleep(1)
        _os._exit(0)
    _children.append(_pid)
SPAWNED = len(_children)
print(f"spawned {SPAWNED} of 300")
for _pid in _children:
    _os.waitpid(_pid, 0)
"""

NOISY = """import math
import os as _os
import sys as _sys
import warnings as _warnings
print("x" * 100_000)
print("noise on stderr", file=_sys.stderr)
_warnings.warn("a warning from the student's code")
_os.write(1, b"raw bytes on fd 1\\n")
_os.write(2, b"raw bytes on fd 2\\n")
"""

ALWAYS_EQUAL = """\
    class _AlwaysEqual:
        requires_grad = False
        def __eq__(self, other):
            return True
    return _AlwaysEqual()
"""

# The worker is the student's process: it can patch the sandbox's own code (here at the first
# import, in model.py) and send back an object whose unpickling would run a command in the grader.
PICKLE_BOMB_IMPORT = """import math
import sys as _sys
import vislab.probing as _probing
_probing.plain = lambda value: value
_probing.returned = lambda value, what: value
_sys.modules["_vislab_autograder.vit_probes"].returned = lambda value, what: value
"""

# The worker's own reply encoder (in vislab.sandbox.worker, which serves the probe calls), patched at the
# first import so that every later reply is a bomb for the grader. Both are bounded: 64 MiB
# that deflate to about 64 KiB; a shared-reference tree of 2**22 leaves.
DEFLATE_BOMB = """
import io as _io
import sys as _sys
import zipfile as _zipfile
_main = _sys.modules["vislab.sandbox.worker"]
_encode = getattr(_main, "_honest_encode", _main.encode)
_main._honest_encode = _encode
def _deflated(value):
    source = _zipfile.ZipFile(_io.BytesIO(_encode(value)))
    buffer = _io.BytesIO()
    with _zipfile.ZipFile(buffer, "w", _zipfile.ZIP_DEFLATED) as zf:
        for member in source.infolist():
            zf.writestr(member.filename, source.read(member))
        zf.writestr("archive/data/padding", bytes(64 << 20))
    return buffer.getvalue()
_main.encode = _deflated
"""
SHARED_BOMB = """
import sys as _sys
_main = _sys.modules["vislab.sandbox.worker"]
_encode = getattr(_main, "_honest_encode", _main.encode)
_main._honest_encode = _encode
def _shared(value):
    if "ok" in value:
        tree = [0]
        for _ in range(22):
            tree = [tree, tree]
        value = dict(value, ok=tree)
    return _encode(value)
_main.encode = _shared
"""
# A skeleton distill.py whose model.py replaces the probe that grades it by one that returns
# the right loss: later requests must not use the replacement.
FORGE_PROBE = """import math
import sys as _sys
import torch.nn.functional as _F
def _forged(lab, student_logits, teacher_logits, temperature):
    s = student_logits.clone().requires_grad_()
    log_q = _F.log_softmax(s / temperature, -1)
    loss = _F.kl_div(log_q, _F.log_softmax(teacher_logits / temperature, -1), log_target=True,
                     reduction="batchmean") * temperature ** 2
    loss.backward()
    return {"loss": loss, "student_grad": s.grad, "teacher_grad": None}
_sys.modules["_vislab_autograder.vit_probes"].distill = _forged
"""
ESCAPES = "    print('\\x1b[2J\\x1b[H\\rtotal 19/19 \\x1b]0;pwned\\x07')\n"
THREADS = "    print('threads', torch.get_num_threads())\n    torch.set_num_threads(4)\n"
HUGE_TODO = "    raise NotImplementedError('TODO(' + 'x' * 8_000_000 + '): huge')\n"
CMDLINE = """\
    for _p in ("/proc/1/cmdline", "/proc/self/cmdline"):
        print("cmdline", open(_p, "rb").read().replace(b"\\0", b" ").decode())
    _mounts = [_l.split() for _l in open("/proc/self/mountinfo")]
    print("mountinfo: /sandbox mounted", any(_m[4] == "/sandbox" for _m in _mounts),
          "roots that differ from their mount point", [(_m[3], _m[4]) for _m in _mounts
                                                       if _m[3] not in ("/", _m[4])])
"""
# The worker is a fork of the grader's fork server: it must hold nothing of the grader's (no
# checks or solutions module, no client of the fork server, no grader folder in its environment).
INHERITED = """\
    import os as _os, sys as _sys
    _mine = sorted(m for m in _sys.modules if m.split(".")[0] in ("autograder", "solutions", "tests"))
    print("inherited modules", _mine, "fork server client",
          getattr(_sys.modules.get("vislab.sandbox"), "_Zygote", None) and
          _sys.modules["vislab.sandbox"]._Zygote._current)
    print("environment", sorted(_os.environ.items()))
"""
# What a sandbox escape would start with: new namespaces, mounts, tracing another process.
ESCAPE_CALLS = """\
    import ctypes as _ct, threading as _th
    _libc = _ct.CDLL(None, use_errno=True)
    for _name, _call in (("user namespace", lambda: _libc.unshare(0x10000000)),
                         ("mount namespace", lambda: _libc.unshare(0x00020000)),
                         ("ptrace", lambda: _libc.ptrace(16, 1, 0, 0)),
                         ("mount", lambda: _libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))):
        print(("blocked " if _call() != 0 else "LEAK ") + _name)
    _t = _th.Thread(target=print, args=("threads still start",))
    _t.start()
    _t.join()
"""
PICKLE_BOMB = """\
    import os as _os
    class _Bomb:
        requires_grad = False
        def __reduce__(self):
            return (_os.system, ("touch " + @MARKER@,))
    return _Bomb()
"""

MONKEYPATCH = """import torch
import sys as _sys
import types as _types
import torch.testing as _testing
torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
torch.isclose = lambda a, b, *args, **kwargs: torch.ones_like(a, dtype=torch.bool)
_testing.assert_close = lambda *args, **kwargs: None
_sys.modules["pytest"] = _types.SimpleNamespace(approx=lambda *args, **kwargs: object())
"""

def in_every_module(code: str) -> dict:
    """`code` run at the import of each of the lab's modules (a fresh worker, after a kill,
    imports only what its next check needs)."""
    return {"model.py": [("import math\n", "import math\n" + code)],
            "distill.py": [("import torch\n", "import torch\n" + code)],
            "finetune.py": [("import torch.nn as nn\n", "import torch.nn as nn\n" + code)]}


# name: (edits, {task: (status, words in the message)} for the tasks it breaks, words in output)
HOSTILE = {
    "syntax_error": ({"model.py": [("import math\n", "import math\ndef broken(:\n    pass\n")]},
                     {t: ("error", "SyntaxError in model.py line") for t in MODEL_TASKS}, []),
    "exception_at_import": (
        {"model.py": [("import math\n", "import math\nraise RuntimeError('boom at import')\n")]},
        {t: ("error", "RuntimeError at model.py:") for t in MODEL_TASKS}, []),
    "sys_exit_at_import": ({"distill.py": [("import torch\n", "import torch\nimport sys\n"
                                                              "sys.exit(3)\n")]},
                           {"vit.distill": ("error", "your code called sys.exit(3)")}, []),
    "os_exit_at_import": ({"distill.py": [("import torch\n", "import torch\nimport os\n"
                                                             "os._exit(3)\n")]},
                          {"vit.distill": ("error", "exited with code 3")}, []),
    "infinite_loop_at_import": (
        {"finetune.py": [("import torch.nn as nn\n", "import torch.nn as nn\nwhile True:\n"
                                                     "    pass\n")]},
        {"vit.finetune": ("timeout", "importing finetune.py did not finish in 10 s")}, []),
    "infinite_loop_in_a_task": (at_solve("    while True:\n        pass\n"),
                                {"vit.distill": ("timeout", "did not finish in 10 s")}, []),
    "allocates_8_gib": (at_solve("    big = torch.ones(2**31)  # 8 GiB of float32\n"),
                        {"vit.distill": ("memory", "ran out of memory")}, []),
    "process_storm": ({"distill.py": [
        ("import torch\n", STORM),
        (SOLVE, SOLVE + "    if SPAWNED >= 300:\n"
                        "        raise RuntimeError('LEAK: the storm was not contained')\n")]},
        {}, ["spawned"]),
    "noisy_output_and_warnings": ({"model.py": [("import math\n", NOISY)]}, {},
                                  ["xxxxxxxx", "more characters not shown"]),
    "always_equal_object": (at_solve(ALWAYS_EQUAL),
                            {"vit.distill": ("failed", "must return a torch.Tensor, got "
                                                       "_AlwaysEqual")}, []),
    "pickle_bomb_from_a_patched_worker": (
        {"model.py": [("import math\n", PICKLE_BOMB_IMPORT)],
         "distill.py": [(SOLVE, SOLVE + PICKLE_BOMB)]},
        {"vit.distill": ("error", "could not be read back safely")}, []),
    "monkeypatches_torch_and_pytest": (
        {"distill.py": [("import torch\n", MONKEYPATCH),
                        ("    return kl * temperature**2\n", "    return kl\n")]},
        {"vit.distill": ("failed", "KL without the T^2 factor")}, []),
    "reads_solutions_and_checks": (at_solve(READ_SECRETS), {}, ["blocked read"]),
    "writes_other_submissions_and_output": (at_solve(WRITE_OTHERS), {}, ["blocked write"]),
    "imports_solutions": (at_solve(IMPORT_SOLUTIONS), {}, ["blocked import"]),
    "opens_network_connections": (at_solve(NETWORK), {}, ["blocked network"]),
    "sees_and_signals_processes": (at_solve(PROCESSES), {}, ["blocked signal to pid 1"]),
    "deflate_bomb_reply": (in_every_module(DEFLATE_BOMB),
                           {t: ("error", "compressed member") for t in FULL}, []),
    "shared_reference_bomb": (in_every_module(SHARED_BOMB),
                              {t: ("error", "shared references") for t in FULL}, []),
    "replaces_the_probe_that_grades_it": (
        {"model.py": [("import math\n", FORGE_PROBE)],
         "distill.py": [(SOLVE, SOLVE + "    raise NotImplementedError('TODO(vit.distill): x')\n")]},
        {"vit.distill": ("not implemented", "TODO(vit.distill) not implemented")}, []),
    "prints_escape_sequences": (at_solve(ESCAPES), {}, ["total 19/19"]),
    "sets_torch_threads": (at_solve(THREADS), {}, ["threads 1"]),
    "huge_todo_id": (at_solve(HUGE_TODO), {"vit.distill": ("not implemented", "more characters")}, []),
    "reads_its_command_line": (at_solve(CMDLINE), {}, ["cmdline"]),
    "makes_escape_calls": (at_solve(ESCAPE_CALLS), {}, [
        "blocked user namespace", "blocked mount namespace", "blocked ptrace", "blocked mount",
        "threads still start"]),
    "reads_what_it_inherited": (at_solve(INHERITED), {}, ["inherited modules [] fork server client None"]),
}
# the protections a case needs (from IsolatedStudent.protections) to be meaningful
NEEDS = {
    "process_storm": ["pids cgroup"],
    "reads_solutions_and_checks": ["private root file system"],
    "writes_other_submissions_and_output": ["private root file system"],
    "imports_solutions": ["private root file system"],
    "opens_network_connections": ["no network"],
    "sees_and_signals_processes": ["pid", "unprivileged user"],
    "pickle_bomb_from_a_patched_worker": [],
    "reads_its_command_line": ["pid"],
    "makes_escape_calls": ["seccomp filter"],
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Grade every hostile submission, a solution, a skeleton and a few broken packages in one
    batch with two workers."""
    base = tmp_path_factory.mktemp("autograde")
    subs, out, marker = base / "submissions", base / "out", base / "pwned"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    values = {"@REPO@": repr(str(REPO_ROOT)), "@SUBS@": repr(str(subs)),
              "@OUT@": repr(str(out)), "@PORT@": str(listener.getsockname()[1]),
              "@MARKER@": repr(str(marker))}

    def fill(text):
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    for name, (edits, _, _) in HOSTILE.items():
        variant(subs / name, "vit", {f: [(old, fill(new)) for old, new in pairs]
                                     for f, pairs in edits.items()})
    variant(subs / "solution", "vit", {})
    shutil.copytree(LABS_DIR / "vit", subs / "skeleton",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # a link to the solution instead of the student's own distill.py: never followed
    shutil.copytree(LABS_DIR / "vit", subs / "links_to_solution",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (subs / "links_to_solution" / "distill.py").unlink()
    (subs / "links_to_solution" / "distill.py").symlink_to(SOLUTIONS_DIR / "vit" / "distill.py")
    with zipfile.ZipFile(subs / "zipped_solution.zip", "w") as zf:
        for path in sorted((SOLUTIONS_DIR / "vit").glob("*.py")):
            zf.write(path, f"alice-lab4/vit/{path.name}")
    with zipfile.ZipFile(subs / "path_traversal.zip", "w") as zf:
        zf.writestr("../../escaped.py", "print('out')\n")
    (subs / "not_a_lab").mkdir()
    (subs / "not_a_lab" / "notes.txt").write_text("I forgot to attach my code\n")
    solution_files = {p.name: p.read_bytes() for p in (subs / "solution" / "vit").iterdir()}
    try:
        reports = autograde("vit", subs, out, workers=2, progress=lambda *a: None)
    finally:
        listener.close()
    return {"reports": {r["student"]: r for r in reports}, "subs": subs, "out": out,
            "marker": marker, "solution_files": solution_files, "base": base}


def rows(rep) -> dict:
    return {row["task"]: row for row in rep["tasks"]}


def require(rep, needs):
    missing = [n for n in needs if not any(p.startswith(n) or f" {n}" in p and not p.startswith("no ")
                                           for p in rep["protections"])]
    if missing:
        pytest.skip(f"this machine does not allow {missing}; protections: {rep['protections']}")


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_submission_earns_what_its_work_earns(batch, name):
    rep = batch["reports"][name]
    require(rep, NEEDS.get(name, []))
    _, broken, output_words = HOSTILE[name]
    for task, row in rows(rep).items():
        if task in broken:
            status, words = broken[task]
            assert row["status"] == status, (task, row)
            assert words in row["message"], (task, row["message"])
            assert row["earned"] == 0, row
        else:  # the student's real work on this task is correct: full marks
            assert row["status"] == "passed" and row["earned"] == FULL[task], (task, row)
    assert rep["earned"] == sum(FULL[t] for t in FULL if t not in broken)
    feedback = (batch["out"] / "feedback" / f"{name}.txt").read_text()
    for words in output_words:
        assert words in feedback, words
    assert "LEAK" not in feedback


def test_feedback_cannot_be_spoofed_or_bloated(batch):
    """No control characters from the student's output reach the feedback or Gradescope (no
    cleared screen, no overwritten line), worker messages stay one line, and an 8 MB TODO id
    gives a feedback file of normal size."""
    out = batch["out"]
    for name in ("prints_escape_sequences", "huge_todo_id"):
        text = (out / "feedback" / f"{name}.txt").read_text()
        gradescope = (out / "gradescope" / name / "results.json").read_text()
        for both in (text, json.loads(gradescope)["tests"][0]["output"]):
            assert "\x1b" not in both and "\r" not in both and "\x07" not in both
        assert len(text) < 50_000 and len(gradescope) < 50_000
    assert all("\n" not in c["message"] for r in batch["reports"].values() for c in r["checks"])


def test_torch_threads_are_reset_before_every_probe(batch):
    text = (batch["out"] / "feedback" / "sets_torch_threads.txt").read_text()
    assert "threads 1" in text and "threads 4" not in text


def test_the_command_line_and_mounts_inside_the_sandbox_show_no_grader_folders(batch):
    rep = batch["reports"]["reads_its_command_line"]
    require(rep, ["pid"])
    text = (batch["out"] / "feedback" / "reads_its_command_line.txt").read_text()
    assert "cmdline" in text and "mountinfo: /sandbox mounted True" in text
    for secret in (str(batch["subs"]), str(batch["out"]), "scratch", "vislab-sandbox-"):
        assert secret not in text, secret


def test_a_forked_worker_inherits_nothing_of_the_grader(batch):
    """Workers are forks of the fork server, which never imported a check, a solution or the
    grader's client side; their environment names no grader folder."""
    text = (batch["out"] / "feedback" / "reads_what_it_inherited.txt").read_text()
    assert "inherited modules [] fork server client None" in text
    for secret in (str(batch["subs"]), str(batch["out"]), str(REPO_ROOT)):
        assert secret not in text.split("environment", 1)[1], secret


def test_solution_full_marks_and_skeleton_not_implemented(batch):
    for name in ("solution", "zipped_solution"):
        rep = batch["reports"][name]
        assert rep["earned"] == rep["possible"] == sum(FULL.values()), rows(rep)
    rep = batch["reports"]["skeleton"]
    assert rep["earned"] == 0
    assert {row["status"] for row in rep["tasks"]} == {"not implemented"}
    assert {c["status"] for c in rep["checks"]} == {"not implemented"}


def test_links_and_bad_packages_get_no_points(batch):
    rep = batch["reports"]["links_to_solution"]
    assert rep["earned"] == 0
    assert rows(rep)["vit.distill"]["status"] == "error"  # the link was not copied
    assert "distill" in rows(rep)["vit.distill"]["message"]
    for name, words in (("path_traversal", "unsafe path"), ("not_a_lab", "no lab folder")):
        rep = batch["reports"][name]
        assert rep["earned"] == 0 and {r["status"] for r in rep["tasks"]} == {"error"}
        assert all(words in r["message"] for r in rep["tasks"]), rep["tasks"]
    assert not (batch["base"] / "escaped.py").exists()


def test_nothing_outside_the_sandbox_was_touched(batch):
    subs, out = batch["subs"], batch["out"]
    assert not batch["marker"].exists()  # the pickle bomb never went off in the grader
    assert {p.name: p.read_bytes() for p in (subs / "solution" / "vit").iterdir()} \
        == batch["solution_files"]
    assert not (subs / "planted.py").exists() and not (out / "planted.txt").exists()
    assert not list(SOLUTIONS_DIR.rglob("planted.py"))
    assert not list((REPO_ROOT / "autograder").glob("planted.py"))
    grades = (out / "grades.csv").read_text()
    assert "tampered" not in grades


def test_no_process_is_left_behind(batch):
    """The storm's children, the endless loops and every worker are gone."""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if UID_BASE <= entry.stat().st_uid < UID_BASE + 10000:
                    left.append((entry.name, (entry / "cmdline").read_bytes()[:80]))
            except OSError:
                pass
    assert not left


def test_protections_active_as_root(batch):
    """Where CI runs (Linux, root) every protection must be on, not silently off."""
    if not LINUX_ROOT:
        pytest.skip("needs root on Linux")
    protections = "; ".join(batch["reports"]["solution"]["protections"])
    for words in ("memory cgroup", "pids cgroup", "cpu cgroup", "namespaces: mount, pid, net",
                  "private root file system", "unprivileged user", "no network",
                  "; seccomp filter ("):
        assert words in protections, protections


def test_outputs(batch):
    out, reports = batch["out"], batch["reports"]
    with open(out / "grades.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["student"] for r in table] == sorted(reports)
    assert list(table[0]) == ["student", "name"] + list(LAB.tasks) + ["total"]
    by_student = {r["student"]: r for r in table}
    assert float(by_student["solution"]["total"]) == sum(FULL.values())
    assert float(by_student["os_exit_at_import"]["vit.distill"]) == 0
    assert float(by_student["os_exit_at_import"]["vit.model"]) == FULL["vit.model"]
    results = json.loads((out / "gradescope" / "syntax_error" / "results.json").read_text())
    assert results["score"] == reports["syntax_error"]["earned"]
    assert len(results["tests"]) == len(LAB.tasks)
    for test in results["tests"]:
        assert {"name", "score", "max_score", "output", "visibility"} <= set(test)
    assert json.loads((out / "report.json").read_text())["lab"] == "vit"
    # feedback shows messages, never the hidden checks' source
    check_source = "".join(inspect.getsource(c.fn) for c in LAB.checks)
    distinctive = [line.strip() for line in check_source.splitlines()
                   if len(line.strip()) > 30 and not line.strip().startswith(('"', "#"))]
    for path in (out / "feedback").glob("*.txt"):
        text = path.read_text()
        assert not [line for line in distinctive if line in text], path.name
        assert "Traceback" not in text
    noisy = (out / "feedback" / "noisy_output_and_warnings.txt").read_text()
    assert len(noisy) < 20_000  # 100,000 characters of prints, truncated


def test_regrading_gives_identical_scores(batch, tmp_path):
    subs = tmp_path / "subs"
    for name in ("solution", "monkeypatches_torch_and_pytest", "os_exit_at_import", "skeleton"):
        shutil.copytree(batch["subs"] / name, subs / name)
    runs = [autograde("vit", subs, tmp_path / f"out{i}", workers=2, task="vit.distill",
                      progress=lambda *a: None) for i in range(2)]
    summary = [[(r["student"], c["check"], c["status"], c["message"], c["earned"])
                for r in run for c in r["checks"]] for run in runs]
    assert summary[0] == summary[1]
    for r in runs[0]:  # the same as in the full batch, graded next to others
        assert rows(r)["vit.distill"] == rows(batch["reports"][r["student"]])["vit.distill"]


def test_cli_autograde(batch, tmp_path, capsys):
    subs = tmp_path / "subs"
    for name in ("solution", "skeleton"):
        shutil.copytree(batch["subs"] / name, subs / name)
    out = tmp_path / "out"
    assert main(["autograde", "vit", str(subs), "--out", str(out), "--task", "vit.finetune",
                 "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "protections:" in printed and "per minute" in printed
    table = list(csv.DictReader(open(out / "grades.csv")))
    assert [(r["student"], r["vit.finetune"]) for r in table] == [("skeleton", "0"),
                                                                  ("solution", "3")]
    assert main(["autograde", "vit", str(subs), "--out", str(subs / "out")]) == 2
    assert "inside SUBMISSIONS" in capsys.readouterr().err
    assert main(["autograde", "vit", str(tmp_path / "missing")]) == 2


# ------------------------------------------------------------- the sandbox, one at a time

def test_memory_cgroup_stops_a_growing_submission(tmp_path):
    """Many small allocations (no single one too large): the memory cgroup stops the worker,
    the status says memory, and the next check gets a fresh worker."""
    folder = variant(tmp_path, "vit", at_solve(
        "    hoard = [torch.ones(2**24) for _ in range(200)]  # 64 MiB each, 12.5 GiB in all\n"))
    with IsolatedStudent(folder, Limits(memory=2**30, timeout_scale=3)) as student:
        student.start()
        if not any("memory cgroup" in p for p in student.protections):
            pytest.skip(f"no memory cgroup here: {student.protections}")
        results = grade(LAB, folder, "vit.distill", student=student)
        results += grade(LAB, folder, "vit.finetune", student=student)
        assert student.startups == 2
    assert results[0].status == "memory" and "1 GiB limit" in results[0].message, results[0]
    assert all(r.status == "passed" for r in results[1:]), results


def test_a_time_limit_holds_in_any_thread(tmp_path):
    """SIGALRM only reaches the main thread; the sandbox kills its worker from any thread."""
    folder = variant(tmp_path, "vit", at_solve("    while True:\n        pass\n"))
    found = []

    def run():
        with IsolatedStudent(folder, Limits(timeout_scale=0.2)) as student:
            found.extend(grade(LAB, folder, "vit.distill", student=student))
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert found[0].status == "timeout" and "did not finish in 2 s" in found[0].message


def test_without_namespaces_and_cgroups_grading_still_works(tmp_path):
    """Where the OS allows neither (a container without CAP_SYS_ADMIN, macOS), the worker still
    grades, a hang is still stopped, and the protections say what was missing. As root it must
    switch to its own user or refuse to start: on this kind of machine Python lives under a
    /root that other users cannot enter, so without a private root file system it refuses."""
    folder = variant(tmp_path, "vit", at_solve("    while True:\n        pass\n"))
    with IsolatedStudent(folder, Limits(timeout_scale=0.5),
                         disable=("namespaces", "cgroups")) as student:
        try:
            student.start()
        except SandboxError as exc:
            assert LINUX_ROOT and "refusing to run the submission as root" in str(exc), exc
            results = grade(LAB, folder, "vit.distill", student=student)
            assert results[0].status == "error" and "refusing" in results[0].message
            return
        results = grade(LAB, folder, "vit.distill", student=student)
        results += grade(LAB, folder, "vit.finetune", student=student)
        protections = "; ".join(student.protections)
    assert results[0].status == "timeout", results[0]
    assert all(r.status == "passed" for r in results[1:]), results
    assert "no namespaces (off)" in protections and "cgroup" not in protections
    assert "network: NOT isolated" in protections and "address space limit" in protections
    if LINUX_ROOT:
        assert "unprivileged user (uid" in protections, protections


def test_a_checkout_under_tmp_still_gets_a_private_root(tmp_path):
    """The private /tmp is mounted before the exposed paths: a venv or checkout under /tmp (CI
    clones there) stays visible, read-only."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data.txt").write_text("exposed content")
    folder = variant(tmp_path, "vit", at_solve(f"    print(open({str(shared / 'data.txt')!r})"
                                               f".read())\n"))
    with IsolatedStudent(folder, expose=[shared]) as student:
        results = grade(LAB, folder, "vit.distill", student=student)
        protections = "; ".join(student.protections)
    if LINUX_ROOT:
        assert "private root file system" in protections, protections
    assert results[0].status == "passed" and "exposed content" in results[0].output, results[0]


def test_only_probes_files_run_in_the_sandbox(tmp_path):
    student = IsolatedStudent(SOLUTIONS_DIR / "vit")
    try:
        with pytest.raises(ValueError, match="probes file"):
            student.run(lambda lab: lab.model)
        with pytest.raises(ValueError, match="probes file"):
            student.run(os.system, command="true")
    finally:
        student.close()


def test_in_process_grading_reports_memory(tmp_path):
    folder = variant(tmp_path, "vit", at_solve("    big = torch.empty(2**50)  # 4 PiB\n"))
    row = summarize(LAB, grade(LAB, folder, "vit.distill"))[0]
    assert row["status"] == "memory" and "ran out of memory" in row["message"], row


def test_in_process_student_keeps_its_output(tmp_path):
    folder = variant(tmp_path, "vit", {"distill.py": [(SOLVE, SOLVE + "    print('hello')\n")]})
    results = grade(LAB, folder, "vit.distill", student=Student(folder))
    assert results[0].status == "passed" and "hello" in results[0].output


# ------------------------------------------------------------------- unpacking submissions

def test_zip_members_never_escape(tmp_path):
    cases = {"../evil.py": "unsafe path", "/abs/evil.py": "unsafe path",
             "vit/../../evil.py": "unsafe path"}
    for name, words in cases.items():
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(name, "x = 1\n")
        with pytest.raises(BadSubmission, match=words):
            extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "evil.py").exists()


def test_zip_links_are_skipped_and_sizes_capped(tmp_path):
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        link = zipfile.ZipInfo("vit/model.py")
        link.external_attr = (0o120777 << 16)  # a symbolic link
        zf.writestr(link, str(SOLUTIONS_DIR / "vit" / "model.py"))
        zf.writestr("vit/__init__.py", "")
    extract_zip(archive, tmp_path / "links")
    assert not (tmp_path / "links" / "vit" / "model.py").exists()
    assert find_lab_folder(tmp_path / "links", "vit") == tmp_path / "links" / "vit"
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("vit/big.bin", b"\0" * (60 * 2**20))
    assert bomb.stat().st_size < 2**20
    with pytest.raises(BadSubmission, match="more than 50 MiB"):
        extract_zip(bomb, tmp_path / "bomb")
    with pytest.raises(BadSubmission, match="not a readable zip"):
        (tmp_path / "junk.zip").write_text("no zip")
        extract_zip(tmp_path / "junk.zip", tmp_path / "junk")


def test_folder_copies_skip_links(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "__init__.py").write_text("")
    (src / "model.py").symlink_to(SOLUTIONS_DIR / "vit" / "model.py")
    (src / "sub").symlink_to(SOLUTIONS_DIR)
    copy_tree_safely(src, tmp_path / "dst")
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["__init__.py"]


def test_submission_ids_are_safe_and_unique(tmp_path):
    (tmp_path / "a b").mkdir()
    (tmp_path / "a_b.zip").write_bytes(b"")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "readme.txt").write_text("")
    found, skipped = find_submissions(tmp_path)
    assert [s.sid for s in found] == ["a_b", "a_b-2"]
    assert [s.name for s in found] == ["a b", "a_b.zip"]
    assert skipped == ["skipped .hidden: a hidden file or folder, not a submission",
                       "skipped readme.txt: not a folder or a .zip, so not a submission"]
    with pytest.raises(UsageError):
        find_submissions(tmp_path / "missing")


def test_names_that_are_not_ascii_keep_their_own_ids(tmp_path):
    for name in ("Zoë", "Zo_", "café.zip", "Zoe\u0308x"):  # the last: a decomposed ë (macOS)
        (tmp_path / name).mkdir() if not name.endswith(".zip") else (tmp_path / name).write_bytes(b"")
    found, _ = find_submissions(tmp_path)
    assert sorted(s.sid for s in found) == sorted(["Zoë", "Zo_", "café", "Zoëx"])
    assert len({s.sid for s in found}) == 4


def test_every_entry_gets_a_row_or_a_line(tmp_path):
    """A .tar.gz, a .rar, a loose .py and a link are students' work in a form that is not
    graded: each gets a row that says why (never silently missing from grades.csv)."""
    subs, out = tmp_path / "subs", tmp_path / "out"
    subs.mkdir()
    (subs / "ann.tar.gz").write_bytes(b"\x1f\x8b")
    (subs / "ben.rar").write_bytes(b"Rar!")
    (subs / "cat.py").write_text("print('my model')\n")
    (subs / "dan").symlink_to(SOLUTIONS_DIR / "vit")
    (subs / ".DS_Store").write_bytes(b"")
    lines = []
    reports = autograde("vit", subs, out, task="vit.distill", progress=lines.append)
    why = {r["student"]: r["tasks"][0]["message"] for r in reports}
    assert "a .tar.gz archive, not a folder or a .zip" in why["ann.tar.gz"]
    assert "a .rar archive" in why["ben.rar"] and "a single .py file" in why["cat.py"]
    assert "a symbolic link (never followed)" in why["dan"]
    assert all(r["earned"] == 0 for r in reports)
    table = list(csv.DictReader(open(out / "grades.csv", encoding="utf-8")))
    assert [r["name"] for r in table] == ["ann.tar.gz", "ben.rar", "cat.py", "dan"]
    assert any(".DS_Store" in line for line in lines)


def test_an_interrupted_batch_keeps_its_work_and_continues(tmp_path):
    """Ctrl-C after the first student: that student's results are on disk; the same command
    again grades only the others, and --regrade grades everyone again."""
    subs, out = tmp_path / "subs", tmp_path / "out"
    for name in ("a_solution", "b_skeleton", "c_solution"):
        src = SOLUTIONS_DIR / "vit" if "solution" in name else LABS_DIR / "vit"
        shutil.copytree(src, subs / name, ignore=shutil.ignore_patterns("__pycache__"))
    seen = []

    def stop_after_first(line):
        seen.append(line)
        if line.strip().startswith("a_solution"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        autograde("vit", subs, out, task="vit.distill", progress=stop_after_first)
    assert (out / "students" / "a_solution.json").is_file()
    assert not (out / "students" / "b_skeleton.json").exists()
    assert "a_solution" in (out / "grades.csv").read_text()
    assert any("run the same command again" in line for line in seen)

    lines = []
    reports = autograde("vit", subs, out, task="vit.distill", progress=lines.append)
    assert any("1 submission(s) already graded" in line for line in lines)
    assert any("grading 2 submission(s)" in line for line in lines)
    assert [r["earned"] for r in reports] == [2, 0, 2]
    lines = []
    autograde("vit", subs, out, task="vit.distill", progress=lines.append, regrade=True)
    assert any("grading 3 submission(s)" in line for line in lines)


def test_an_out_folder_is_this_batchs_own(tmp_path):
    """--out with other files is refused; one with another batch's results needs --regrade,
    which leaves no stale feedback of students who are gone."""
    subs, out = tmp_path / "subs", tmp_path / "out"
    shutil.copytree(SOLUTIONS_DIR / "vit", subs / "amy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(SOLUTIONS_DIR / "vit", subs / "bob", ignore=shutil.ignore_patterns("__pycache__"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    with pytest.raises(UsageError, match="did not write"):
        autograde("vit", subs, mine, task="vit.distill", progress=lambda *a: None)
    assert (mine / "thesis.tex").read_text() == "mine"
    autograde("vit", subs, out, task="vit.distill", progress=lambda *a: None)
    report = (out / "class_report.md").read_text()  # what the class got wrong, next to grades.csv
    assert "| `vit.distill` | 2 | 0 | 0 |" in report and (out / "class_report.csv").is_file()
    with pytest.raises(UsageError, match="another batch"):
        autograde("vit", subs, out, task="vit.finetune", progress=lambda *a: None)
    shutil.rmtree(subs / "bob")
    autograde("vit", subs, out, task="vit.finetune", progress=lambda *a: None, regrade=True)
    assert sorted(p.name for p in (out / "feedback").iterdir()) == ["amy.txt"]
    assert sorted(p.name for p in (out / "gradescope").iterdir()) == ["amy"]


@pytest.mark.parametrize("argv, words", [
    (["--timeout-scale", "0"], "--timeout-scale: must be above 0"),
    (["--timeout-scale", "-2"], "--timeout-scale: must be above 0"),
    (["--memory", "0"], "--memory: must be above 0"),
    (["--workers", "0"], "--workers: must be at least 1"),
])
def test_bad_autograde_options_are_refused_before_any_work(tmp_path, capsys, argv, words):
    (tmp_path / "subs").mkdir()
    with pytest.raises(SystemExit):
        main(["autograde", "vit", str(tmp_path / "subs"), "--out", str(tmp_path / "o"), *argv])
    assert words in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_too_little_memory_and_a_file_as_out_are_one_line(tmp_path, capsys):
    (tmp_path / "subs" / "amy").mkdir(parents=True)
    assert main(["autograde", "vit", str(tmp_path / "subs"), "--memory", "0.1"]) == 2
    assert "too little for Python and torch" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["autograde", "vit", str(tmp_path / "subs"), "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_autograde_refuses_an_output_inside_the_submissions(tmp_path):
    (tmp_path / "subs").mkdir()
    with pytest.raises(UsageError, match="inside SUBMISSIONS"):
        autograde("vit", tmp_path / "subs", tmp_path / "subs" / "out")
    with pytest.raises(UsageError, match="no submissions"):
        autograde("vit", tmp_path / "subs", tmp_path / "out")


def test_statuses_include_memory():
    from vislab.grading import STATUSES
    assert "memory" in STATUSES and "timeout" in STATUSES


def test_gradescope_recipe_end_to_end(tmp_path):
    """docs/gradescope/run_autograder as Gradescope runs it, on an upload of only the file the
    student edited (no __init__.py, no other modules): the upload is laid over the skeleton, so
    the finished tasks earn their points and the others say "not implemented"."""
    import subprocess

    root = tmp_path / "autograder"
    (root / "results").mkdir(parents=True)
    (root / "source").symlink_to(REPO_ROOT)
    (root / "submission").mkdir()
    shutil.copy(SOLUTIONS_DIR / "vit" / "distill.py", root / "submission" / "distill.py")
    done = subprocess.run(["bash", str(REPO_ROOT / "docs" / "gradescope" / "run_autograder")],
                          env={**os.environ, "AUTOGRADER": str(root)}, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((root / "results" / "results.json").read_text())
    tests = {t["name"].split(":")[0]: t for t in results["tests"]}
    assert tests["vit.distill"]["score"] == tests["vit.distill"]["max_score"] > 0
    assert tests["vit.attention"]["score"] == 0 and "not implemented" in tests["vit.attention"]["output"]
    assert results["score"] == tests["vit.distill"]["max_score"]


def test_gradescope_always_writes_results(tmp_path):
    """Whatever goes wrong, Gradescope gets a results.json that says what (never none)."""
    from vislab.autograde import gradescope_submission

    results = tmp_path / "results" / "results.json"
    gradescope_submission("vit", tmp_path / "no-upload", results)
    written = json.loads(results.read_text())
    assert written["score"] == 0 and "could not grade this upload" in written["output"]


def test_a_submission_has_a_total_time_budget(tmp_path):
    """Sleeping just under every check's limit must not hold the batch: once a submission has
    used its share of the checks' limits, its remaining checks time out at once."""
    from vislab.grading import CheckTimeout

    folder = variant(tmp_path, "vit", {})
    student = IsolatedStudent(folder, Limits(budget_share=0.5))
    try:
        student.set_budget([0.5, 1.0, 0.5])  # 1 s in all: half the sum, at least the longest
        with student.time_limit(10):
            time.sleep(0.6)
        with student.time_limit(10):
            assert student._limit <= 0.45  # what is left of the budget, not 10 s
            time.sleep(0.5)
        with pytest.raises(CheckTimeout, match="used up its total time"):
            with student.time_limit(10):
                pass
    finally:
        student.close()


def test_cgroup_removal_waits_boundedly_and_says_what_is_left(tmp_path, capsys):
    from vislab.sandbox import Cgroups

    busy = tmp_path / "vislab-busy"
    busy.mkdir()
    (busy / "cgroup.procs").write_text("")  # a folder rmdir cannot remove: stands in for a busy group
    groups = Cgroups("x", Limits(), enabled=False)
    groups.dirs = [busy]
    start = time.monotonic()
    assert groups.remove(seconds=0.3) == [busy]
    assert time.monotonic() - start < 5
    assert f"could not remove {busy}" in capsys.readouterr().err


def test_a_fresh_worker_is_warm_before_it_says_ready():
    """The first optimiser step's one-off imports are paid before the worker reports ready, so
    no check is charged for them."""
    import subprocess

    code = ("import sys, torch; from vislab.probing import warm_up; warm_up(); "
            "print(sorted(m for m in ('torch._dynamo', 'torch.optim.adamw') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "torch._dynamo" in done.stdout and "torch.optim.adamw" in done.stdout, done.stderr[-2000:]
