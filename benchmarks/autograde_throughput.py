"""Throughput of `vislab autograde`: submissions per minute, 1 worker vs 2.

    python benchmarks/autograde_throughput.py [--lab vit] [--submissions 8] [--workers 1 2]

Grades N copies of the lab's solution (the slowest kind of submission: every check runs to the
end, the MNIST training check included), each in its own sandbox, once per worker count, and
prints wall time, submissions per minute and the machine (CPU model, cores, load average), so
that the figures in docs/instructors.md can be reproduced. Every copy must get full marks.
"""
import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from timing import cpu_name
from vislab import SOLUTIONS_DIR
from vislab.autograde import autograde


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="vit")
    parser.add_argument("--submissions", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{'root' if hasattr(os, 'geteuid') and os.geteuid() == 0 else 'not root'}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="vislab-bench-") as tmp:
        subs = Path(tmp) / "submissions"
        for i in range(args.submissions):
            shutil.copytree(SOLUTIONS_DIR / args.lab, subs / f"student{i:03d}" / args.lab,
                            ignore=shutil.ignore_patterns("__pycache__"))
        for workers in args.workers:
            before = load()
            start = time.perf_counter()
            reports = autograde(args.lab, subs, Path(tmp) / f"out{workers}", workers,
                                progress=lambda *a: None)
            seconds = time.perf_counter() - start
            full = sum(r["earned"] == r["possible"] for r in reports)
            failures += len(reports) - full
            per_sub = sorted(r["seconds"] for r in reports)
            print(f"workers {workers}: {len(reports)} submissions in {seconds:.1f} s = "
                  f"{60 * len(reports) / seconds:.1f} per minute; per submission "
                  f"{per_sub[0]:.1f}-{per_sub[-1]:.1f} s; full marks {full}/{len(reports)}; "
                  f"load average before {before}, after {load()}", flush=True)
        print("protections: " + "; ".join(reports[0]["protections"]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
