#!/usr/bin/env bash
# Cold-start SFT of Qwen2.5-VL on UniFER-CoT-230K: the paper's run, from any directory.
#
#   bash train_unifer/src/scripts/run_sft_fer.sh [extra SFTConfig / ModelConfig flags, which override the defaults]
#
# Paths (environment; defaults relative to the repository):
#   MODEL_PATH   model/Qwen2.5-VL-7B-Instruct          DATA_PATH   data/UniFER_CoT_230K.json
#   IMAGE_ROOT   /dataset/  (the paper's)              OUTPUT_DIR  model/Qwen2.5-VL-7B-FER-COT-SFT-230K
# Launch: NPROC_PER_NODE (default: visible GPUs, 1 without), NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (12349).
# DEEPSPEED_CONFIG: zero2 (default with GPUs, the paper's), zero3, zero3_offload or a JSON path; empty = none
# (default without GPUs). REPORT_TO: none (default), wandb, tensorboard. RUN_NAME. PYTHON.
# PREFLIGHT_IMAGES: decode (default: every image decoded before training) or exist (only checked to exist).
# Without CUDA the trainer itself switches to CPU, float32 and sdpa attention.
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

unifer_path MODEL_PATH "model/Qwen2.5-VL-7B-Instruct"
unifer_path DATA_PATH "data/UniFER_CoT_230K.json"
unifer_path IMAGE_ROOT "/dataset/"
unifer_path OUTPUT_DIR "model/Qwen2.5-VL-7B-FER-COT-SFT-230K"
RUN_NAME="${RUN_NAME:-Qwen2.5-VL-7B-FER-COT-SFT-230K}"
REPORT_TO="${REPORT_TO:-none}"

unifer_setup_launch 12349
if (( UNIFER_VISIBLE_GPUS > 0 )); then
    DEEPSPEED_CONFIG="$(unifer_deepspeed_config "${DEEPSPEED_CONFIG-zero2}")"
else
    DEEPSPEED_CONFIG="$(unifer_deepspeed_config "${DEEPSPEED_CONFIG-}")"
fi

unifer_require_dir "$MODEL_PATH" "model (MODEL_PATH)"
unifer_require_file "$DATA_PATH" "CoT training data (DATA_PATH)"
unifer_require_dir "$IMAGE_ROOT" "image root (IMAGE_ROOT)"
unifer_preflight cot "$MODEL_PATH" "$DATA_PATH" "$IMAGE_ROOT"

args=(
    --output_dir "$OUTPUT_DIR"
    --model_name_or_path "$MODEL_PATH"
    --dataset_name "$DATA_PATH"
    --image_root "$IMAGE_ROOT"
    --per_device_train_batch_size 1
    --gradient_accumulation_steps 4
    --lr_scheduler_type cosine
    --learning_rate 2e-5
    --logging_steps 20
    --bf16 true
    --report_to "$REPORT_TO"
    --gradient_checkpointing true
    --attn_implementation flash_attention_2
    --num_train_epochs 2
    --run_name "$RUN_NAME"
    --save_steps 20000
    --max_grad_norm 5
    --save_only_model true
)
if [[ -n "$DEEPSPEED_CONFIG" ]]; then
    args+=(--deepspeed "$DEEPSPEED_CONFIG")
fi

unifer_launch "$(unifer_log_file "$OUTPUT_DIR" train_sft)" unifer.train.sft "${args[@]}" "$@"
