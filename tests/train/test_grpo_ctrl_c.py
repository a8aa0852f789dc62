"""Ctrl-C on run_grpo_vllm.sh while torchrun's worker trains (VLLM_MODE=none: transformers generation on CPU, the
tiny model): torchrun, its worker and the log tee stop, nothing of the session is left. The vLLM server's part
of the same Ctrl-C is tests/train/test_grpo.py::test_ctrl_c_stops_the_server_and_leaves_no_process (a stand-in server)."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from helpers import GRPO_SCRIPT, session_members
from test_grpo import SMALL_RUN, grpo_env, rlvr  # noqa: F401  (rlvr: the fixture)


def running(psutil, pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.slow
def test_ctrl_c_on_the_grpo_script_stops_torchrun_and_its_training_worker(tiny_model, rlvr, tmp_path):  # noqa: F811
    import psutil

    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **grpo_env(tiny_model, rlvr, out)}
    console = tmp_path / "console.txt"
    with open(console, "wb") as sink:
        proc = subprocess.Popen(["bash", str(GRPO_SCRIPT), *SMALL_RUN, "--max_steps", "1000", "--save_strategy", "no"],
                                cwd="/", env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    log = out / "train_grpo.log"
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            if log.exists() and "'loss'" in log.read_text(errors="replace"):
                break
            time.sleep(0.5)
        assert proc.poll() is None, console.read_text(errors="replace")[-3000:]
        assert "'loss'" in log.read_text(errors="replace"), "the worker should have trained a step"
        commands = {}
        for p in psutil.Process(proc.pid).children(recursive=True):
            try:
                commands[p.pid] = " ".join(p.cmdline())
            except psutil.Error:
                pass
        training = [pid for pid, c in commands.items() if "unifer.train.grpo" in c]
        assert len(training) >= 2, commands  # torchrun and its worker
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the foreground job
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, "the run was interrupted, not finished"
    time.sleep(1)
    assert not [pid for pid in commands if running(psutil, pid)], commands
    assert session_members(proc.pid) == []
