"""Each check's time against its limit, measured under whatever load the machine has now.

    python benchmarks/check_margins.py [--labs vit swin_cnn ...] [--repeats 3]

Grades the reference of every lab (in this process, one torch thread, as `vislab grade` does)
`--repeats` times and prints, per check, the slowest time, its limit and the share of the limit
it used, slowest share first, with the load average. A check whose slowest run uses more than
half its limit is marked: on a busier machine it could time out, and a regrade could then
differ. Run it while the machine is busy (that is the point), e.g. next to a training run.
"""
import argparse
import os

from timing import cpu_name
from vislab import SOLUTIONS_DIR
from vislab.grading import grade, lab_names, load_lab

MARGIN = 0.5  # the share of a limit a check may use under load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labs", nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; load average at the start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    for name in args.labs or lab_names():
        lab = load_lab(name)
        slowest: dict[str, float] = {}
        for _ in range(args.repeats):
            for r in grade(lab, SOLUTIONS_DIR / name):
                assert r.status == "passed", f"{name} {r.check}: {r.status} {r.message}"
                key = f"{name} {r.check}"
                slowest[key] = max(slowest.get(key, 0.0), r.seconds)
        limits = {f"{name} {c.name}": c.timeout for c in lab.checks}
        rows += [(slowest[k] / limits[k], k, slowest[k], limits[k]) for k in slowest]
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'share':>6} {'slowest s':>9} {'limit s':>7}  check")
    for share, key, seconds, limit in sorted(rows, reverse=True):
        mark = "  <-- over half its limit" if share > MARGIN else ""
        if share > 0.05 or mark:
            print(f"{share:6.2f} {seconds:9.2f} {limit:7.1f}  {key}{mark}")
    print(f"({sum(share <= 0.05 for share, *_ in rows)} more checks used <= 5% of their limit)")
    return 1 if any(share > MARGIN for share, *_ in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
