"""Cold-start SFT: loss masks token by token, bad data stopped before training, and real training runs through
``run_sft_fer.sh`` on the tiny model (one process, two processes under torchrun, DeepSpeed ZeRO-2)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import PY, SFT_SCRIPT, answer, cot_record, dump, one_photo_per_label, run

from unifer.data.images import join_image_path, load_image

SCRIPT = SFT_SCRIPT
FORMAT = re.compile(r"^<think>.+</think><answer>.+</answer>$", re.S)
THINK = "I look at the eyes and the mouth."


def cot_response(label: str) -> str:
    return answer(label, THINK)


@pytest.fixture(scope="module")
def cot_set(tmp_path_factory, photos):
    """Four real photos with four different labels under an image root, and a CoT file that names them."""
    root = tmp_path_factory.mktemp("cot")
    (root / "images").mkdir()
    chosen = one_photo_per_label(photos)
    records = []
    for i, photo in enumerate(chosen):
        name = f"images/face{i}{photo.path.suffix}"
        shutil.copy(photo.path, root / name)
        # A leading '/' as in UniFER-CoT-230K: it is joined onto the root, never taken as absolute.
        records.append(cot_record("/" + name, photo.label, think=THINK, question="Which expression?"))
    data = dump(root / "cot.json", records, indent=None)
    return {"root": root, "data": data, "records": records}


def run_script(env: dict, *flags: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return run(["bash", SCRIPT, *flags], cwd=cwd, timeout=timeout, clean=False,
               **{"PYTHON": PY, "REPORT_TO": "none", **env})


def script_env(tiny_model, cot_set, out: Path, **extra) -> dict:
    return {"MODEL_PATH": str(tiny_model), "DATA_PATH": str(cot_set["data"]), "IMAGE_ROOT": str(cot_set["root"]),
            "OUTPUT_DIR": str(out), **extra}


def logged(out: Path) -> list[dict]:
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


def greedy_answers(model_dir: Path, cot_set) -> list[str]:
    """Reload a saved checkpoint and answer every training image greedily."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from unifer.train.sft import build_messages

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    answers = []
    for r in cot_set["records"]:
        image = load_image(join_image_path(cot_set["root"], r["image_path"]))
        text = processor.apply_chat_template(build_messages(r["question"], None, image), tokenize=False,
                                             add_generation_prompt=True)
        batch = processor(text=[text], images=[image], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=40, do_sample=False)
        answers.append(processor.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True))
    return answers


# ------------------------------------------------------------------------------------------------ loss masks
@pytest.fixture(scope="module")
def processor(tiny_model):
    from unifer.models.processors import load_processor

    return load_processor(tiny_model, exact=True)


@pytest.fixture(scope="module")
def rows(cot_set):
    """Two rows of different lengths, so the shorter one is padded."""
    first, second = cot_set["records"][:2]
    second = {**second, "question": "Which facial expression is the most prominent one in this photograph?"}
    return [{**r, "image": load_image(join_image_path(cot_set["root"], r["image_path"]))} for r in (first, second)]


def paper_layout(question: str, response: str) -> str:
    """The paper's conversation written out by hand: empty system turn, image then question, the response."""
    return ("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
            f"{question}<|im_end|>\n<|im_start|>assistant\n{response}<|im_end|>\n")


def test_faithful_mask_trains_everything_but_pad_and_image_tokens(processor, rows):
    from unifer.train.sft import CoTCollator

    tok = processor.tokenizer
    pad_id, image_id = tok.pad_token_id, tok.convert_tokens_to_ids("<|image_pad|>")
    batch = CoTCollator(processor)(rows)
    ids, labels, attention = batch["input_ids"], batch["labels"], batch["attention_mask"]
    # Every row's own image reaches the model (the paper's collator kept only the last one of a batch).
    assert batch["image_grid_thw"].shape[0] == len(rows)
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(dim=1).sum())
    assert (attention == 0).any(), "the rows should differ in length, so one is padded"
    for row, r in enumerate(rows):
        n_image_tokens = int(batch["image_grid_thw"][row].prod()) // 4  # 2×2 merge: 64 for 224×224
        assert int((ids[row] == image_id).sum()) == n_image_tokens == 64
        for i in range(ids.shape[1]):
            token, label = int(ids[row, i]), int(labels[row, i])
            if attention[row, i] == 0:
                assert token == pad_id and label == -100, (row, i)
            elif token == image_id:
                assert label == -100, (row, i)
            else:
                assert label == token, (row, i, tok.decode([token]))
        # What carries loss is exactly the hand-written conversation without its image placeholder.
        trained = [t for t in labels[row].tolist() if t != -100]
        expected = tok.encode(paper_layout(r["question"], r["response"]).replace("<|image_pad|>", ""),
                              add_special_tokens=False)
        assert trained == expected


def test_assistant_only_mask_trains_the_answer_and_its_end_token(processor, rows):
    from unifer.train.sft import CoTCollator

    tok = processor.tokenizer
    batch = CoTCollator(processor, assistant_only_loss=True)(rows)
    ids, labels = batch["input_ids"], batch["labels"]
    for row, r in enumerate(rows):
        positions = (labels[row] != -100).nonzero().flatten().tolist()
        assert positions == list(range(positions[0], positions[-1] + 1)), "one contiguous span"
        assert labels[row, positions].tolist() == ids[row, positions].tolist()
        assert labels[row, positions].tolist() == tok.encode(r["response"] + "<|im_end|>", add_special_tokens=False)
        # The token before the span is the assistant header's newline; nothing of the prompt is trained.
        assert tok.decode(ids[row, : positions[0]]).endswith("<|im_start|>assistant\n")


# -------------------------------------------------------------------------------------- bad input, fast
def test_missing_field_stops_the_script_before_torchrun(tiny_model, cot_set, tmp_path):
    records = [dict(r) for r in cot_set["records"]]
    del records[1]["response"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records))
    out = tmp_path / "out"
    res = run_script(script_env(tiny_model, cot_set, out, DATA_PATH=str(bad)), cwd=tmp_path, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "record 1, field 'response'" in res.stderr and "missing field" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert not (out / "model.safetensors").exists() and not (out / "train_sft.log").exists()


def test_missing_image_stops_the_trainer_before_training(tiny_model, cot_set, tmp_path):
    """The trainer checks too when started without the script (python -m unifer.train.sft)."""
    records = [dict(r) for r in cot_set["records"]]
    records[2]["image_path"] = "/images/not_there.jpg"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records))
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "unifer.train.sft", "--model_name_or_path", str(tiny_model), "--dataset_name",
         str(bad), "--image_root", str(cot_set["root"]), "--output_dir", str(out), "--report_to", "none"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 2, res.stderr
    error_lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "record 2, field 'image_path'" in error_lines[0] and "not_there.jpg" in error_lines[0]
    assert "Traceback" not in res.stderr and not out.exists()


def test_script_refuses_more_processes_than_gpus_and_a_missing_model(tiny_model, cot_set, tmp_path):
    res = run_script(script_env(tiny_model, cot_set, tmp_path / "out", CUDA_VISIBLE_DEVICES="0,1",
                                NPROC_PER_NODE="4"), cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "NPROC_PER_NODE=4 but only 2 GPU(s)" in res.stderr
    res = run_script(script_env(tiny_model, cot_set, tmp_path / "out", MODEL_PATH="no/such model"),
                     cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and f"{tmp_path}/no/such model" in res.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ training runs
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_learning_signal_through_the_script_then_reload_and_generate(tiny_model, cot_set, tmp_path):
    """30 steps on four examples (one process, torchrun): the loss falls far and greedy answers take the format."""
    out = tmp_path / "learned"
    res = run_script(
        script_env(tiny_model, cot_set, out, NPROC_PER_NODE="1"),
        "--max_steps", "30", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
        "--learning_rate", "1e-2", "--logging_steps", "5", "--gradient_checkpointing", "false",
        "--save_strategy", "no",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    losses = [h["loss"] for h in logged(out) if "loss" in h]
    assert len(losses) == 6
    assert losses[-1] < 0.25 * losses[0] and losses[-1] < 1.0, losses
    config = json.loads((out / "config.json").read_text())
    assert config["use_cache"] is True and config["text_config"]["use_cache"] is True
    log_text = (out / "train_sft.log").read_text()
    assert "1 process(es) per node" in log_text and "--learning_rate 1e-2" in log_text
    answers = greedy_answers(out, cot_set)
    assert all(FORMAT.match(a) for a in answers), (answers, losses)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_under_torchrun(tiny_model, cot_set, tmp_path):
    out = tmp_path / "ddp"
    res = run_script(script_env(tiny_model, cot_set, out, NPROC_PER_NODE="2"),
                     "--max_steps", "2", "--gradient_accumulation_steps", "1", "--logging_steps", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    history = logged(out)
    # Four records, batch 1 per process: two processes cover one epoch in two steps (one process would need four).
    assert history[-1]["step"] == 2 and history[-1]["epoch"] == pytest.approx(1.0)
    assert (out / "model.safetensors").is_file() and (out / "processor_config.json").is_file()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_zero2_config_is_passed_and_two_processes_train(tiny_model, cot_set, tmp_path):
    """The paper's zero2.json handed to two processes, which train and save (that ZeRO stage 2 itself was active is
    not shown: DeepSpeed logs it below its default WARNING level). First start compiles DeepSpeed's CPU ops on a
    machine (cached afterwards)."""
    out = tmp_path / "zero2"
    res = run_script(script_env(tiny_model, cot_set, out, NPROC_PER_NODE="2", DEEPSPEED_CONFIG="zero2"),
                     "--max_steps", "2", "--gradient_accumulation_steps", "1", "--logging_steps", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "--deepspeed" in (out / "train_sft.log").read_text()
    history = logged(out)
    assert history[-1]["step"] == 2 and history[-1]["epoch"] == pytest.approx(1.0)
    answers = greedy_answers(out, cot_set)
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_resume_from_checkpoint_restores_weights_step_and_data_order(tiny_model, cot_set, tmp_path):
    """Resumed from checkpoint-2 (copied out of an uninterrupted run into a fresh folder: what a run stopped after
    it leaves; nothing is killed here) → --resume_from_checkpoint ends bit-identical to the uninterrupted run.
    (transformers' Trainer alone reloads none of Qwen2.5-VL's renamed keys and silently restarts from the
    initial weights; unifer.train.common.CheckpointWeightsMixin fixes that for both trainers.)"""
    import shutil

    from safetensors.torch import load_file

    flags = ["--max_steps", "3", "--gradient_accumulation_steps", "1", "--logging_steps", "1",
             "--save_strategy", "steps", "--save_steps", "1", "--save_only_model", "false",
             "--learning_rate", "1e-3", "--lr_scheduler_type", "constant", "--seed", "7"]
    full = tmp_path / "full"
    res = run_script(script_env(tiny_model, cot_set, full), *flags, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")
    res = run_script(script_env(tiny_model, cot_set, resumed), *flags, "--resume_from_checkpoint", "true",
                     cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    steps = [e["step"] for e in logged(resumed) if "loss" in e]
    assert steps[-1] == 3 and logged(resumed)[-1]["step"] == 3
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "resumed weights differ from the uninterrupted run"
    start = load_file(tiny_model / "model.safetensors")
    assert any(not (a[k] == start[k]).all() for k in a)  # training moved the weights at all
