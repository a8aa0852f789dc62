#!/usr/bin/env bash
# GRPO (RLVR) of the SFT model on UniFER-RLVR-360K with vLLM rollouts: the paper's run, from any directory.
#
#   bash train_unifer/src/scripts/run_grpo_vllm.sh [extra GRPOConfig / ModelConfig / script flags, which override]
#
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
# (default without GPUs). REPORT_TO: none (default; the paper used wandb), RUN_NAME, PYTHON.
# DEBUG_MODE (true, as the paper's script sets it) appends every rollout with its reward to LOG_PATH
# (OUTPUT_DIR/debug_log_grpo.txt).
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

unifer_path MODEL_PATH "model/Qwen2.5-VL-7B-FER-COT-SFT-230K"
unifer_path DATA_PATH "data/UniFER_RLVR_360K.json"
unifer_path IMAGE_ROOT "/dataset/"
unifer_path OUTPUT_DIR "model/Qwen2.5-VL-7B-FER-GRPO"
RUN_NAME="${RUN_NAME:-Qwen2.5-VL-7B-FER-GRPO-VLLM}"
REPORT_TO="${REPORT_TO:-none}"
export DEBUG_MODE="${DEBUG_MODE:-true}"
unifer_path LOG_PATH "$OUTPUT_DIR/debug_log_grpo.txt"

gpus="$(unifer_visible_gpus)"
if [[ -z "${VLLM_MODE:-}" ]]; then
    if (( gpus >= 2 )); then VLLM_MODE=server; elif (( gpus == 1 )); then VLLM_MODE=colocate; else VLLM_MODE=none; fi
fi
case "$VLLM_MODE" in
    server | colocate | none) ;;
    *) unifer_die "VLLM_MODE must be server, colocate or none, got '$VLLM_MODE'" ;;
esac

# Server mode: the last visible GPU serves vLLM, the others train (node 0 only hosts the server).
if [[ "$VLLM_MODE" == server ]] && (( gpus > 0 )); then
    (( gpus >= 2 )) || unifer_die "VLLM_MODE=server needs 2+ GPUs (one serves vLLM); use VLLM_MODE=colocate"
    if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
        IFS=',' read -r -a devices <<< "${CUDA_VISIBLE_DEVICES// /}"
    else
        mapfile -t devices < <(seq 0 $((gpus - 1)))
    fi
    VLLM_DEVICE="${devices[-1]}"
    TRAIN_DEVICES="$(IFS=,; echo "${devices[*]:0:${#devices[@]}-1}")"
    export CUDA_VISIBLE_DEVICES="$TRAIN_DEVICES"  # unifer_setup_launch now counts training GPUs only
fi
echo "rollouts: VLLM_MODE=$VLLM_MODE ($gpus GPU(s) visible${VLLM_DEVICE:+; vLLM on GPU $VLLM_DEVICE, training on GPU(s) $TRAIN_DEVICES})" >&2

unifer_setup_launch 12345
if (( UNIFER_VISIBLE_GPUS > 0 )); then
    DEEPSPEED_CONFIG="$(unifer_deepspeed_config "${DEEPSPEED_CONFIG-zero3}")"
else
    DEEPSPEED_CONFIG="$(unifer_deepspeed_config "${DEEPSPEED_CONFIG-}")"
fi

unifer_require_dir "$MODEL_PATH" "model (MODEL_PATH)"
unifer_require_file "$DATA_PATH" "RLVR training data (DATA_PATH)"
unifer_require_dir "$IMAGE_ROOT" "image root (IMAGE_ROOT)"
unifer_preflight rlvr "$MODEL_PATH" "$DATA_PATH" "$IMAGE_ROOT"
mkdir -p "$OUTPUT_DIR"

args=(
    --output_dir "$OUTPUT_DIR"
    --model_name_or_path "$MODEL_PATH"
    --dataset_name "$DATA_PATH"
    --image_root "$IMAGE_ROOT"
    --max_prompt_length 4096
    --max_completion_length 1024
    --per_device_train_batch_size 8  # COMPLETIONS: the paper's 1 prompt x 8 generations
    --gradient_accumulation_steps 4
    --learning_rate 1e-6
    --lr_scheduler_type cosine
    --weight_decay 0.01
    --logging_steps 2
    --bf16 true
    --gradient_checkpointing true
    --attn_implementation flash_attention_2
    --num_train_epochs 1
    --run_name "$RUN_NAME"
    --save_steps 1000
    --save_total_limit 3
    --save_only_model true
    --report_to "$REPORT_TO"
    --loss_type grpo
    --beta 0.04
    --min_pixels 3136
    --max_pixels 501760
    --max_grad_norm 5
    --temperature 1.0
    --num_generations 8
)
if [[ -n "$DEEPSPEED_CONFIG" ]]; then
    args+=(--deepspeed "$DEEPSPEED_CONFIG")
fi

server_pid=""
stop_server() {
    [[ -n "$server_pid" ]] || return 0
    local pid="$server_pid"
    server_pid=""
    # setsid made the server a process-group leader: the group holds vLLM's engine workers too.
    kill -TERM -- "-$pid" 2> /dev/null || kill -TERM "$pid" 2> /dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.2
    done
    kill -KILL -- "-$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
    echo "vLLM server stopped (pid $pid)" >&2
}

server_healthy() {
    "$PYTHON" -c 'import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)' "http://$VLLM_HOST:$VLLM_PORT/health"
}

start_server() {
    VLLM_SERVER_LOG="${VLLM_SERVER_LOG:-$OUTPUT_DIR/vllm_server.log}"
    local timeout="${VLLM_SERVER_TIMEOUT:-900}" cmd
    unifer_is_count "$timeout" || unifer_die "VLLM_SERVER_TIMEOUT must be a number of seconds, got '$timeout'"
    if [[ -n "${VLLM_SERVER_CMD:-}" ]]; then
        read -r -a cmd <<< "$VLLM_SERVER_CMD"
    else
        cmd=("$PYTHON" -m trl.scripts.vllm_serve --model "$MODEL_PATH" --host "$VLLM_HOST" --port "$VLLM_PORT"
             --gpu_memory_utilization "${VLLM_GPU_MEMORY_UTILIZATION:-0.8}" --dtype bfloat16
             --max_model_len "${VLLM_MAX_MODEL_LEN:-5120}" --enable_prefix_caching true --enforce_eager true)
    fi
    echo "starting vLLM server on ${VLLM_DEVICE:+GPU $VLLM_DEVICE, }$VLLM_HOST:$VLLM_PORT (log: $VLLM_SERVER_LOG)" >&2
    CUDA_VISIBLE_DEVICES="${VLLM_DEVICE:-${CUDA_VISIBLE_DEVICES:-}}" VLLM_HOST="$VLLM_HOST" VLLM_PORT="$VLLM_PORT" \
        VLLM_MODEL="$MODEL_PATH" setsid "${cmd[@]}" >> "$VLLM_SERVER_LOG" 2>&1 < /dev/null &
    server_pid=$!
    local waited=0
    until server_healthy; do
        if ! kill -0 "$server_pid" 2> /dev/null; then
            wait "$server_pid" 2> /dev/null && status=0 || status=$?
            stop_server  # its workers may outlive it
            tail -n 20 "$VLLM_SERVER_LOG" >&2 || true
            unifer_die "the vLLM server exited (status $status) before it was healthy; see $VLLM_SERVER_LOG"
        fi
        if (( waited >= timeout )); then
            tail -n 20 "$VLLM_SERVER_LOG" >&2 || true
            unifer_die "the vLLM server was not healthy at http://$VLLM_HOST:$VLLM_PORT/health after ${timeout} s" \
                "(VLLM_SERVER_TIMEOUT); see $VLLM_SERVER_LOG"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "vLLM server healthy after ~${waited} s (pid $server_pid)" >&2
}

case "$VLLM_MODE" in
    none)
        args+=(--use_vllm false)
        ;;
    colocate)
        args+=(--use_vllm true --vllm_mode colocate)
        ;;
    server)
        VLLM_HOST="${VLLM_HOST:-127.0.0.1}"
        VLLM_PORT="${VLLM_PORT:-8000}"
        unifer_is_count "$VLLM_PORT" || unifer_die "VLLM_PORT must be a port number, got '$VLLM_PORT'"
        args+=(--use_vllm true --vllm_mode server --vllm_server_host "$VLLM_HOST" --vllm_server_port "$VLLM_PORT")
        trap 'stop_server' EXIT
        trap 'stop_server; exit 130' INT
        trap 'stop_server; exit 143' TERM
        if (( NODE_RANK == 0 )); then
            start_server
        fi
        ;;
esac

unifer_launch "$(unifer_log_file "$OUTPUT_DIR" train_grpo)" unifer.train.grpo "${args[@]}" "$@"
