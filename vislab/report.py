"""What the class got wrong: one report of a whole graded batch, for the instructor.

    vislab report RESULTS/ [--names]     (vislab autograde writes it too, next to grades.csv)

From the batch's report.json it counts, per task, how many students passed, failed, timed out,
ran out of memory, had an error or did not implement it, and their mean points; per named
mistake (the structured `mistake` of a failed check: "softmax over the queries ...") how many
students' code matched it, with its task and the handout section the task is taught in; the
failures that matched no named mistake, grouped by check; and the same counts per check, so
that a check that everybody fails (a broken check, an unclear handout) stands out. It writes

    RESULTS/class_report.md     the one-page report, with the plot
    RESULTS/class_report.png    stacked bars per task, and the most common mistakes
    RESULTS/class_report.csv    every count above, one row per (kind, task, check, mistake)

No student's code, output or message text is in it; student names only with `--names`.
"""
from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

from vislab.errors import UsageError

STATUS_ORDER = ("passed", "failed", "not implemented", "error", "timeout", "memory")


def handout_sections(lab: str) -> dict[str, str]:
    """task id -> the handout's heading for it ('3. `vit.attention` — ...'), from labs/<lab>/README.md."""
    from vislab import LABS_DIR

    path = LABS_DIR / lab / "README.md"
    sections = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            match = re.match(r"#+\s+(.*`([a-z0-9_.]+)`.*)", line)
            if match:
                sections.setdefault(match.group(2), match.group(1).strip())
    return sections


def summarize_batch(reports: list[dict], tasks: list[str]) -> dict:
    """The counts of the report, from the per-student reports of a batch."""
    per_task = {t: Counter() for t in tasks}
    points = {t: [] for t in tasks}
    per_check: dict[tuple[str, str], Counter] = {}
    mistakes: Counter = Counter()
    unnamed: Counter = Counter()
    who: dict[tuple, list[str]] = {}
    for rep in reports:
        for row in rep["tasks"]:
            per_task.setdefault(row["task"], Counter())[row["status"]] += 1
            points.setdefault(row["task"], []).append(row["earned"])
        matched = set()
        for c in rep["checks"]:
            per_check.setdefault((c["task"], c["check"]), Counter())[c["status"]] += 1
            if c["status"] != "failed":
                continue
            if c.get("mistake"):
                matched.add((c["task"], c["mistake"]))
            else:
                unnamed[(c["task"], c["check"])] += 1
                who.setdefault(("check", c["task"], c["check"]), []).append(rep["student"])
        for key in matched:  # a student counts once per mistake, however many checks show it
            mistakes[key] += 1
            who.setdefault(("mistake",) + key, []).append(rep["student"])
    mean = {t: (sum(v) / len(v) if v else 0.0) for t, v in points.items()}
    return {"students": len(reports), "per_task": per_task, "mean": mean,
            "per_check": per_check, "mistakes": mistakes, "unnamed": unnamed, "who": who}


def write_report(results: Path, names: bool = False) -> list[Path]:
    """class_report.md, .png and .csv in `results` (a folder vislab autograde wrote)."""
    from vislab.grading import load_lab

    path = Path(results) / "report.json"
    try:
        batch = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no {path}: give the folder `vislab autograde --out` wrote") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not a vislab report ({exc})") from None
    lab = load_lab(batch["lab"])
    tasks = [t for t in lab.tasks if any(r["task"] == t for rep in batch["reports"] for r in rep["tasks"])]
    counts = summarize_batch(batch["reports"], tasks)
    points = {t: lab.points(t) for t in tasks}
    sections = handout_sections(lab.name)
    out = Path(results)
    written = [write_csv(counts, points, out / "class_report.csv", names),
               plot(counts, tasks, out / "class_report.png", lab.name)]
    (out / "class_report.md").write_text(markdown(counts, tasks, points, sections, lab.name, names),
                                         encoding="utf-8")
    return [out / "class_report.md"] + written


def _statuses(counter: Counter) -> list[int]:
    return [counter.get(s, 0) for s in STATUS_ORDER]


def markdown(counts: dict, tasks: list[str], points: dict, sections: dict, lab: str,
             names: bool) -> str:
    n = counts["students"]
    lines = [f"# What the class got wrong: lab `{lab}`, {n} submission(s)", "",
             "![tasks and mistakes](class_report.png)", "", "## Per task", "",
             "| task | " + " | ".join(STATUS_ORDER) + " | mean points |",
             "|---|" + "---:|" * (len(STATUS_ORDER) + 1)]
    for t in tasks:
        cells = " | ".join(str(v) for v in _statuses(counts["per_task"][t]))
        lines.append(f"| `{t}` | {cells} | {counts['mean'][t]:.2f} / {points[t]:g} |")
    lines += ["", "## Named mistakes", "",
              "Students whose code matched a mistake the checks know (each student counted once "
              "per mistake).", "", "| students | mistake | task | handout section |"
              + (" students |" if names else ""), "|---:|---|---|---|" + ("---|" if names else "")]
    for (task, mistake), k in counts["mistakes"].most_common():
        who = ", ".join(counts["who"][("mistake", task, mistake)]) if names else ""
        lines.append(f"| {k} | {mistake} | `{task}` | {sections.get(task, '-')} |"
                     + (f" {who} |" if names else ""))
    if not counts["mistakes"]:
        lines.append("| 0 | (none matched) | | |" + (" |" if names else ""))
    lines += ["", "## Failures that matched no named mistake", "",
              "| students | check | task |", "|---:|---|---|"]
    for (task, check), k in counts["unnamed"].most_common():
        lines.append(f"| {k} | `{check}` | `{task}` |")
    if not counts["unnamed"]:
        lines.append("| 0 | (none) | |")
    lines += ["", "## Per check", "",
              "A check that (nearly) everybody fails, or that nobody reaches, deserves a look: a "
              "broken check or an unclear handout.", "",
              "| task | check | " + " | ".join(STATUS_ORDER) + " |",
              "|---|---|" + "---:|" * len(STATUS_ORDER)]
    for (task, check), counter in counts["per_check"].items():
        flag = " (nobody passed)" if n and not counter.get("passed") else ""
        lines.append(f"| `{task}` | `{check}`{flag} | "
                     + " | ".join(str(v) for v in _statuses(counter)) + " |")
    return "\n".join(lines) + "\n"


def write_csv(counts: dict, points: dict, path: Path, names: bool) -> Path:
    rows = [["kind", "task", "check", "mistake", *STATUS_ORDER, "students", "mean_points",
             "possible"] + (["names"] if names else [])]
    for t, counter in counts["per_task"].items():
        rows.append(["task", t, "", "", *_statuses(counter), sum(counter.values()),
                     f"{counts['mean'][t]:.4g}", f"{points.get(t, 0):g}"] + ([""] if names else []))
    for (t, check), counter in counts["per_check"].items():
        rows.append(["check", t, check, "", *_statuses(counter), sum(counter.values()), "", ""]
                    + ([""] if names else []))
    for (t, mistake), k in counts["mistakes"].most_common():
        rows.append(["mistake", t, "", mistake, *[""] * len(STATUS_ORDER), k, "", ""]
                    + ([";".join(counts["who"][("mistake", t, mistake)])] if names else []))
    for (t, check), k in counts["unnamed"].most_common():
        rows.append(["unnamed failure", t, check, "", *[""] * len(STATUS_ORDER), k, "", ""]
                    + ([";".join(counts["who"][("check", t, check)])] if names else []))
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def plot(counts: dict, tasks: list[str], path: Path, lab: str) -> Path:
    """Stacked bars of the students' status per task; the most common named mistakes."""
    from vislab.plots import _save, plt

    colours = {"passed": "#4caf50", "failed": "#e53935", "not implemented": "#bdbdbd",
               "error": "#8e24aa", "timeout": "#fb8c00", "memory": "#3949ab"}
    top = counts["mistakes"].most_common(8)
    fig, axes = plt.subplots(1, 2 if top else 1, figsize=(13 if top else 7, 0.45 * max(len(tasks), len(top), 4) + 1.5),
                             squeeze=False)
    from matplotlib.ticker import MaxNLocator

    ax = axes[0][0]
    left = [0] * len(tasks)
    for status in STATUS_ORDER:
        values = [counts["per_task"][t].get(status, 0) for t in tasks]
        if any(values):
            ax.barh(tasks, values, left=left, color=colours[status], label=status)
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlabel("students")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{lab}: {counts['students']} submission(s), status per task")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False)
    if top:
        ax = axes[0][1]
        labels = [_short(f"{m} ({t})", 70) for (t, m), _ in top]
        ax.barh(labels, [k for _, k in top], color="#e53935")
        ax.invert_yaxis()
        ax.set_xlabel("students")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("most common named mistakes")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="what the class got wrong: a report of a graded batch",
                       description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="the folder `vislab autograde --out` wrote")
    p.add_argument("--names", action="store_true",
                   help="list the students behind each mistake (default: counts only)")
    p.set_defaults(run=cmd_report)


def cmd_report(args) -> int:
    for path in write_report(args.results, args.names):
        print(f"wrote {path}")
    return 0
