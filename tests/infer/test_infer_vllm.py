"""The vllm engine end to end (one vLLM start, ~60-100 s on a laptop CPU): real photographs and a broken image,
answers equal to the hf engine's on the tiny model in float32, the checkpoint's repetition penalty included."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from helpers import qa_record

from unifer.data.sets import get_set
from unifer.infer.runner import main as infer_main

pytest.importorskip("vllm")

TOKENS = 48  # long enough for the repetition penalty to change greedy choices (see test_infer.PENALTY_TOKENS)


def _qa(paths) -> list[dict]:
    out = []
    for n, p in enumerate(paths):
        s = get_set(("rafdb", "ferplus")[n % 2])  # two prompt lengths: the hf batch is left-padded
        out.append(qa_record(s, str(p), s.labels[0]))
    return out


def _answers(engine, model, qa, out, batch_size):
    argv = ["--engine", engine, "--model", str(model), "--input", str(qa), "--output", str(out), "--image-root",
            "/", "--max-new-tokens", str(TOKENS), "--dtype", "float32", "--batch-size", str(batch_size)]
    assert infer_main(argv, "rafdb") == 0
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_vllm_engine_answers_like_hf(tiny_model, photos, tmp_path):
    model = tmp_path / "tiny-penalty"  # Qwen2.5-VL-Instruct's generation_config: repetition_penalty 1.05
    shutil.copytree(tiny_model, model)
    cfg = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**cfg, "repetition_penalty": 1.05}))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths = [p.path for p in photos[:3]] + [broken] + [p.path for p in photos[-6:]]
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps(_qa(paths)), encoding="utf-8")

    preset = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    hf = _answers("hf", model, qa, tmp_path / "hf.json", 8)
    vllm = _answers("vllm", model, qa, tmp_path / "vllm.json", 4)
    if preset is None:  # on CPU the engine ran in this process (engines/vllm.py in_process_on_cpu)
        assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"

    assert [r["image_path"] for r in vllm] == [str(p) for p in paths]
    assert vllm[3]["error"] is True and vllm[3]["model_response"].startswith("ERROR: ")
    assert vllm[3] == hf[3]
    answered = [i for i in range(len(paths)) if i != 3]
    assert all(vllm[i]["model_response"] and "error" not in vllm[i] for i in answered)
    # Measured: 63 of 63 photos identical at 64 tokens (float32, penalty 1.05). Allow one near-tie flip for
    # other CPUs' kernels; a systematic difference (penalty, template, decoding) breaks most items.
    same = sum(vllm[i]["model_response"] == hf[i]["model_response"] for i in answered)
    assert same >= len(answered) - 1, [(hf[i]["model_response"], vllm[i]["model_response"]) for i in answered]
    assert len({vllm[i]["model_response"] for i in answered}) >= len(answered) - 1, "answers depend on the image"
