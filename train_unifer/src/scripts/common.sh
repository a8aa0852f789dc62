# Shared by the training faces (run_sft_fer.sh, run_grpo_vllm.sh): source it, never run it.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#
# Gives:
#   UNIFER_ROOT                       the repository root, found from this file's location (works from any cwd)
#   PYTHON                            $PYTHON, else the repository's .venv, else python3 (exported PYTHONPATH
#                                     puts the repository first, so `-m unifer...` works without installing)
#   unifer_die MSG                    "error: MSG" on stderr, exit 2
#   unifer_path VAR DEFAULT           VAR := absolute path: the user's value (relative to the current directory)
#                                     or DEFAULT (relative to the repository root)
#   unifer_require_dir PATH WHAT      fail unless PATH is a directory
#   unifer_require_file PATH WHAT     fail unless PATH is a file
#   unifer_is_count VALUE             true when VALUE is a positive integer
#   unifer_visible_gpus               prints how many GPUs this node sees (CUDA_VISIBLE_DEVICES, else nvidia-smi)
#   unifer_setup_launch DEFAULT_PORT  NPROC_PER_NODE (default: visible GPUs, 1 without GPUs), NNODES (1),
#                                     NODE_RANK (0), MASTER_ADDR (127.0.0.1), MASTER_PORT; validated
#   unifer_deepspeed_config VALUE     prints the config path for a name (zero2, zero3, zero3_offload) or a path;
#                                     empty VALUE prints nothing
#   unifer_log_file OUTPUT_DIR NAME   prints OUTPUT_DIR/NAME.log (NAME.nodeN.log when NNODES > 1)
#   unifer_preflight KIND MODEL DATA IMAGE_ROOT
#                                     checks model, data file (KIND: cot | rlvr) and every image in one
#                                     light Python run (no torch), so bad input stops before torchrun starts;
#                                     PREFLIGHT_IMAGES: decode (default: every image decoded, in threads) or
#                                     exist (only stat each image: faster, e.g. when resuming a checked run)
#   unifer_launch LOG MODULE ARGS...  torchrun MODULE ARGS on this node, output teed (appended) into LOG
#
# Environment read by the launch: NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, PYTHON.

UNIFER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
export UNIFER_ROOT

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$UNIFER_ROOT/.venv/bin/python" ]]; then
        PYTHON="$UNIFER_ROOT/.venv/bin/python"
    else
        PYTHON="python3"
    fi
fi
export PYTHON
export PYTHONPATH="$UNIFER_ROOT${PYTHONPATH:+:$PYTHONPATH}"

unifer_die() {
    printf 'error: %s\n' "$*" >&2
    exit 2
}

# unifer_path VAR DEFAULT
unifer_path() {
    local var="$1" default="$2" value
    value="${!var:-}"
    if [[ -z "$value" ]]; then
        value="$default"
        [[ "$value" == /* ]] || value="$UNIFER_ROOT/$value"
    elif [[ "$value" != /* ]]; then
        value="$PWD/$value"
    fi
    printf -v "$var" '%s' "$value"
    export "${var?}"
}

unifer_require_dir() {
    [[ -d "$1" ]] || unifer_die "$2 not found (a directory): $1"
}

unifer_require_file() {
    [[ -f "$1" ]] || unifer_die "$2 not found: $1"
}

unifer_visible_gpus() {
    if [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
        local devices="${CUDA_VISIBLE_DEVICES// /}"
        if [[ -z "$devices" || "$devices" == -1* ]]; then
            echo 0
        else
            local -a list
            IFS=',' read -r -a list <<< "$devices"
            echo "${#list[@]}"
        fi
    elif command -v nvidia-smi > /dev/null 2>&1; then
        nvidia-smi -L 2> /dev/null | grep -c '^GPU ' || true
    else
        echo 0
    fi
}

unifer_is_count() {
    [[ "$1" =~ ^[1-9][0-9]*$ ]]
}

# unifer_setup_launch DEFAULT_PORT
unifer_setup_launch() {
    local gpus
    gpus="$(unifer_visible_gpus)"
    UNIFER_VISIBLE_GPUS="$gpus"
    if [[ -z "${NPROC_PER_NODE:-}" ]]; then
        if (( gpus > 0 )); then NPROC_PER_NODE="$gpus"; else NPROC_PER_NODE=1; fi
    fi
    NNODES="${NNODES:-1}"
    NODE_RANK="${NODE_RANK:-0}"
    MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
    if [[ -z "${MASTER_PORT:-}" ]]; then
        # One node: the paper's port when it is free, else any free port, so that two runs on one machine
        # (or a test suite) do not collide. Several nodes must agree on it: keep the default.
        MASTER_PORT="$1"
        if (( NNODES == 1 )); then
            MASTER_PORT="$("$PYTHON" - "$1" <<'PY'
import socket, sys
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
want = int(sys.argv[1])
if free(want):
    print(want)
else:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
PY
)"
        fi
    fi
    unifer_is_count "$NPROC_PER_NODE" || unifer_die "NPROC_PER_NODE must be a positive integer, got '$NPROC_PER_NODE'"
    unifer_is_count "$NNODES" || unifer_die "NNODES must be a positive integer, got '$NNODES'"
    [[ "$NODE_RANK" =~ ^[0-9]+$ ]] && (( NODE_RANK < NNODES )) \
        || unifer_die "NODE_RANK must be in 0..$((NNODES - 1)), got '$NODE_RANK'"
    unifer_is_count "$MASTER_PORT" || unifer_die "MASTER_PORT must be a port number, got '$MASTER_PORT'"
    if (( gpus > 0 && NPROC_PER_NODE > gpus )); then
        unifer_die "NPROC_PER_NODE=$NPROC_PER_NODE but only $gpus GPU(s) are visible on this node"
    fi
    export NPROC_PER_NODE NNODES NODE_RANK MASTER_ADDR MASTER_PORT UNIFER_VISIBLE_GPUS
}

# unifer_deepspeed_config VALUE
unifer_deepspeed_config() {
    local value="$1"
    case "$value" in
        "") return 0 ;;
        zero2 | zero3 | zero3_offload) value="$UNIFER_ROOT/train_unifer/configs/$value.json" ;;
        /*) ;;
        *) value="$PWD/$value" ;;
    esac
    unifer_require_file "$value" "DeepSpeed config"
    printf '%s\n' "$value"
}

# unifer_log_file OUTPUT_DIR NAME
unifer_log_file() {
    if (( ${NNODES:-1} > 1 )); then
        printf '%s/%s.node%s.log\n' "$1" "$2" "${NODE_RANK:-0}"
    else
        printf '%s/%s.log\n' "$1" "$2"
    fi
}

# unifer_preflight KIND MODEL DATA IMAGE_ROOT
unifer_preflight() {
    local images="${PREFLIGHT_IMAGES:-decode}"
    case "$images" in
        decode | exist) ;;
        *) unifer_die "PREFLIGHT_IMAGES must be decode or exist, got '$images'" ;;
    esac
    "$PYTHON" -m unifer.train.common --kind "$1" --model "$2" --data "$3" --image_root "$4" --images "$images"
}

# unifer_launch LOG MODULE ARGS...
unifer_launch() {
    local log="$1" module="$2"
    shift 2
    mkdir -p "$(dirname "$log")"
    {
        printf '# %s  node %s/%s, %s process(es) per node, %s GPU(s) visible\n' \
            "$(date '+%F %T')" "$NODE_RANK" "$NNODES" "$NPROC_PER_NODE" "${UNIFER_VISIBLE_GPUS:-?}"
        printf '#'
        printf ' %q' "$PYTHON" -m "$module" "$@"
        printf '\n'
    } >> "$log"
    "$PYTHON" -m torch.distributed.run \
        --nproc_per_node "$NPROC_PER_NODE" \
        --nnodes "$NNODES" \
        --node_rank "$NODE_RANK" \
        --master_addr "$MASTER_ADDR" \
        --master_port "$MASTER_PORT" \
        -m "$module" "$@" > >(tee -a "$log") 2>&1 &
    # torchrun runs in the background so that this shell can pass Ctrl-C and SIGTERM on to it (a plain
    # foreground pipeline leaves torchrun and its workers running when only the script is sent SIGTERM).
    UNIFER_CHILD=$!
    trap 'unifer_forward_signal 130' INT
    trap 'unifer_forward_signal 143' TERM
    local rc=0
    wait "$UNIFER_CHILD" || rc=$?
    trap - INT TERM
    return "$rc"
}

# unifer_forward_signal EXIT_STATUS: stop torchrun (it stops its workers), wait for it, exit.
unifer_forward_signal() {
    kill -TERM "$UNIFER_CHILD" 2>/dev/null || true
    wait "$UNIFER_CHILD" 2>/dev/null || true
    exit "$1"
}
