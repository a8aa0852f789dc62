"""Launching the paper's runs: ``run_sft_fer.sh`` / ``run_grpo_vllm.sh`` → ``python -m unifer.train.launch sft|grpo``
(also ``unifer train launch sft|grpo``) → torchrun → ``unifer.train.sft`` / ``unifer.train.grpo`` on every rank.

Settings are environment variables, the names the paper's scripts and torchrun use (the scripts document them);
everything after the stage goes to the trainer and overrides the recipe (``train_unifer/recipes``):

    MODEL_PATH DATA_PATH IMAGE_ROOT OUTPUT_DIR   paths: a value is relative to the current directory, a default to
                                                 the repository
    NPROC_PER_NODE NNODES NODE_RANK MASTER_ADDR MASTER_PORT   torchrun's; NPROC_PER_NODE defaults to the visible
                                                 GPUs (CUDA_VISIBLE_DEVICES, else ``nvidia-smi -L``), 1 without
    DEEPSPEED_CONFIG   zero2 | zero3 | zero3_offload | a JSON path; empty: none (the default without GPUs)
    PREFLIGHT_IMAGES   decode (every image decoded before torchrun) | exist (only stat each image)
    RUN_NAME REPORT_TO   the recipe's unless set
    GRPO: VLLM_MODE, DEBUG_MODE, LOG_PATH and the server's settings (``unifer.train.vllm_server``)

What it does, in order: check every setting (one ``error:`` line, exit 2, before anything starts), check the
model, read and check the data file and every image once (``unifer.train.preflight``; the checked records reach
the ranks through a cache, not by reading the file again), start the vLLM server in GRPO server mode and wait for
its health, then torchrun in its own process group with its output teed into OUTPUT_DIR/train_<stage>.log.
Ctrl-C or SIGTERM stops torchrun's whole process group, then the server (its process group holds vLLM's workers).
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from unifer.data.records import PAPER_IMAGE_ROOT
from unifer.data.sets import REPO_ROOT
from unifer.errors import UniferError
from unifer.train.processes import Stopped, StopSignals, die_with_parent, stop_group, tee
from unifer.train.recipes import GRPO_RECIPE, SFT_RECIPE, launch_settings

CONFIGS_DIR = REPO_ROOT / "train_unifer" / "configs"
DEEPSPEED_NAMES = ("zero2", "zero3", "zero3_offload")


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    kind: str  # record kind of its data file
    data_what: str
    model: str
    data: str
    output: str
    run_log: str
    recipe: Path


STAGES = {
    "sft": Stage("sft", "unifer.train.sft", "cot", "CoT training data", "model/Qwen2.5-VL-7B-Instruct",
                 "data/UniFER_CoT_230K.json", "model/Qwen2.5-VL-7B-FER-COT-SFT-230K", "train_sft", SFT_RECIPE),
    "grpo": Stage("grpo", "unifer.train.grpo", "rlvr", "RLVR training data", "model/Qwen2.5-VL-7B-FER-COT-SFT-230K",
                  "data/UniFER_RLVR_360K.json", "model/Qwen2.5-VL-7B-FER-GRPO", "train_grpo", GRPO_RECIPE),
}


# ------------------------------------------------------------------------------------------------ settings
def env_value(environ, name: str) -> str:
    """The variable's value, "" when unset (an empty value means "the default", as in the shell scripts)."""
    return environ.get(name, "") or ""


def setting_path(value: str, default: str, cwd: str | None = None) -> Path:
    """A launcher setting's path: the user's value relative to the current directory (``cwd``), else ``default``
    relative to the repository. (``unifer.data.sets.resolve_path`` resolves a user path alone.)"""
    if not value:
        return Path(default) if os.path.isabs(default) else REPO_ROOT / default
    return Path(value) if os.path.isabs(value) else Path(cwd or os.getcwd()) / value


def is_count(value: str) -> bool:
    return value.isdigit() and not value.startswith("0")


def cuda_device_list(environ) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list (None when unset; [] when empty or starting with -1)."""
    if "CUDA_VISIBLE_DEVICES" not in environ:
        return None
    devices = environ["CUDA_VISIBLE_DEVICES"].replace(" ", "")
    if not devices or devices.startswith("-1"):
        return []
    return devices.split(",")


def visible_gpus(environ=os.environ) -> list[str]:
    """The GPU ids this node sees: CUDA_VISIBLE_DEVICES, else one per ``GPU n:`` line of ``nvidia-smi -L``."""
    listed = cuda_device_list(environ)
    if listed is not None:
        return listed
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


def free_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when it is free here, else any free port (two runs on one machine must not collide)."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise UniferError("no free TCP port on 127.0.0.1")


@dataclass
class Nodes:
    nproc: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    gpus: int  # visible to training on this node


def node_settings(environ, gpus: int, default_port: int) -> Nodes:
    """NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, checked (one line naming the variable)."""
    nproc = env_value(environ, "NPROC_PER_NODE") or str(max(gpus, 1))
    nnodes = env_value(environ, "NNODES") or "1"
    rank = env_value(environ, "NODE_RANK") or "0"
    port = env_value(environ, "MASTER_PORT")
    if not is_count(nproc):
        raise UniferError(f"NPROC_PER_NODE must be a positive integer, got '{nproc}'")
    if not is_count(nnodes):
        raise UniferError(f"NNODES must be a positive integer, got '{nnodes}'")
    if not (rank.isdigit() and int(rank) < int(nnodes)):
        raise UniferError(f"NODE_RANK must be in 0..{int(nnodes) - 1}, got '{rank}'")
    if port and not (is_count(port) and int(port) < 65536):
        raise UniferError(f"MASTER_PORT must be a port number, got '{port}'")
    if not port:  # several nodes must agree on the port: only one node may pick a free one
        port = str(free_port(default_port) if int(nnodes) == 1 else default_port)
    if gpus > 0 and int(nproc) > gpus:
        raise UniferError(f"NPROC_PER_NODE={nproc} but only {gpus} GPU(s) are visible on this node")
    return Nodes(int(nproc), int(nnodes), int(rank), env_value(environ, "MASTER_ADDR") or "127.0.0.1", int(port),
                 gpus)


def deepspeed_config(value: str, cwd: str | None = None) -> Path | None:
    """A config name (zero2, zero3, zero3_offload) or a JSON path; "" means none."""
    if not value:
        return None
    path = CONFIGS_DIR / f"{value}.json" if value in DEEPSPEED_NAMES else setting_path(value, "", cwd)
    if not path.is_file():
        raise UniferError(f"DeepSpeed config not found: {path}")
    return path


def log_file(output_dir: Path, name: str, nodes: Nodes) -> Path:
    return output_dir / (f"{name}.node{nodes.node_rank}.log" if nodes.nnodes > 1 else f"{name}.log")


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UniferError(f"{what} not found (a directory): {path}")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UniferError(f"{what} not found: {path}")
    return path


@dataclass
class Plan:
    """One node's run: what torchrun starts, with which environment, logging where."""
    stage: Stage
    model: Path
    data: Path
    image_root: Path
    output_dir: Path
    nodes: Nodes
    preflight_images: str
    trainer_args: list[str]
    env: dict = field(default_factory=dict)
    server: object | None = None  # a unifer.train.vllm_server.ServerPlan in GRPO server mode, on node 0

    @property
    def log(self) -> Path:
        return log_file(self.output_dir, self.stage.run_log, self.nodes)

    def torchrun(self, python: str = sys.executable) -> list[str]:
        n = self.nodes
        return [python, "-m", "torch.distributed.run", "--nproc_per_node", str(n.nproc), "--nnodes", str(n.nnodes),
                "--node_rank", str(n.node_rank), "--master_addr", n.master_addr, "--master_port",
                str(n.master_port), "-m", self.stage.module, *self.trainer_args]


def plan(stage_name: str, extra_args: list[str], environ=os.environ, cwd: str | None = None) -> Plan:
    """Every setting read and checked, nothing started (the order of the checks is the scripts')."""
    from unifer.train import vllm_server

    stage = STAGES[stage_name]
    recipe = launch_settings(stage.recipe)
    env = dict(environ)
    path = lambda name, default: setting_path(env_value(environ, name), default, cwd)  # noqa: E731
    model, data = path("MODEL_PATH", stage.model), path("DATA_PATH", stage.data)
    image_root, output_dir = path("IMAGE_ROOT", PAPER_IMAGE_ROOT), path("OUTPUT_DIR", stage.output)
    images = env_value(environ, "PREFLIGHT_IMAGES") or "decode"
    if images not in ("decode", "exist"):
        raise UniferError(f"PREFLIGHT_IMAGES must be decode or exist, got '{images}'")
    gpus = visible_gpus(environ)
    rollout = vllm_server.rollout_plan(environ, gpus) if stage.name == "grpo" else None
    if rollout is not None:
        print(rollout.describe(len(gpus)), file=sys.stderr, flush=True)
        if rollout.train_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(rollout.train_devices)
            gpus = rollout.train_devices
    nodes = node_settings(environ, len(gpus), int(recipe.get("master_port", 29500)))
    default_ds = str(recipe.get("deepspeed") or "") if gpus else ""
    ds = deepspeed_config(environ["DEEPSPEED_CONFIG"] if "DEEPSPEED_CONFIG" in environ else default_ds, cwd)
    require_dir(model, "model (MODEL_PATH)")
    require_file(data, f"{stage.data_what} (DATA_PATH)")
    require_dir(image_root, "image root (IMAGE_ROOT)")

    args = ["--output_dir", str(output_dir), "--model_name_or_path", str(model), "--dataset_name", str(data),
            "--image_root", str(image_root)]
    for var, flag in (("RUN_NAME", "--run_name"), ("REPORT_TO", "--report_to")):
        if env_value(environ, var):
            args += [flag, env_value(environ, var)]
    if ds is not None:
        args += ["--deepspeed", str(ds)]
    server = None
    if rollout is not None:
        env["DEBUG_MODE"] = env_value(environ, "DEBUG_MODE") or "true"
        env["LOG_PATH"] = str(path("LOG_PATH", str(output_dir / "debug_log_grpo.txt")))
        args += rollout.trainer_flags()
        if rollout.mode == "server" and nodes.node_rank == 0:
            server = vllm_server.server_plan(environ, rollout, model, output_dir, recipe.get("vllm_server", {}))
    return Plan(stage, model, data, image_root, output_dir, nodes, images, [*args, *extra_args], env, server)


# ---------------------------------------------------------------------------------------------------- running
def run_torchrun(cmd: list[str], log: Path, env: dict, header: str) -> int:
    """``cmd`` in its own process group, its output (stdout + stderr) on our stdout and appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        sink.write(header.encode())
        sink.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
        pump = tee(proc.stdout, [sys.stdout.buffer, sink])
        try:
            rc = proc.wait()
        except Stopped:
            stop_group(proc)
            raise
        finally:
            pump.join(timeout=10)
    return rc


def execute(p: Plan) -> int:
    """Pre-flight, server, torchrun; the server is stopped and the cache removed whatever happens."""
    from unifer.train import preflight, vllm_server

    with StopSignals():
        server = None
        cache = None
        try:
            records = preflight.preflight(p.stage.kind, p.model, p.data, p.image_root, p.preflight_images)
            cache = Path(tempfile.mkdtemp(prefix="unifer-preflight-"))
            preflight.write_cache(cache, records, p.stage.kind, p.data, p.image_root)
            del records
            env = {**p.env, preflight.PREFLIGHT_CACHE_ENV: str(cache)}
            if p.stage.name == "grpo":
                p.output_dir.mkdir(parents=True, exist_ok=True)
            if p.server is not None:
                server = vllm_server.start(p.server)
            n = p.nodes
            header = (f"# {time.strftime('%F %T')}  node {n.node_rank}/{n.nnodes}, {n.nproc} process(es) per node, "
                      f"{n.gpus} GPU(s) visible\n# {shlex.join([sys.executable, '-m', p.stage.module, *p.trainer_args])}\n")
            return run_torchrun(p.torchrun(), p.log, env, header)
        except Stopped as s:
            return s.status
        finally:
            if server is not None:
                vllm_server.stop(server)
            if cache is not None:
                shutil.rmtree(cache, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=tuple(STAGES), help="sft (stage 1) or grpo (stage 2)")
    parser.add_argument("trainer_args", nargs=argparse.REMAINDER,
                        help="passed to the trainer; they override the recipe (e.g. --learning_rate 1e-5)")


def run(args: argparse.Namespace) -> int:
    return execute(plan(args.stage, list(args.trainer_args)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unifer.train.launch", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    from unifer.errors import run_cli

    sys.exit(run_cli(main))
