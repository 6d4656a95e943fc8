#!/usr/bin/env bash
# The paper profile's shapes on one GPU (SD-1.5 UNet config, random weights, 512 px, bf16):
# one Diffusion-DPO, SePPO and D3PO update, a sampling and a scoring batch; prints pairs/s,
# images/s, peak memory and MFU. Refuses without CUDA; `--tiny` runs small shapes anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec python -m diffpo.pipeline.gpu_smoke "$@"
