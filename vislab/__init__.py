"""vislab: an offline-first, fill-in-the-blank deep-learning lab kit."""
import os
from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS_DIR = REPO_ROOT / "solutions"
LABS_DIR = REPO_ROOT / "labs"
AUTOGRADER_DIR = REPO_ROOT / "autograder"
DATASETS_DIR = REPO_ROOT / "datasets"
# Run folders of `vislab train` (never inside a lab folder, whatever the working directory).
RUNS_DIR = Path(os.environ.get("VISLAB_RUNS", REPO_ROOT / "runs"))
