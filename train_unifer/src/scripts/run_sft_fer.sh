#!/usr/bin/env bash
# Cold-start SFT of Qwen2.5-VL on UniFER-CoT-230K: the paper's run, from any directory.
#
#   bash train_unifer/src/scripts/run_sft_fer.sh [extra SFTConfig / ModelConfig flags, which override the recipe]
#
# The settings are train_unifer/recipes/sft_paper.yaml; the launch is unifer.train.launch (Python, tested).
# Paths (environment; defaults relative to the repository):
#   MODEL_PATH   model/Qwen2.5-VL-7B-Instruct          DATA_PATH   data/UniFER_CoT_230K.json
#   IMAGE_ROOT   /dataset/  (the paper's)              OUTPUT_DIR  model/Qwen2.5-VL-7B-FER-COT-SFT-230K
# Launch: NPROC_PER_NODE (default: visible GPUs, 1 without), NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (12349).
# DEEPSPEED_CONFIG: zero2 (default with GPUs, the paper's), zero3, zero3_offload or a JSON path; empty = none
# (default without GPUs). REPORT_TO (the recipe's: none), RUN_NAME, PYTHON.
# PREFLIGHT_IMAGES: decode (default: every image decoded before training) or exist (only checked to exist).
# Without CUDA the trainer itself switches to CPU, float32 and sdpa attention.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m unifer.train.launch sft "$@"
