"""GRPO's rollouts: which vLLM topology (``VLLM_MODE``), and in server mode the server's whole life: start
(``trl vllm-serve`` or ``VLLM_SERVER_CMD``), wait for ``/health``, stop (its process group, vLLM's engine workers
included), and the cache resets a weight push needs.

    VLLM_MODE   server (default with 2+ GPUs: the last visible GPU serves vLLM, the others train, as the paper's
                vLLM had its own GPU) | colocate (default with one GPU) | none (default without CUDA)
    VLLM_HOST (127.0.0.1)  VLLM_PORT (8000)  VLLM_SERVER_TIMEOUT (seconds to wait for /health, 900)
    VLLM_SERVER_LOG (OUTPUT_DIR/vllm_server.log)  VLLM_GPU_MEMORY_UTILIZATION  VLLM_MAX_MODEL_LEN (the recipe's)
    VLLM_SERVER_CMD   a command line run instead of ``trl vllm-serve``; it gets VLLM_HOST, VLLM_PORT, VLLM_MODEL

After each weight push TRL resets only the server's prefix cache; vLLM also keeps the vision encoder's outputs
(and the processed images) by image, so a recurring image would reuse features computed under old weights.
``reset_vision_caches`` posts vLLM's ``/reset_encoder_cache`` and ``/reset_mm_cache`` (development endpoints,
which ``trl vllm-serve`` turns on), as the colocated path does in-process (``unifer.train.grpo_trainer``).
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from unifer.errors import UniferError
from unifer.train.processes import die_with_parent, stop_group

MODES = ("server", "colocate", "none")
RESET_ENDPOINTS = ("/reset_encoder_cache", "/reset_mm_cache")


def _env(environ, name: str, default: str = "") -> str:
    return environ.get(name, "") or default


@dataclass
class Rollouts:
    mode: str
    vllm_device: str | None = None
    train_devices: list[str] | None = None  # CUDA_VISIBLE_DEVICES for training, when server mode splits the GPUs
    host: str = "127.0.0.1"
    port: int = 8000

    def describe(self, gpus: int) -> str:
        where = (f"; vLLM on GPU {self.vllm_device}, training on GPU(s) {','.join(self.train_devices)}"
                 if self.vllm_device is not None else "")
        return f"rollouts: VLLM_MODE={self.mode} ({gpus} GPU(s) visible{where})"

    def trainer_flags(self) -> list[str]:
        if self.mode == "none":
            return ["--use_vllm", "false"]
        if self.mode == "colocate":
            return ["--use_vllm", "true", "--vllm_mode", "colocate"]
        return ["--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_host", self.host,
                "--vllm_server_port", str(self.port)]


def rollout_plan(environ, gpus: list[str]) -> Rollouts:
    """VLLM_MODE (default from the visible GPUs), checked; in server mode with GPUs, the last one serves."""
    mode = _env(environ, "VLLM_MODE") or ("server" if len(gpus) >= 2 else "colocate" if gpus else "none")
    if mode not in MODES:
        raise UniferError(f"VLLM_MODE must be server, colocate or none, got '{mode}'")
    plan = Rollouts(mode)
    if mode != "server":
        return plan
    if gpus:
        if len(gpus) < 2:
            raise UniferError("VLLM_MODE=server needs 2+ GPUs (one serves vLLM); use VLLM_MODE=colocate")
        plan.vllm_device, plan.train_devices = gpus[-1], list(gpus[:-1])
    plan.host = _env(environ, "VLLM_HOST", "127.0.0.1")
    port = _env(environ, "VLLM_PORT", "8000")
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise UniferError(f"VLLM_PORT must be a port number, got '{port}'")
    plan.port = int(port)
    return plan


@dataclass
class ServerPlan:
    command: list[str]
    env: dict
    log: Path
    timeout_s: int
    url: str
    where: str


def serve_command(model: Path, host: str, port: int, settings: dict, python: str = sys.executable) -> list[str]:
    """``trl vllm-serve`` with the recipe's ``launch.vllm_server`` settings (its flags, ``--name value``)."""
    cmd = [python, "-m", "trl.scripts.vllm_serve", "--model", str(model), "--host", host, "--port", str(port)]
    for key, value in settings.items():
        cmd += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return cmd


def server_plan(environ, rollouts: Rollouts, model: Path, output_dir: Path, recipe_settings: dict) -> ServerPlan:
    settings = dict(recipe_settings)
    if rollouts.vllm_device is None and settings.get("dtype") in ("bfloat16", "float16"):
        # no GPU: the policy trains in float32 (mixed precision is turned off), and so does its server
        settings["dtype"] = "float32"
    for var, key in (("VLLM_GPU_MEMORY_UTILIZATION", "gpu_memory_utilization"),
                     ("VLLM_MAX_MODEL_LEN", "max_model_len")):
        if _env(environ, var):
            settings[key] = _env(environ, var)
    timeout = _env(environ, "VLLM_SERVER_TIMEOUT", "900")
    if not (timeout.isdigit() and int(timeout) > 0):
        raise UniferError(f"VLLM_SERVER_TIMEOUT must be a number of seconds, got '{timeout}'")
    custom = _env(environ, "VLLM_SERVER_CMD")
    command = shlex.split(custom) if custom else serve_command(model, rollouts.host, rollouts.port, settings)
    log_value = _env(environ, "VLLM_SERVER_LOG")
    log = Path(log_value) if log_value else output_dir / "vllm_server.log"
    env = {**environ, "VLLM_HOST": rollouts.host, "VLLM_PORT": str(rollouts.port), "VLLM_MODEL": str(model)}
    if rollouts.vllm_device is not None:
        env["CUDA_VISIBLE_DEVICES"] = rollouts.vllm_device
    where = (f"GPU {rollouts.vllm_device}, " if rollouts.vllm_device is not None else "") + \
        f"{rollouts.host}:{rollouts.port}"
    return ServerPlan(command, env, log.absolute(), int(timeout), f"http://{rollouts.host}:{rollouts.port}", where)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


def log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Server:
    proc: subprocess.Popen
    plan: ServerPlan


def start(plan: ServerPlan, poll_s: float = 1.0) -> Server:
    """Start the server in its own session and wait for ``/health``; on failure stop it and raise UniferError
    (after printing its log's tail)."""
    print(f"starting vLLM server on {plan.where} (log: {plan.log})", file=sys.stderr, flush=True)
    plan.log.parent.mkdir(parents=True, exist_ok=True)
    with open(plan.log, "ab") as sink:
        proc = subprocess.Popen(plan.command, env=plan.env, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
    server = Server(proc, plan)
    t0 = time.monotonic()
    try:
        while not healthy(plan.url):
            if proc.poll() is not None:
                status = proc.returncode
                stop(server)  # its workers may outlive it
                print(log_tail(plan.log), file=sys.stderr, flush=True)
                raise UniferError(f"the vLLM server exited (status {status}) before it was healthy; see {plan.log}")
            if time.monotonic() - t0 >= plan.timeout_s:
                print(log_tail(plan.log), file=sys.stderr, flush=True)
                raise UniferError(f"the vLLM server was not healthy at {plan.url}/health after {plan.timeout_s} s "
                                  f"(VLLM_SERVER_TIMEOUT); see {plan.log}")
            time.sleep(poll_s)
    except BaseException:
        stop(server)
        raise
    print(f"vLLM server healthy after ~{time.monotonic() - t0:.0f} s (pid {proc.pid})", file=sys.stderr, flush=True)
    return server


def stop(server: Server, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's process group (vLLM's engine workers are in it), SIGKILL after ``grace_s``;
    says so once."""
    if getattr(server, "stopped", False):
        return
    server.stopped = True
    stop_group(server.proc, grace_s)
    print(f"vLLM server stopped (pid {server.proc.pid})", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- weight pushes
def reset_vision_caches(session, base_url: str) -> None:
    """Drop the server's cached vision-encoder outputs and processed images (after a weight push)."""
    for endpoint in RESET_ENDPOINTS:
        response = session.post(f"{base_url}{endpoint}", timeout=60)
        if response.status_code != 200:
            raise UniferError(
                f"the vLLM server at {base_url} refused POST {endpoint} ({response.status_code}): without it, "
                "images seen before a weight push reuse vision features of the old weights; serve with vLLM's "
                "development endpoints (VLLM_SERVER_DEV_MODE=1, which `trl vllm-serve` sets)")


def keep_server_vllm_in_sync(generation, is_main_process: bool) -> None:
    """After TRL's ``sync_weights`` (push + prefix-cache reset), the main process also resets the server's vision
    caches."""
    trl_sync = generation.sync_weights

    def sync_weights():
        trl_sync()
        if is_main_process:
            client = generation.vllm_client
            reset_vision_caches(client.session, client.base_url)

    generation.sync_weights = sync_weights
