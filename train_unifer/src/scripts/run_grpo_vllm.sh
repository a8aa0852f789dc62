#!/usr/bin/env bash
# GRPO (RLVR) of the SFT model on UniFER-RLVR-360K with vLLM rollouts: the paper's run, from any directory.
#
#   bash train_unifer/src/scripts/run_grpo_vllm.sh [extra GRPOConfig / ModelConfig / script flags, which override]
#
# The settings are train_unifer/recipes/grpo_paper.yaml; the launch is unifer.train.launch (Python, tested).
# Paths (environment; defaults relative to the repository):
#   MODEL_PATH   model/Qwen2.5-VL-7B-FER-COT-SFT-230K (the SFT output)   DATA_PATH  data/UniFER_RLVR_360K.json
#   IMAGE_ROOT   /dataset/  (the paper's)                                OUTPUT_DIR model/Qwen2.5-VL-7B-FER-GRPO
# VLLM_MODE: server (default with 2+ GPUs: the last visible GPU serves vLLM, the others train, as in the paper),
#   colocate (default with 1 GPU: vLLM inside each training process), none (default without CUDA: transformers
#   generation). Server mode: VLLM_HOST (127.0.0.1), VLLM_PORT (8000), VLLM_GPU_MEMORY_UTILIZATION (0.8, the
#   paper's), VLLM_MAX_MODEL_LEN (5120: prompt 4096 + completion 1024, the paper's), VLLM_SERVER_TIMEOUT (seconds
#   to wait for /health, 900), VLLM_SERVER_LOG (OUTPUT_DIR/vllm_server.log),
#   VLLM_SERVER_CMD (a command line run instead of `trl vllm-serve`, e.g. a server of your own; it gets VLLM_HOST,
#   VLLM_PORT and VLLM_MODEL in its environment). The server is stopped when the script ends, fails or is interrupted.
#   Its weight sync (NCCL) needs CUDA GPUs.
# Launch: NPROC_PER_NODE (default: training GPUs, 1 without), NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (12345).
# DEEPSPEED_CONFIG: zero3 (default with GPUs, the paper's), zero2, zero3_offload or a JSON path; empty = none
# (default without GPUs). REPORT_TO (the recipe's: none; the paper used wandb), RUN_NAME, PYTHON.
# PREFLIGHT_IMAGES: decode (default) or exist. DEBUG_MODE (true, as the paper's script sets it) appends every
# rollout with its reward to LOG_PATH (OUTPUT_DIR/debug_log_grpo.txt).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m unifer.train.launch grpo "$@"
