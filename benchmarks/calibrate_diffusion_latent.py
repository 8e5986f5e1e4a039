"""Calibrate the diffusion lab's second training check (diffusion.latent): the reference
LatentDenoiser's held-out epsilon MSE over many seeds (benchmarks/calibrate.py takes one
scorer per lab; this is the lab's other one).

    python benchmarks/calibrate_diffusion_latent.py [--seeds 20]
"""
import argparse
import statistics
import sys
import time

from vislab import SOLUTIONS_DIR
from vislab.grading import Student, load_lab, one_torch_thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    load_lab("diffusion")
    checks = sys.modules["_vislab_autograder.diffusion_latent"]
    student = Student(SOLUTIONS_DIR / "diffusion")
    scores = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        with one_torch_thread():
            scores.append(checks.latent_mse(student, seed))
        print(f"seed {seed:2d}: {scores[-1]:.3f}  ({time.perf_counter() - start:.1f} s)", flush=True)
    print(f"min {min(scores):.3f}  mean {statistics.mean(scores):.3f}  max {max(scores):.3f}  "
          f"stdev {statistics.stdev(scores):.3f}  (pass mark {checks.LATENT_THRESHOLD})")


if __name__ == "__main__":
    main()
