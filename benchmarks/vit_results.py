"""The ViT lab's results table: every experiment of docs/labs/vit.md, run on the CPU.

    python benchmarks/vit_results.py [--out runs/results/vit]

Each row runs `vislab train vit --impl solutions ...` and reads the run's metrics.jsonl; the
script prints a Markdown table (command, final test accuracy, best test accuracy, training
seconds) with the date, the CPU and the torch version, ready for the docs.
"""
import argparse
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

from timing import cpu_name
from vislab import RUNS_DIR

# name: (options, the run folder it needs first, if any)
EXPERIMENTS = {
    "vit": ([], None),
    "cnn": (["--model", "cnn"], None),
    "vit-randaugment": (["--randaugment"], None),
    "vit-mixup": (["--mixup", "0.8"], None),
    "vit-dropout-wd": (["--dropout", "0.1", "--weight-decay", "0.1"], None),
    "vit-distilled-from-cnn": (["--teacher", "{cnn}/checkpoint.pt"], "cnn"),
    "vit-pretrain-0-4": (["--classes", "0-4"], None),
    "vit-5-9-scratch-50": (["--classes", "5-9", "--per-class", "50"], None),
    "vit-5-9-finetune-head-50": (["--classes", "5-9", "--per-class", "50", "--finetune",
                                  "{vit-pretrain-0-4}/checkpoint.pt", "--finetune-mode", "head"],
                                 "vit-pretrain-0-4"),
    "vit-5-9-finetune-full-50": (["--classes", "5-9", "--per-class", "50", "--finetune",
                                  "{vit-pretrain-0-4}/checkpoint.pt", "--finetune-mode", "full"],
                                 "vit-pretrain-0-4"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RUNS_DIR / "results" / "vit")
    parser.add_argument("--only", nargs="*", help="run only these experiments")
    args = parser.parse_args()
    rows = []
    for name, (options, _) in EXPERIMENTS.items():
        if args.only and name not in args.only:
            continue
        folder = args.out / name
        options = [o.format(**{k: args.out / k for k in EXPERIMENTS}) for o in options]
        command = ["vislab", "train", "vit", "--impl", "solutions", *options, "--out", str(folder)]
        print("$", " ".join(command), flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vislab", *command[1:]], check=True,
                       stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        train_seconds = sum(h["seconds"] for h in history)
        rows.append((name, " ".join(command[:5] + options), history[-1]["test_acc"],
                     max(h["test_acc"] for h in history), len(history), train_seconds, wall))
    print(f"\nMeasured {date.today()} on {cpu_name()} ({torch.get_num_threads()} threads), "
          f"torch {torch.__version__}, by `python benchmarks/vit_results.py`.\n")
    print("| run | command | test acc (last) | best | epochs | train s | wall s |")
    print("|---|---|---|---|---|---|---|")
    for name, command, last, best, epochs, seconds, wall in rows:
        print(f"| {name} | `{command}` | {last:.3f} | {best:.3f} | {epochs} | {seconds:.0f} | "
              f"{wall:.0f} |")


if __name__ == "__main__":
    main()
