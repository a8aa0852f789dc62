"""Reliability, the training scripts: their settings are checked before anything starts (a fake `nvidia-smi` stands
in for GPUs, which cannot run here), a checkout under a path with spaces, `&`, `(` and non-ASCII letters builds,
checks, infers, scores and trains, and Ctrl-C or SIGTERM stops every child."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    GRPO_SCRIPT,
    PY,
    RAF,
    REPO,
    SFT_SCRIPT,
    clean_env,
    dump,
    halves,
    make_records,
    one_clear_line,
    run,
    save_png,
    session_members,
)


@pytest.fixture
def fake_gpus(tmp_path) -> Path:
    """A directory with an ``nvidia-smi`` that lists two GPUs (CUDA_VISIBLE_DEVICES unset: the scripts ask it)."""
    bin_dir = tmp_path / "fake bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n"
                   "echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'\n")
    smi.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("script,env,fragment", [
    (SFT_SCRIPT, {"NPROC_PER_NODE": "3"}, "NPROC_PER_NODE=3 but only 2 GPU(s) are visible on this node"),
    (GRPO_SCRIPT, {"NPROC_PER_NODE": "3", "VLLM_MODE": "colocate"},
     "NPROC_PER_NODE=3 but only 2 GPU(s) are visible on this node"),
    (SFT_SCRIPT, {"NPROC_PER_NODE": "0"}, "NPROC_PER_NODE must be a positive integer, got '0'"),
    (SFT_SCRIPT, {"NPROC_PER_NODE": "two"}, "NPROC_PER_NODE must be a positive integer, got 'two'"),
    (SFT_SCRIPT, {"NNODES": "2", "NODE_RANK": "2"}, "NODE_RANK must be in 0..1, got '2'"),
    (GRPO_SCRIPT, {"VLLM_MODE": "vllm"}, "VLLM_MODE must be server, colocate or none, got 'vllm'"),
    (SFT_SCRIPT, {"PREFLIGHT_IMAGES": "all"}, "PREFLIGHT_IMAGES must be decode or exist, got 'all'"),
], ids=["sft-nproc>gpus", "grpo-nproc>gpus", "nproc-0", "nproc-word", "node-rank", "vllm-mode", "preflight-images"])
def test_script_settings_are_checked_before_anything_starts(script, env, fragment, fake_gpus, tiny_model, image_root,
                                                            tmp_path):
    kind = "cot" if script == SFT_SCRIPT else "rlvr"
    data = dump(tmp_path / f"{kind}.json", make_records(kind))
    out = tmp_path / "out"
    res = run(["bash", script], cwd=tmp_path, PATH=f"{fake_gpus}:{os.environ['PATH']}", MODEL_PATH=tiny_model,
              DATA_PATH=data, IMAGE_ROOT=image_root, OUTPUT_DIR=out, **env)
    one_clear_line(res, fragment, script=True)
    assert not out.exists()


# ======================================================================================= paths with odd names
@pytest.fixture(scope="module")
def spaced(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """The tracked files copied into ``…/with space & ü/repo``, the tiny model copied beside it, and a FERPlus test
    tree whose folders and files have spaces and non-ASCII letters in their names."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, timeout=60)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot list the tracked files")
    base = tmp_path_factory.mktemp("odd paths") / "with space & ü"
    checkout = base / "repo"
    for name in listed.stdout.decode().split("\0"):
        if name and (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    model = base / "models ü" / "tiny model"
    shutil.copytree(tiny_model, model)
    raw = base / "raw data (ü)"
    for i, label in enumerate(["happy", "sad", "angry", "happy"]):
        save_png(raw / "FERPlus" / "test" / label / f"face {i} é&.png", halves(left=(20 * i, 120, 80)))
    return {"base": base, "checkout": checkout, "model": model, "raw": raw}


@pytest.mark.slow
def test_build_check_infer_score_from_a_checkout_under_a_path_with_spaces(spaced):
    checkout, raw = spaced["checkout"], spaced["raw"]
    original = REPO / "eval_ferplus/data/ferplus_qa.json"
    original_before = original.read_bytes() if original.exists() else None
    env = {"PYTHONPATH": str(checkout)}
    res = run([PY, "-m", "unifer", "ferbench", "build", "--image-root", raw, "--datasets", "ferplus"], cwd=checkout,
              **env)
    assert res.returncode == 0, res.stderr
    qa = checkout / "eval_ferplus" / "data" / "ferplus_qa.json"  # the copy's own default, not the original's
    assert [r["image_path"] for r in json.loads(qa.read_text())][:2] == ["/FERPlus/test/angry/face 2 é&.png",
                                                                         "/FERPlus/test/happy/face 0 é&.png"]
    res = run([PY, "-m", "unifer", "ferbench", "check", "ferplus", "--image-root", raw, "--no-progress"], cwd=checkout,
              **env)
    assert res.returncode == 0 and "images: 4 distinct, all decode" in res.stdout, res.stdout + res.stderr
    # the faces run from anywhere and use their own checkout's package and defaults
    # (--run: results are named by run, the checkpoint folder's name by default; the scorer's default is unifer_7b)
    res = run([PY, checkout / "eval_ferplus/code/infer_unifer.py", "--model", spaced["model"], "--run", "unifer_7b",
               "--image-root", raw, "--max-new-tokens", "3", "--batch-size", "2", "--dtype", "float32"],
              cwd=spaced["base"], timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    results = checkout / "eval_ferplus" / "results" / "ferplus_unifer_7b_results.json"
    answered = json.loads(results.read_text())
    assert len(answered) == 4 and not any(r.get("error") for r in answered)
    res = run([PY, checkout / "eval_ferplus/code/eval_unifer.py", "--no-figs"], cwd=spaced["base"])
    assert res.returncode == 0, res.stderr
    metrics = json.loads((checkout / "eval_ferplus/results/ferplus_unifer_7b_metrics.json").read_text())
    assert metrics["counts"]["total"] == 4 and metrics["results_file"] == str(results)
    assert (original.read_bytes() if original.exists() else None) == original_before




@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm-to-script"])
def test_sft_script_under_a_path_with_spaces_trains_and_ctrl_c_stops_every_child(spaced, tmp_path, stop):
    import psutil
    base, checkout = spaced["base"], spaced["checkout"]
    script = checkout / "train_unifer" / "src" / "scripts" / "run_sft_fer.sh"
    images = base / "images & more"
    records = []
    for i, label in enumerate(["happiness", "sadness"]):
        save_png(images / "faces ü" / f"face {i}.png", halves(left=(30 * i, 150, 60)))
        records.append({"image_path": f"/faces ü/face {i}.png", "question": RAF.prompt,
                        "response": f"<think>the mouth</think><answer>{label}</answer>"})
    bad = dump(base / "cot data ü (bad).json", [records[0], {"image_path": "/faces ü/face 1.png"}])
    data = dump(base / "cot data ü.json", records)
    out = base / f"out dir ü {stop}"
    env = {"MODEL_PATH": spaced["model"], "DATA_PATH": bad, "IMAGE_ROOT": images, "OUTPUT_DIR": out,
           "NPROC_PER_NODE": "1", "PYTHONPATH": ""}
    one_clear_line(run(["bash", script], cwd=tmp_path, **env), f"{bad}: record 1, field 'question': missing field",
                   script=True)
    assert not out.exists()

    env["DATA_PATH"] = data
    console = tmp_path / "console.txt"
    with open(console, "wb") as sink:
        proc = subprocess.Popen(
            ["bash", str(script), "--max_steps", "1000", "--logging_steps", "1", "--save_strategy", "no",
             "--gradient_accumulation_steps", "1", "--gradient_checkpointing", "false"],
            cwd=tmp_path, env=clean_env(**env), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    log = out / "train_sft.log"
    deadline = time.time() + 400
    try:
        while time.time() < deadline and proc.poll() is None:
            if log.exists() and "'loss'" in log.read_text(errors="replace"):
                break
            time.sleep(0.5)
        assert proc.poll() is None, console.read_text(errors="replace")[-3000:]
        assert "'loss'" in log.read_text(errors="replace"), "training should have logged a step"
        tree = psutil.Process(proc.pid).children(recursive=True)
        commands = {}
        for p in tree:
            try:
                commands[p.pid] = " ".join(p.cmdline())
            except psutil.Error:
                pass
        workers = [pid for pid, command in commands.items() if "unifer.train.sft" in command]
        assert len(workers) >= 2, commands  # torchrun and its worker
        if stop == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the foreground job
        else:
            os.kill(proc.pid, signal.SIGTERM)  # a scheduler or `kill PID`: only the script itself is signalled
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    time.sleep(0.5)
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert session_members(proc.pid) == []
