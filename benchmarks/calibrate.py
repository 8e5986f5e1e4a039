"""Calibrate a lab's training check: the reference solution's score over many seeds.

    python benchmarks/calibrate.py vit [--seeds 20]

Prints each seed's score and the min / mean / max; the check's pass mark must sit below the
minimum with a margin, so that every correct implementation passes. Runs on one torch thread,
as grading does (the thread count changes the order of sums, so the scores).
"""
import argparse
import statistics
import sys
import time

from vislab import SOLUTIONS_DIR
from vislab.grading import Student, load_lab, one_torch_thread

SCORERS = {"vit": "mnist_accuracy", "swin_cnn": "mnist_accuracy"}
SCORERS["slots"] = "reconstruction_error"  # held-out MSE: lower is better
SCORERS["unet"] = "pets_dice"  # the UNet lab: test Dice on pets-synthetic
SCORERS["vae"] = "mnist_elbo"  # test ELBO, nats per image (higher is better)
SCORERS["seq2seq"] = "generated_exact_match"  # held-out exact match on generated MathQA-style problems
SCORERS["ssl"] = "masked_test_loss"  # held-out masked-patch MSE after MAE pretraining: lower is better
SCORERS["diffusion"] = "denoiser_mse"  # held-out epsilon MSE of a tiny denoiser trained with the loss: lower is better


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lab", choices=sorted(SCORERS))
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    load_lab(args.lab)
    checks = sys.modules[f"_vislab_autograder.{args.lab}"]
    score = getattr(checks, SCORERS[args.lab])
    student = Student(SOLUTIONS_DIR / args.lab)
    scores = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        with one_torch_thread():
            scores.append(score(student, seed))
        print(f"seed {seed:2d}: {scores[-1]:.3f}  ({time.perf_counter() - start:.1f} s)", flush=True)
    print(f"min {min(scores):.3f}  mean {statistics.mean(scores):.3f}  max {max(scores):.3f}  "
          f"stdev {statistics.stdev(scores):.3f}  (pass mark {checks.TRAIN_THRESHOLD})")


if __name__ == "__main__":
    main()
