#!/usr/bin/env bash
# Run once by Snakemake (`--sdm conda`) inside the environment it has just made from
# diffpo.yaml, in the working directory: the project root. Installs diffpo itself, editable,
# so that the jobs run this checkout's code (the code the rules' code() inputs track).
# --no-deps: diffpo.yaml pins every dependency.
set -euo pipefail
python -m pip install --no-deps --editable .
