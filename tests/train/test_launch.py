"""unifer.train.launch (+ preflight's cache, vllm_server, processes): the launch logic the shell scripts used to
hold, tested as functions. The scripts end to end: test_sft.py, test_grpo.py, test_reliability.py."""
from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from unifer.errors import UniferError
from unifer.train import launch, preflight, vllm_server
from unifer.train.processes import Stopped, StopSignals, stop_group

REPO = Path(__file__).resolve().parents[2]


def fake_nvidia_smi(d: Path, n: int) -> dict:
    d.mkdir(exist_ok=True)
    smi = d / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + "".join(f"echo 'GPU {i}: NVIDIA H100 (UUID: GPU-{i})'\n" for i in range(n))
                   + "echo 'MIG 1g.10gb Device 0: (UUID: MIG-0)'\n")
    smi.chmod(0o755)
    return {"PATH": f"{d}:/usr/bin:/bin"}


def test_visible_gpus_from_cuda_visible_devices_else_nvidia_smi(tmp_path):
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": "3, 5,7", "PATH": ""}) == ["3", "5", "7"]
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": "", "PATH": ""}) == []
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1", "PATH": ""}) == []
    assert launch.visible_gpus(fake_nvidia_smi(tmp_path / "bin", 2)) == ["0", "1"]  # MIG lines are not GPUs
    assert launch.visible_gpus({"PATH": str(tmp_path / "empty")}) == []


def test_node_settings_are_checked_with_one_line_each():
    ok = launch.node_settings({"NPROC_PER_NODE": "2", "NNODES": "2", "NODE_RANK": "1", "MASTER_PORT": "23456"}, 4,
                              12345)
    assert (ok.nproc, ok.nnodes, ok.node_rank, ok.master_addr, ok.master_port) == (2, 2, 1, "127.0.0.1", 23456)
    assert launch.node_settings({}, 0, 12345).nproc == 1 and launch.node_settings({}, 3, 12345).nproc == 3
    # several nodes keep the recipe's port (they must agree); one node takes it only when free
    assert launch.node_settings({"NNODES": "2"}, 0, 12345).master_port == 12345
    for env, message in [({"NPROC_PER_NODE": "0"}, "NPROC_PER_NODE must be a positive integer, got '0'"),
                         ({"NPROC_PER_NODE": "two"}, "NPROC_PER_NODE must be a positive integer, got 'two'"),
                         ({"NNODES": "0"}, "NNODES must be a positive integer, got '0'"),
                         ({"NNODES": "2", "NODE_RANK": "2"}, "NODE_RANK must be in 0..1, got '2'"),
                         ({"MASTER_PORT": "http"}, "MASTER_PORT must be a port number, got 'http'"),
                         ({"NPROC_PER_NODE": "3"}, "NPROC_PER_NODE=3 but only 2 GPU(s) are visible on this node")]:
        with pytest.raises(UniferError) as e:
            launch.node_settings(env, 2, 12345)
        assert str(e.value) == message


def test_a_busy_master_port_falls_back_to_a_free_one():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        port = launch.node_settings({}, 0, taken).master_port
    assert port != taken and 0 < port < 65536


def test_deepspeed_config_names_and_paths(tmp_path):
    assert launch.deepspeed_config("") is None
    for name in launch.DEEPSPEED_NAMES:
        assert launch.deepspeed_config(name) == REPO / "train_unifer" / "configs" / f"{name}.json"
    (tmp_path / "mine.json").write_text("{}")
    assert launch.deepspeed_config("mine.json", cwd=str(tmp_path)) == tmp_path / "mine.json"
    with pytest.raises(UniferError, match=r"DeepSpeed config not found: .*/zero4"):
        launch.deepspeed_config("zero4", cwd=str(tmp_path))


@pytest.fixture
def inputs(tmp_path, tiny_model):
    (tmp_path / "images").mkdir()
    data = tmp_path / "rlvr.json"
    data.write_text("[]")
    return {"MODEL_PATH": str(tiny_model), "DATA_PATH": str(data), "IMAGE_ROOT": str(tmp_path / "images"),
            "OUTPUT_DIR": "out dir", "PATH": "/usr/bin:/bin"}


def test_plan_sft_on_gpus_uses_the_recipes_deepspeed_and_port(inputs, tmp_path):
    p = launch.plan("sft", ["--learning_rate", "1e-5"], {**inputs, "CUDA_VISIBLE_DEVICES": "0,1"}, cwd=str(tmp_path))
    assert p.output_dir == tmp_path / "out dir" and p.log == tmp_path / "out dir" / "train_sft.log"
    assert p.nodes.nproc == 2 and p.nodes.gpus == 2
    cmd = p.torchrun("py")
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"] and cmd[cmd.index("-m", 3) + 1] == "unifer.train.sft"
    args = p.trainer_args
    assert args[args.index("--deepspeed") + 1] == str(REPO / "train_unifer/configs/zero2.json")
    assert args[-2:] == ["--learning_rate", "1e-5"]  # the user's flags come last: they win
    assert "--report_to" not in args and "--bf16" not in args  # the recipe holds them, not the launcher
    no_gpu = launch.plan("sft", [], {**inputs, "CUDA_VISIBLE_DEVICES": "", "DEEPSPEED_CONFIG": "zero3"})
    assert "zero3.json" in no_gpu.trainer_args[no_gpu.trainer_args.index("--deepspeed") + 1]
    assert "--deepspeed" not in launch.plan("sft", [], {**inputs, "CUDA_VISIBLE_DEVICES": "0",
                                                         "DEEPSPEED_CONFIG": ""}).trainer_args
    multi = launch.plan("sft", [], {**inputs, "NNODES": "2", "NODE_RANK": "1"})
    assert multi.log.name == "train_sft.node1.log"


def test_plan_grpo_server_mode_splits_the_gpus_and_builds_the_server(inputs, tmp_path, capsys):
    p = launch.plan("grpo", [], {**inputs, "CUDA_VISIBLE_DEVICES": "3,5,7", "VLLM_PORT": "8123",
                                 "VLLM_MAX_MODEL_LEN": "2048"}, cwd=str(tmp_path))
    assert "rollouts: VLLM_MODE=server (3 GPU(s) visible; vLLM on GPU 7, training on GPU(s) 3,5)" \
        in capsys.readouterr().err
    assert p.env["CUDA_VISIBLE_DEVICES"] == "3,5" and p.nodes.nproc == 2
    assert p.env["DEBUG_MODE"] == "true" and p.env["LOG_PATH"] == str(tmp_path / "out dir" / "debug_log_grpo.txt")
    assert p.trainer_args[p.trainer_args.index("--vllm_mode") + 1] == "server"
    assert p.trainer_args[p.trainer_args.index("--vllm_server_port") + 1] == "8123"
    s = p.server
    assert s.env["CUDA_VISIBLE_DEVICES"] == "7" and s.url == "http://127.0.0.1:8123"
    assert s.command[s.command.index("--max_model_len") + 1] == "2048"  # the variable over the recipe's 5120
    assert s.command[s.command.index("--gpu_memory_utilization") + 1] == "0.8"
    assert launch.plan("grpo", [], {**inputs, "CUDA_VISIBLE_DEVICES": "3,5,7", "NNODES": "2",
                                    "NODE_RANK": "1"}).server is None  # node 0 hosts it
    with pytest.raises(UniferError, match="VLLM_MODE=server needs 2\\+ GPUs"):
        launch.plan("grpo", [], {**inputs, "CUDA_VISIBLE_DEVICES": "0", "VLLM_MODE": "server"})
    with pytest.raises(UniferError, match="VLLM_SERVER_TIMEOUT must be a number of seconds, got 'soon'"):
        launch.plan("grpo", [], {**inputs, "VLLM_MODE": "server", "VLLM_SERVER_TIMEOUT": "soon"})


def test_preflight_cache_hands_the_checked_records_to_the_ranks(tmp_path, tiny_model, monkeypatch):
    from PIL import Image

    (tmp_path / "faces").mkdir()
    records = []
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "faces" / f"{i}.png")
        records.append({"image_path": f"/faces/{i}.png", "problem": f"p{i}", "solution": "<answer>x</answer>"})
    data = tmp_path / "rlvr.json"
    data.write_text(json.dumps(records))
    checked = preflight.preflight("rlvr", tiny_model, data, tmp_path, "decode", progress=False)
    cache = preflight.write_cache(tmp_path / "cache", checked, "rlvr", data, tmp_path)
    env = {preflight.PREFLIGHT_CACHE_ENV: str(cache)}
    ds = preflight.read_cache("rlvr", data, tmp_path, env)
    assert ds["problem"] == ["p0", "p1", "p2"] and ds[preflight.RECORD_INDEX] == [0, 1, 2]
    assert preflight.read_cache("cot", data, tmp_path, env) is None  # another kind
    assert preflight.read_cache("rlvr", data, tmp_path / "faces", env) is None  # another image root
    monkeypatch.setenv(preflight.PREFLIGHT_CACHE_ENV, str(cache))

    def read_again(*a, **k):
        raise AssertionError("the data file was read again")

    monkeypatch.setattr("unifer.data.records.load_records", read_again)
    assert preflight.training_records(tiny_model, data, "rlvr", tmp_path)["solution"][0] == "<answer>x</answer>"
    data.write_text(json.dumps(records[:2]))  # edited since the pre-flight: read (and checked) afresh
    with pytest.raises(AssertionError, match="read again"):
        preflight.training_records(tiny_model, data, "rlvr", tmp_path)


# --------------------------------------------------------------------------------------------- processes
def test_torchrun_output_is_teed_and_a_signal_stops_its_whole_group(tmp_path):
    log = tmp_path / "logs" / "run.log"
    rc = launch.run_torchrun([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"],
                             log, dict(os.environ), "# header\n")
    assert rc == 0 and log.read_text().splitlines() == ["# header", "out", "err"]

    pids = tmp_path / "pids"
    child = (f"import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; "
             f"time.sleep(600)']); open({str(pids)!r}, 'w').write(str(c.pid)); time.sleep(600)")

    def interrupt_when_started():
        deadline = time.time() + 60
        while not pids.exists() and time.time() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    timer = threading.Thread(target=interrupt_when_started)
    with StopSignals():
        timer.start()
        with pytest.raises(Stopped) as stopped:
            launch.run_torchrun([sys.executable, "-c", child], tmp_path / "b.log", dict(os.environ), "")
    timer.join()
    assert stopped.value.status == 143
    grandchild = int(pids.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{grandchild}").exists() or \
        Path(f"/proc/{grandchild}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_stop_group_kills_what_ignores_sigterm():
    proc = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                             "signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"],
                            stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout.readline().strip() == b"ready"
    t0 = time.time()
    stop_group(proc, grace_s=1)
    assert proc.returncode == -signal.SIGKILL and time.time() - t0 < 10


# --------------------------------------------------------------------------------- the server's caches
class StandIn(http.server.BaseHTTPRequestHandler):
    """A stand-in vLLM server on loopback (a real one needs CUDA for the weight push): answers TRL's client and
    records every request."""
    known = {"/health": {}, "/v1/models": {"data": [{"id": "m"}]}, "/reset_prefix_cache": {"success": True},
             "/reset_encoder_cache": {}, "/reset_mm_cache": {}}
    requests: list[str] = []

    def do_GET(self):
        path = self.path.split("?")[0]
        type(self).requests.append(f"{self.command} {path}")
        body = json.dumps(self.known.get(path, {})).encode()
        self.send_response(200 if path in self.known else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def standin():
    StandIn.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_after_a_weight_push_the_server_also_drops_its_vision_caches(standin):
    from types import SimpleNamespace

    from trl.generation.vllm_client import VLLMClient

    client = VLLMClient(base_url=standin)
    generation = SimpleNamespace(vllm_client=client, sync_weights=client.reset_prefix_cache)  # TRL's part
    vllm_server.keep_server_vllm_in_sync(generation, is_main_process=True)
    StandIn.requests.clear()
    generation.sync_weights()
    assert StandIn.requests == ["POST /reset_prefix_cache", "POST /reset_encoder_cache", "POST /reset_mm_cache"]

    StandIn.requests.clear()
    other_rank = SimpleNamespace(vllm_client=None, sync_weights=lambda: None)
    vllm_server.keep_server_vllm_in_sync(other_rank, is_main_process=False)
    other_rank.sync_weights()
    assert StandIn.requests == []  # only the main process talks to the server

    StandIn.known = {k: v for k, v in StandIn.known.items() if k != "/reset_encoder_cache"}
    try:
        with pytest.raises(UniferError, match="refused POST /reset_encoder_cache \\(404\\).*old weights"):
            vllm_server.reset_vision_caches(client.session, standin)
    finally:
        StandIn.known = {**StandIn.known, "/reset_encoder_cache": {}}


def test_the_real_server_has_the_reset_endpoints():
    """vLLM 0.32's development routes (on with VLLM_SERVER_DEV_MODE=1, which `trl vllm-serve` sets)."""
    pytest.importorskip("vllm")
    from vllm.entrypoints.serve.dev.cache.api_router import router

    paths = {route.path for route in router.routes}
    assert set(vllm_server.RESET_ENDPOINTS) <= paths


def test_torchrun_does_not_outlive_a_killed_launcher(tmp_path):
    """SIGKILL (a test timeout, the OOM killer) cannot be forwarded; the child asked to die with its parent."""
    pid_file = tmp_path / "pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    code = (f"import os, sys; from pathlib import Path; from unifer.train.launch import run_torchrun; "
            f"run_torchrun([sys.executable, '-c', {child!r}], Path({str(tmp_path / 'l.log')!r}), dict(os.environ), '')")
    launcher = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    deadline = time.time() + 120
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    child_pid = int(pid_file.read_text())
    launcher.kill()
    launcher.wait()
    deadline = time.time() + 30
    while Path(f"/proc/{child_pid}").exists() and time.time() < deadline:
        if Path(f"/proc/{child_pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.2)
    alive = Path(f"/proc/{child_pid}").exists() and \
        Path(f"/proc/{child_pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    if alive:
        os.kill(child_pid, signal.SIGKILL)
    assert not alive
