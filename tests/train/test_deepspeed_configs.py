"""train_unifer/configs: ZeRO-3 steps the trainer's own AdamW, whose no-decay group exempts biases and norm
weights (the paper's zero3.json has no `optimizer` block; one would make DeepSpeed build its own AdamW over every
parameter, decaying those too). DeepSpeed runs on CPU here, as one process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "train_unifer" / "configs"

PROBE = r'''
import json, sys
import torch
from torch import nn
from transformers import PretrainedConfig, Trainer, TrainingArguments
from unifer.train.common import ensure_distributed_env

class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = PretrainedConfig(hidden_size=8)  # DeepSpeed's "auto" bucket sizes read it
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 1, bias=False)
    def forward(self, x, labels):
        return {"loss": ((self.head(self.norm(self.proj(x))).squeeze(-1) - labels) ** 2).mean()}

ensure_distributed_env()
torch.manual_seed(0)
rows = [{"x": torch.randn(8), "labels": torch.tensor(1.0)} for _ in range(4)]
args = TrainingArguments(output_dir=sys.argv[2], deepspeed=sys.argv[1], weight_decay=0.01, learning_rate=1e-3,
                         per_device_train_batch_size=2, max_steps=1, use_cpu=True, report_to="none",
                         save_strategy="no", remove_unused_columns=False)
model = Toy()
names = {id(p): n for n, p in model.named_parameters()}
trainer = Trainer(model=model, args=args, train_dataset=rows)
trainer.train()
zero = trainer.model_wrapped.optimizer  # DeepSpeed's ZeRO-3 wrapper around the optimizer it steps
basic = zero.optimizer
groups = [{"weight_decay": g["weight_decay"], "params": sorted(names[id(p)] for p in params)}
          for g, params in zip(basic.param_groups, zero.fp16_groups)]
print("RESULT " + json.dumps({"optimizer": type(basic).__module__ + "." + type(basic).__qualname__,
                              "stage": type(zero).__name__, "groups": groups}))
'''


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_zero3_steps_the_trainers_adamw_with_its_no_decay_group(tmp_path):
    config = json.loads((CONFIGS / "zero3.json").read_text())
    assert "optimizer" not in config and config["zero_optimization"]["stage"] == 3
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    res = subprocess.run([sys.executable, str(probe), str(CONFIGS / "zero3.json"), str(tmp_path / "out")],
                         cwd=REPO, capture_output=True, text=True, timeout=840,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert res.returncode == 0 and lines, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT "):])
    assert result["stage"] == "DeepSpeedZeroOptimizer_Stage3"
    assert result["optimizer"] == "torch.optim.adamw.AdamW"  # the trainer's, not one DeepSpeed built
    groups = {g["weight_decay"]: g["params"] for g in result["groups"]}
    assert groups == {0.01: ["head.weight", "proj.weight"], 0.0: ["norm.bias", "norm.weight", "proj.bias"]}

