"""The class report shown in docs/instructors.md, made from a generated batch of the ViT lab.

    python benchmarks/class_report_example.py [--out DIR]

The batch: the solution, the skeleton, and copies of the solution with named mistakes of
tests/test_vit.py, some shared by several "students"; every task graded in this process (as
`vislab grade` does; `vislab autograde` gives the same counts through the sandbox). Writes
DIR/report.json and the class report, and copies the picture to docs/img/class_report_example.png.
"""
import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from vislab import LABS_DIR, REPO_ROOT
from vislab.grading import grade, load_lab, report
from vislab.report import write_report

sys.path.insert(0, str(REPO_ROOT / "tests"))
from conftest import variant  # noqa: E402
from test_vit import MISTAKES  # noqa: E402

BATCH = {  # student: the mistakes in their copy of the solution
    "s01": [], "s02": [], "s03": ["missing 1/sqrt(d) scale"], "s04": ["missing 1/sqrt(d) scale"],
    "s05": ["missing 1/sqrt(d) scale", "KD without T^2"], "s06": ["softmax over the queries"],
    "s07": ["KD without T^2"], "s08": ["no residual around attention"],
    "s09": ["CLS token appended last"], "s10": ["teacher not detached"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="class-report-")))
    args = parser.parse_args()
    lab = load_lab("vit")
    work = Path(tempfile.mkdtemp())
    reports = []
    for sid, mistakes in [("s00-skeleton", None)] + list(BATCH.items()):
        if mistakes is None:
            folder = LABS_DIR / "vit"
        else:
            edits = {}
            for name in mistakes:
                _, file, old, new, _ = MISTAKES[name]
                edits.setdefault(file, []).append((old, new))
            folder = variant(work / sid, "vit", edits)
        rep = report(lab, folder, grade(lab, folder))
        rep.update(student=sid, name=sid)
        reports.append(rep)
        print(f"{sid}: {rep['earned']:g}/{rep['possible']:g}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps({"lab": "vit", "reports": reports}, indent=1))
    for path in write_report(args.out):
        print(f"wrote {path}")
    shutil.copy(args.out / "class_report.png", REPO_ROOT / "docs" / "img" / "class_report_example.png")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
