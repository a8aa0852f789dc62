"""unifer.bench.gpu_train (unifer bench gpu-train): the training GPU check runs end to end on a CPU at the tiny shape.

Left out here, with reasons: flash-attention 2 needs a CUDA GPU (the script skips that part itself without one);
colocated vLLM takes minutes to start on a CPU (its path is test_colocate_sync.py), so GRPO runs with
transformers rollouts; ZeRO-3 is test_grpo.py::test_two_processes_zero3 and test_deepspeed_configs.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_tiny_shape_on_cpu_writes_json_and_markdown(tmp_path):
    out = tmp_path / "results"
    res = subprocess.run([sys.executable, "-m", "unifer", "bench", "gpu-train", "--shape", "tiny", "--out", str(out),
                          "--parts", "sft,grpo,infer-fp32,infer-fp32-flash", "--grpo-rollouts", "none",
                          "--quick", "--workdir", str(tmp_path / "work"), "--part-timeout-s", "600", "--budget-s", "1200"],
                         cwd=REPO, capture_output=True, text=True, timeout=1450)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((out / "gpu_train_tiny.json").read_text())
    parts = report["parts"]
    assert list(parts) == ["sft", "grpo", "infer-fp32", "infer-fp32-flash"]
    for name in ("sft", "grpo"):
        assert "error" not in parts[name], parts[name]
        assert parts[name]["steps"] == 2 and parts[name]["median_step_s"] > 0
    assert parts["infer-fp32"]["items"] == 4 and parts["infer-fp32"]["error_items"] == 0
    assert parts["infer-fp32-flash"]["skipped"] == "flash-attention 2 needs a CUDA GPU (flash-attn)"
    assert report["cuda"] is False and report["checkpoint"]
    md = (out / "gpu_train_tiny.md").read_text()
    assert "| SFT, 2 steps, bf16 (unifer.train.sft) | ran |" in md and "skipped: flash-attention 2" in md


def test_unknown_parts_are_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "unifer", "bench", "gpu-train", "--parts", "sft,zero4", "--out",
                          str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1] == \
        "error: --parts: unknown zero4; choose from sft, grpo, zero3, infer-fp32, infer-fp32-flash"
    assert not any(tmp_path.iterdir())
