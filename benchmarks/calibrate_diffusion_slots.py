"""Calibrate the diffusion lab's third training check (diffusion.slot_decoder): the tiny slot
model trained with the reference slot_diffusion_loss, its held-out epsilon-MSE with each
scene's own slots and with another scene's, over many seeds (benchmarks/calibrate.py takes one
scorer per lab; this is another of the lab's).

    python benchmarks/calibrate_diffusion_slots.py [--seeds 20] [--impl FOLDER]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from vislab import SOLUTIONS_DIR
from vislab.grading import Student, load_lab, one_torch_thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--impl", type=Path, default=SOLUTIONS_DIR / "diffusion",
                        help="the lab folder to train with (default: the solution)")
    args = parser.parse_args()
    load_lab("diffusion")
    checks = sys.modules["_vislab_autograder.diffusion_slots"]
    student = Student(args.impl)
    own, gap = [], []
    for seed in range(args.seeds):
        start = time.perf_counter()
        with one_torch_thread():
            a, b = checks.slot_scores(student, torch.Generator().manual_seed(seed))
        own.append(a)
        gap.append(b - a)
        print(f"seed {seed:2d}: own-slot MSE {a:.4f}, other-slot MSE {b:.4f}, gap {b - a:.4f}  "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
    for name, values, mark in (("own-slot MSE", own, f"at most {checks.MAX_MSE}"),
                               ("gap", gap, f"at least {checks.MIN_GAP}")):
        print(f"{name}: min {min(values):.4f}  mean {statistics.mean(values):.4f}  "
              f"max {max(values):.4f}  stdev {statistics.stdev(values):.4f}  (pass mark {mark})")


if __name__ == "__main__":
    main()
