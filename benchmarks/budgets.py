"""The kit's speed budgets, measured: one lab's grading <= 20 s, the whole test suite <= 15 min,
on 2 CPU cores.

    python benchmarks/budgets.py [--suite]

Times `vislab grade LAB --impl solutions` (the whole command: interpreter start, imports,
every check) for every lab, median of 3, and with --suite the whole `pytest -q` run once.
Run it on an otherwise idle machine: the numbers are wall-clock seconds.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

from vislab import REPO_ROOT
from vislab.grading import lab_names

GRADE_BUDGET, SUITE_BUDGET = 20.0, 900.0


def wall(command: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    code = subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode
    return time.perf_counter() - start, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="store_true", help="also time the whole test suite")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start")
    for lab in lab_names():
        times = []
        for _ in range(args.repeats):
            seconds, code = wall([sys.executable, "-m", "vislab", "grade", lab, "--impl", "solutions"])
            assert code == 0, f"grading {lab} --impl solutions did not give full marks"
            times.append(seconds)
        median = statistics.median(times)
        verdict = "within" if median <= GRADE_BUDGET else "OVER"
        print(f"vislab grade {lab} --impl solutions: median {median:.1f} s of "
              f"{', '.join(f'{t:.1f}' for t in times)} ({verdict} the {GRADE_BUDGET:g} s budget)")
    if args.suite:
        seconds, code = wall([sys.executable, "-m", "pytest", "-q"])
        verdict = "within" if seconds <= SUITE_BUDGET else "OVER"
        print(f"pytest -q: {seconds:.0f} s, exit code {code} ({verdict} the {SUITE_BUDGET:g} s budget)")


if __name__ == "__main__":
    main()
