"""GRPO: data mapping, image-pad guard, paper defaults, and real runs through run_grpo_vllm.sh on the tiny model.

The runs use a variant of the tiny model whose <|image_pad|> embedding row points along its hidden states, so
unguarded sampling emits image-pad tokens at once (as vLLM does on real models, R1-V#91 / trl#3847), and a
test-only reward (a module:function spec) that pays by length: random weights earn 0 from accuracy and format,
and a gradient needs rewards that differ within a group.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import GRPO_SCRIPT, dump, one_photo_per_label, rlvr_record, run, session_members

from unifer.data.images import join_image_path, load_image
from unifer.errors import DataError

SCRIPT = GRPO_SCRIPT
IMAGE_PAD = 151655
TOY_REWARD = "def by_length(completions, **kwargs):\n    return [len(c[0]['content']) / 100.0 for c in completions]\n"
# 2 prompts x 2 generations per step and process, 4 new tokens: small enough for two CPU cores.
SMALL_RUN = ["--num_generations", "2", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
             "--max_completion_length", "4", "--logging_steps", "1", "--gradient_checkpointing", "false",
             "--reward_funcs", "accuracy", "format", "toy_reward:by_length", "--seed", "0"]
# transformers generation: TRL's own ban on the image token lifted; our guard must hold even so
UNBANNED = ["--generation_kwargs", '{"suppress_tokens": []}']


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def rlvr(photos, tmp_path_factory):
    """Four distinct face photos under an image root and an RLVR file whose problems name their record."""
    root = tmp_path_factory.mktemp("rlvr")
    chosen = one_photo_per_label(photos)
    records = []
    for i, p in enumerate(chosen):
        dst = root / "images" / "faces" / f"{i}{p.path.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p.path, dst)
        records.append(rlvr_record(f"/faces/{dst.name}", p.label, problem=f"Record {i}: which expression is shown?"))
    dump(root / "rlvr.json", records, indent=None)
    (root / "toy_reward.py").write_text(TOY_REWARD)
    return root


@pytest.fixture(scope="module")
def prone_model(tiny_model, tmp_path_factory):
    """The tiny model, but its <|image_pad|> logit dominates every position (tied embeddings: one row)."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path_factory.mktemp("prone") / "model"
    shutil.copytree(tiny_model, out)
    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out)
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                          "text": "Which expression?"}]}], add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (224, 224), (90, 60, 40))], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1][0]
        direction = hidden.mean(0) / hidden.mean(0).norm()
        model.get_input_embeddings().weight[IMAGE_PAD] = 40 * direction
        sampled = model.generate(**inputs, max_new_tokens=4, do_sample=True, suppress_tokens=None)
    assert (sampled[0, inputs["input_ids"].shape[1]:] == IMAGE_PAD).all()  # unguarded, it only emits image pads
    model.save_pretrained(out)
    return out


def run_script(env_extra: dict, flags: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return run(["bash", SCRIPT, *flags], cwd="/", timeout=timeout, clean=False,
               **{"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", **env_extra})


def grpo_env(model, rlvr, out, **extra) -> dict:
    return {"MODEL_PATH": str(model), "DATA_PATH": str(rlvr / "rlvr.json"), "IMAGE_ROOT": str(rlvr / "images"),
            "OUTPUT_DIR": str(out), "PYTHONPATH": str(rlvr), "NPROC_PER_NODE": "1", "VLLM_MODE": "none",
            "MASTER_PORT": str(29500 + os.getpid() % 1000), **extra}


def check(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def expected_digests(model, rlvr) -> dict:
    """image_path → (sha of the 224×224 RGB image, sha of the PIL processor's pixel patches for it alone)."""
    import numpy as np
    from transformers import AutoImageProcessor

    processor = SimpleNamespace(image_processor=AutoImageProcessor.from_pretrained(model, backend="pil"))
    out = {}
    for r in json.loads((rlvr / "rlvr.json").read_text()):
        image = load_image(join_image_path(rlvr / "images", r["image_path"]))
        pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        out[r["image_path"]] = (hashlib.sha256(image.tobytes()).hexdigest(),
                                hashlib.sha256(np.ascontiguousarray(pixels.float().numpy()).tobytes()).hexdigest(),
                                r["problem"])
    return out


def assert_own_images(trace: Path, expected: dict, stages=("generation", "loss")) -> list[dict]:
    """Every traced rollout used its own record's image, and batches mixed different images."""
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    assert {r["stage"] for r in rows} == set(stages)
    groups: dict = {}
    for r in rows:
        image_sha, pixel_sha, problem = expected[r["image_path"]]
        assert problem in r["prompt"], r
        assert r["pixel_sha"] == pixel_sha, r
        if r["stage"] == "generation":
            assert r["image_sha"] == [image_sha], r
        groups.setdefault((r["stage"], r["step"], r["rank"]), set()).add(r["pixel_sha"])
    for stage in stages:  # the paper's bug would give one image per batch
        assert max(len(v) for k, v in groups.items() if k[0] == stage) >= 2
    return rows


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


# ---------------------------------------------------------------------------------------------- unit tests
def test_cut_at_placeholders():
    from unifer.train.grpo_trainer import cut_at_placeholders

    ids = [[5, 6, IMAGE_PAD, 7], [IMAGE_PAD, 1], [8, 9], (10, 151656)]
    logprobs = [[-1.0, -2.0, -3.0, -4.0], [-5.0, -6.0], [-7.0, -8.0], [-9.0, -1.5]]
    new_ids, new_lp, cut = cut_at_placeholders(ids, logprobs, {IMAGE_PAD, 151656}, fallback_id=151645)
    assert new_ids == [[5, 6], [151645], [8, 9], [10]]
    assert new_lp == [[-1.0, -2.0], [None], [-7.0, -8.0], [-9.0]]
    assert cut == 3
    assert cut_at_placeholders([[1, 2]], None, {IMAGE_PAD}, 0) == ([[1, 2]], None, 0)


def test_guarded_generation_kwargs_merge_with_the_users(tiny_model):
    from transformers import AutoProcessor

    from unifer.train.grpo_trainer import guarded_generation_kwargs, placeholder_token_ids

    processor = AutoProcessor.from_pretrained(tiny_model)
    assert placeholder_token_ids(processor) == [IMAGE_PAD, 151656]
    hf = guarded_generation_kwargs({"suppress_tokens": [], "top_k": 5}, processor, use_vllm=False)
    assert hf == {"suppress_tokens": [IMAGE_PAD, 151656], "top_k": 5}
    vllm = guarded_generation_kwargs({"bad_words": ["foo"]}, processor, use_vllm=True)
    assert vllm == {"bad_words": ["foo", "<|image_pad|>", "<|video_pad|>"]}
    assert processor.tokenizer.encode("<|image_pad|>", add_special_tokens=False) == [IMAGE_PAD]  # one bad token


def test_prompt_lengths_are_exact_and_long_prompts_are_rejected(tiny_model, tmp_path):
    from PIL import Image
    from transformers import AutoProcessor

    from unifer.train.grpo import build_prompt, check_prompt_lengths, prompt_token_counts

    processor = AutoProcessor.from_pretrained(tiny_model)
    problems = ["Which expression? Answer in <answer></answer>.", "Ünïcode — problem\nwith two lines  "]
    counts = prompt_token_counts(problems, processor)
    for p in problems:
        # what GRPOTrainer will tokenize: its own image block in front of the text
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": build_prompt(p)[0]["content"]}]}]
        text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        real = processor(text=[text], images=[Image.new("RGB", (224, 224))])["input_ids"][0]
        assert counts[p] == len(real)
    records = [{"problem": problems[0]}, {"problem": problems[1] * 40}]
    check_prompt_lengths(records[:1], processor, counts[problems[0]], "d.json")  # at the limit: fine
    with pytest.raises(DataError, match=r"d\.json: record 1, field 'problem': the prompt is \d+ tokens"):
        check_prompt_lengths(records, processor, 200, "d.json")
    check_prompt_lengths(records, processor, None, "d.json")  # no limit


def test_processor_keeps_the_paper_pixel_bounds(tiny_model):
    from PIL import Image

    from unifer.train.grpo import load_grpo_processor

    processor = load_grpo_processor(tiny_model, None, 3136, 501760)
    grid = processor.image_processor(images=[Image.new("RGB", (2000, 1500))], return_tensors="pt")["image_grid_thw"]
    assert int(grid.prod()) * 14 * 14 <= 501760  # the 12845056 default would keep ~3M pixels
    grid = processor.image_processor(images=[Image.new("RGB", (224, 224))], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 16, 16]]  # 224×224: 64 image tokens after the 2×2 merge


def test_paper_defaults_and_batch_mapping(tiny_model, rlvr):
    from trl import ModelConfig

    from unifer.train.common import parse_trainer_args
    from unifer.train.grpo import GRPOPaperConfig, GRPOScriptArguments

    script, cfg, _ = parse_trainer_args((GRPOScriptArguments, GRPOPaperConfig, ModelConfig),
                                        ["--model_name_or_path", str(tiny_model), "--data_dir", "/x/"])
    assert script.image_root == "/x/" and script.reward_funcs == ["accuracy", "format"]
    assert (script.min_pixels, script.max_pixels, script.max_prompt_length) == (3136, 501760, 4096)
    assert (cfg.loss_type, cfg.beta, cfg.num_generations, cfg.temperature) == ("grpo", 0.04, 8, 1.0)
    assert (cfg.max_completion_length, cfg.learning_rate, cfg.weight_decay, cfg.max_grad_norm) == (1024, 1e-6, 0.01, 5)
    assert (cfg.num_iterations, cfg.scale_rewards, cfg.vllm_importance_sampling_correction,
            cfg.use_bias_correction_kl) == (1, "group", False, False)
    assert cfg.lr_scheduler_type == "cosine" and cfg.save_only_model and cfg.save_total_limit == 3
    # TRL counts completions: 8 per device = the paper's 1 prompt x 8; one generation per optimizer step
    assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, cfg.steps_per_generation) == (8, 4, 4)
    prompts_per_update_on_7_processes = cfg.per_device_train_batch_size * 7 * cfg.gradient_accumulation_steps // 8
    assert prompts_per_update_on_7_processes == 28


def test_resume_target_is_checked_before_anything_loads(tmp_path):
    from types import SimpleNamespace

    from unifer.errors import UniferError
    from unifer.train.grpo import resume_checkpoint

    def args(value, deepspeed=None):
        return SimpleNamespace(resume_from_checkpoint=value, output_dir=str(tmp_path), deepspeed=deepspeed)

    assert resume_checkpoint(args(None)) is None and resume_checkpoint(args("false")) is None
    with pytest.raises(UniferError, match="no checkpoint-\\* directory in"):
        resume_checkpoint(args("latest"))
    for step in (1, 2):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert resume_checkpoint(args("true")) == str(tmp_path / "checkpoint-2")
    with pytest.raises(UniferError, match="not a training checkpoint"):
        resume_checkpoint(args(str(tmp_path)))
    with pytest.raises(UniferError, match="--save_only_model true .* holds no DeepSpeed state"):
        resume_checkpoint(args(str(tmp_path / "checkpoint-1"), deepspeed="zero3.json"))
    (tmp_path / "checkpoint-1" / "global_step1").mkdir()
    assert resume_checkpoint(args(str(tmp_path / "checkpoint-1"), deepspeed="zero3.json")).endswith("checkpoint-1")


def test_script_server_flags_parse_with_trl_vllm_serve():
    """The real server command line (not started on CPU), built from the recipe, names flags `trl vllm-serve` knows."""
    from trl.scripts.vllm_serve import make_parser

    from unifer.train.recipes import GRPO_RECIPE, launch_settings
    from unifer.train.vllm_server import serve_command

    cmd = serve_command(Path("m"), "127.0.0.1", 8000, launch_settings(GRPO_RECIPE)["vllm_server"])
    assert cmd[1:3] == ["-m", "trl.scripts.vllm_serve"]
    (args,) = make_parser().parse_args_and_config(cmd[3:])
    assert (args.model, args.host, args.port) == ("m", "127.0.0.1", 8000)
    assert (args.gpu_memory_utilization, args.max_model_len, args.dtype) == (0.8, 5120, "bfloat16")
    assert args.enable_prefix_caching and args.enforce_eager


def test_the_rollout_engine_computes_in_the_policys_dtype(tmp_path):
    """vLLM's dtype "auto" turns a float32 checkpoint into bfloat16; the rollouts must come from the policy's dtype:
    the server's (bfloat16 with GPUs, as the paper; float32 on CPU, where bf16 is turned off) and the colocated
    engine's (``policy_dtype``, given to TRL's ``vllm.LLM``)."""
    from types import SimpleNamespace

    from unifer.train.grpo_trainer import colocated_vllm_dtype, policy_dtype
    from unifer.train.recipes import GRPO_RECIPE, launch_settings
    from unifer.train.vllm_server import Rollouts, server_plan

    settings = launch_settings(GRPO_RECIPE)["vllm_server"]
    dtype = lambda plan: plan.command[plan.command.index("--dtype") + 1]  # noqa: E731
    cpu = server_plan({}, Rollouts("server"), tmp_path, tmp_path, settings)
    gpu = server_plan({}, Rollouts("server", vllm_device="1", train_devices=["0"]), tmp_path, tmp_path, settings)
    assert (dtype(cpu), dtype(gpu)) == ("float32", "bfloat16")

    def args(bf16, weights):
        return SimpleNamespace(bf16=bf16, fp16=False, model_init_kwargs={"dtype": weights})
    assert policy_dtype(args(False, "float32"), "m") == "float32"
    assert policy_dtype(args(True, "float32"), "m") == "bfloat16"  # the paper's GPU run: bf16 mixed precision
    assert policy_dtype(args(False, "bfloat16"), "m") == "bfloat16"

    from trl.generation import vllm_generation
    original, seen = vllm_generation.LLM, []
    vllm_generation.LLM = lambda *a, **kw: seen.append(kw)
    try:
        with colocated_vllm_dtype("float32"):
            vllm_generation.LLM(model="m")
            vllm_generation.LLM(model="m", dtype="bfloat16")  # a dtype TRL might pass itself wins
        vllm_generation.LLM(model="m")
    finally:
        vllm_generation.LLM = original
    assert [kw.get("dtype") for kw in seen] == ["float32", "bfloat16", None]


# -------------------------------------------------------------------------------------- runs (the script)
@pytest.fixture(scope="module")
def one_process_run(prone_model, rlvr, tmp_path_factory):
    out = tmp_path_factory.mktemp("run1") / "out"
    trace = out.parent / "trace.jsonl"
    t0 = time.time()
    result = run_script(grpo_env(prone_model, rlvr, out), [
        *SMALL_RUN, *UNBANNED, "--max_steps", "2", "--save_steps", "1", "--save_only_model", "false",
        "--trace_images", str(trace)])
    return result, out, trace, time.time() - t0


@pytest.mark.slow
def test_two_steps_one_process_each_prompt_its_own_image(one_process_run, prone_model, rlvr):
    result, out, trace, seconds = one_process_run
    output = check(result)
    assert "image-pad guard" not in output  # banned at sampling, nothing left to cut
    rows = assert_own_images(trace, expected_digests(prone_model, rlvr))
    assert {r["step"] for r in rows} == {0, 1}
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    stds = [h["rewards/by_length/std"] for h in state["log_history"] if "rewards/by_length/std" in h]
    assert stds and all(s > 0 for s in stds), f"TRL logged no rewards/by_length/std > 0: {state['log_history']}"
    before, after = weights(prone_model), weights(out)
    assert any(not (before[k] == after[k]).all() for k in before)  # the gradient moved the weights
    debug = (out / "debug_log_grpo.txt").read_text()  # DEBUG_MODE=true is the script's default, as the paper's
    assert debug.count("Accuracy reward: ") == 2 * 4 and "Solution: <answer>" in debug
    assert (out / "train_grpo.log").is_file() and (out / "checkpoint-1" / "optimizer.pt").is_file()


@pytest.mark.slow
def test_resume_from_checkpoint_continues_the_run(one_process_run, prone_model, rlvr, tmp_path):
    _, first, _, _ = one_process_run
    out, trace = tmp_path / "resumed", tmp_path / "trace.jsonl"
    check(run_script(grpo_env(prone_model, rlvr, out), [
        *SMALL_RUN, *UNBANNED, "--max_steps", "2", "--save_strategy", "no", "--trace_images", str(trace),
        "--resume_from_checkpoint", str(first / "checkpoint-1")]))
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    assert {r["step"] for r in rows} == {1}  # only the second step ran
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    uninterrupted, resumed = weights(first / "checkpoint-2"), weights(out)
    assert all((uninterrupted[k] == resumed[k]).all() for k in uninterrupted)


@pytest.mark.slow
def test_two_processes_zero3(prone_model, rlvr, tmp_path):
    out, trace = tmp_path / "out", tmp_path / "trace.jsonl"
    check(run_script(grpo_env(prone_model, rlvr, out, NPROC_PER_NODE="2", DEEPSPEED_CONFIG="zero3"), [
        *SMALL_RUN, *UNBANNED, "--max_steps", "2", "--save_strategy", "no", "--trace_images", str(trace)]))
    rows = assert_own_images(trace, expected_digests(prone_model, rlvr))
    assert {r["rank"] for r in rows} == {0, 1}
    saved, before = weights(out), weights(prone_model)
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in before.items()}  # gathered, not shards


@pytest.mark.slow
def test_without_the_guard_an_image_pad_completion_kills_the_step(prone_model, rlvr, tmp_path):
    result = run_script(grpo_env(prone_model, rlvr, tmp_path / "out"), [
        *SMALL_RUN, *UNBANNED, "--max_steps", "1", "--save_strategy", "no", "--image_pad_guard", "false"])
    assert result.returncode != 0
    assert "Image features and image tokens do not match" in result.stdout + result.stderr


# ------------------------------------------------------------------------ server mode (stand-in server, CPU)
STANDIN = r'''
import http.server, json, os, subprocess, sys, time
mode = os.environ["STANDIN_MODE"]
out = os.environ["STANDIN_DIR"]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # like vLLM's engine worker
with open(os.path.join(out, "pids"), "w") as f:
    f.write(f"{os.getpid()} {child.pid}\n")
print("stand-in up", os.environ["VLLM_HOST"], os.environ["VLLM_PORT"], os.environ["VLLM_MODEL"], flush=True)
if mode == "crash":
    sys.exit(3)
if mode == "never":
    time.sleep(600)
ANSWERS = {"/health": {}, "/v1/models": {"data": [{"id": os.environ["VLLM_MODEL"]}]},
           "/server_info": {"vllm_config": {"weight_transfer_config": {"backend": "nccl"}}},
           "/get_world_size": {"world_size": 1}}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        with open(os.path.join(out, "requests"), "a") as f:
            f.write(path + "\n")
        body = json.dumps(ANSWERS.get(path, {})).encode()
        self.send_response(200 if path in ANSWERS else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET
http.server.HTTPServer((os.environ["VLLM_HOST"], int(os.environ["VLLM_PORT"])), Handler).serve_forever()
'''


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def standin(tmp_path):
    (tmp_path / "standin.py").write_text(STANDIN)
    return tmp_path


def server_env(model, rlvr, standin, mode, **extra) -> dict:
    return grpo_env(model, rlvr, standin / "out", VLLM_MODE="server", VLLM_PORT=str(free_port()),
                    VLLM_SERVER_CMD=f"{sys.executable} {standin / 'standin.py'}", STANDIN_MODE=mode,
                    STANDIN_DIR=str(standin), **extra)


def standin_pids(standin) -> list[int]:
    return [int(p) for p in (standin / "pids").read_text().split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"




@pytest.mark.slow
def test_server_mode_starts_waits_connects_the_trainer_and_stops_it(prone_model, rlvr, standin):
    env = server_env(prone_model, rlvr, standin, "healthy")
    result = run_script(env, [*SMALL_RUN, "--max_steps", "1", "--save_strategy", "no"])
    output = result.stdout + result.stderr
    # On CPU the trainer gets as far as the weight sync, which needs CUDA: that is the honest end of the road (no
    # training step runs against the server here).
    assert result.returncode != 0 and "needs a CUDA device" in output, output[-3000:]
    assert "vLLM server healthy" in output and "vLLM server stopped" in output
    requests = (standin / "requests").read_text().split()
    assert {"/health", "/v1/models", "/server_info"} <= set(requests)  # the trainer talked to this server
    server_log = (standin / "out" / "vllm_server.log").read_text()
    assert f"stand-in up 127.0.0.1 {env['VLLM_PORT']} {prone_model}" in server_log
    assert not any(alive(p) for p in standin_pids(standin))  # server and its worker are gone


def test_server_that_never_gets_healthy_times_out_clearly(tiny_model, rlvr, standin):
    t0 = time.time()
    result = run_script(server_env(tiny_model, rlvr, standin, "never", VLLM_SERVER_TIMEOUT="2"), [])
    assert result.returncode == 2
    assert re.search(r"error: the vLLM server was not healthy at http://127\.0\.0\.1:\d+/health after 2 s", result.stderr)
    assert "stand-in up 127.0.0.1" in result.stderr  # its log tail is shown
    assert not any(alive(p) for p in standin_pids(standin))
    assert time.time() - t0 < 60


@pytest.mark.parametrize("visible, mode", [("", "none"), ("0", "colocate"), ("3,5,7", "server")])
def test_default_mode_follows_the_visible_gpus(tmp_path, visible, mode):
    result = run_script({"CUDA_VISIBLE_DEVICES": visible, "VLLM_MODE": "", "MODEL_PATH": str(tmp_path),
                         "DATA_PATH": str(tmp_path / "missing.json"), "OUTPUT_DIR": str(tmp_path / "out")}, [])
    assert f"rollouts: VLLM_MODE={mode}" in result.stderr
    if mode == "server":  # the paper's topology: the last GPU serves, the others train
        assert "vLLM on GPU 7, training on GPU(s) 3,5" in result.stderr
    assert result.returncode == 2 and "error: RLVR training data (DATA_PATH) not found" in result.stderr


def test_server_that_dies_is_reported(tiny_model, rlvr, standin):
    result = run_script(server_env(tiny_model, rlvr, standin, "crash"), [])
    assert result.returncode == 2
    assert "error: the vLLM server exited (status 3) before it was healthy" in result.stderr
    assert not any(alive(p) for p in standin_pids(standin))  # the orphaned worker too


def test_ctrl_c_stops_the_server_and_leaves_no_process(tiny_model, rlvr, standin):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **server_env(tiny_model, rlvr, standin, "never")}
    proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, cwd="/", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (standin / "pids").exists() and time.time() < deadline:
        time.sleep(0.2)
    server, worker = standin_pids(standin)
    assert alive(server) and alive(worker)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the foreground job
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "vLLM server stopped" in stderr
    assert not alive(server) and not alive(worker)
    assert session_members(proc.pid) == []


def test_rollout_prompts_carry_one_placeholder_per_image():
    """vLLM expands each image placeholder itself: the trainer's already expanded runs go to it as one token each
    (the colocated answers through this path are checked in test_colocate_sync.py)."""
    from unifer.train.grpo_trainer import rollout_prompt_ids

    image, video, start, end = IMAGE_PAD, IMAGE_PAD + 1, 151652, 151653
    prompts = [[1, start, *[image] * 64, end, 2, start, *[image] * 4, end, 3], [1, 2, 3], [start, *[video] * 3, end]]
    assert rollout_prompt_ids(prompts, [image, video]) == [[1, start, image, end, 2, start, image, end, 3], [1, 2, 3],
                                                           [start, video, end]]
