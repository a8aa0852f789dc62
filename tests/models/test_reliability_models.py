"""Reliability, model paths: a missing, wrong or broken model is one line naming the path, before torch is imported,
from inference and from both training scripts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import GRPO_SCRIPT, PY, REPO, SFT_SCRIPT, dump, heavy_imports, make_records, one_clear_line, run


def _model_faults(d: Path, tiny_model: Path) -> dict[str, tuple[Path, str]]:
    def checkpoint(name: str, config: str | None, weights: bool = True) -> Path:
        p = d / name
        p.mkdir()
        if config is not None:
            (p / "config.json").write_text(config)
        if weights:
            (p / "model.safetensors").write_bytes(b"\0" * 8)
        return p

    (d / "a file").write_text("x")
    return {
        "path missing": (d / "no such model", "not found"),
        "a file": (d / "a file", ""),
        "not a checkpoint": (checkpoint("downloads", None),
                             "has no config.json, so it is not a Hugging Face checkpoint"),
        "unreadable config": (checkpoint("broken", "{model_type: qwen"), "config is unreadable"),
        "text-only model": (checkpoint("llama", json.dumps({"model_type": "llama"})),
                            "is a text-only model (model_type 'llama')"),
        "another vision model": (checkpoint("llava", json.dumps({"model_type": "llava", "vision_config": {}})),
                                 "is not a Qwen2.5-VL model (model_type 'llava')"),
        "no weights": (checkpoint("no weights", (tiny_model / "config.json").read_text(), weights=False),
                       "has a config but no weights"),
    }


@pytest.mark.parametrize("face", ["infer_unifer.py", "run_sft_fer.sh", "run_grpo_vllm.sh"])
def test_bad_model_is_one_line_before_anything_loads(face, tiny_model, image_root, tmp_path):
    qa = dump(tmp_path / "qa.json", make_records("qa"))
    cot = dump(tmp_path / "cot.json", make_records("cot"))
    rlvr = dump(tmp_path / "rlvr.json", make_records("rlvr"))
    models = tmp_path / "models"
    models.mkdir()
    for case, (model, fragment) in _model_faults(models, tiny_model).items():
        out = tmp_path / "out"
        if face == "infer_unifer.py":
            res = run([PY, REPO / "eval_rafdb/code/infer_unifer.py", "--model", model, "--input", qa, "--output",
                       out / "r.json", "--image-root", image_root], PYTHONPROFILEIMPORTTIME=1)
        else:
            script, data = (SFT_SCRIPT, cot) if face == "run_sft_fer.sh" else (GRPO_SCRIPT, rlvr)
            res = run(["bash", script], cwd=tmp_path, MODEL_PATH=model, DATA_PATH=data, IMAGE_ROOT=image_root,
                      OUTPUT_DIR=out, NPROC_PER_NODE=1, VLLM_MODE="none", PYTHONPROFILEIMPORTTIME=1)
        if face != "infer_unifer.py" and case in ("path missing", "a file"):
            fragment = "model (MODEL_PATH) not found (a directory)"  # the script's own check, before Python
        elif case == "a file":
            fragment = "model path is not a directory"
        elif case == "another vision model" and face == "infer_unifer.py":  # inference takes any VL model (issue 14)
            fragment = "has a broken weight file model.safetensors"
        one_clear_line(res, str(model), fragment, script=face != "infer_unifer.py")
        assert not heavy_imports(res), case
        assert not out.exists(), case
