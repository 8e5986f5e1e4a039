#!/usr/bin/env bash
# Gradescope's setup.sh: install vislab into /autograder/source/.venv. Build the autograder zip
# from a copy of the repository with solutions/, tests/ and .git removed (a worker without
# namespaces can read world-readable files, so solutions must not be in the image at all).
set -euo pipefail
cd /autograder/source
python3 -m venv .venv
.venv/bin/pip install -q -e .
