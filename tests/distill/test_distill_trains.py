"""What `unifer distill` writes trains as it is: one SFT step through run_sft_fer.sh on cot.json and one GRPO step
through run_grpo_vllm.sh on rlvr.json (pass_rate included), on the tiny model."""
from __future__ import annotations

import json
import os

import pytest
from distill_faces import write_faces
from helpers import GRPO_SCRIPT, PY, SFT_SCRIPT, in_process, run

from unifer.cli import main as unifer_main

pytestmark = pytest.mark.slow  # two trainer start-ups (~1-2 min each on two cores)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distilled")
    root = tmp / "root"
    folder, script = write_faces(root, tmp, broken=False)
    out = tmp / "out"
    rc, _, err = in_process(unifer_main, "distill", "--records", folder, "--image-root", root, "--set", "rafdb",
                            "--engine", "fake", "--model", "teacher", "--fake-script", script, "--samples", "4",
                            "--keep", "2", "--out", out)
    assert rc == 0, err
    return root, out


def _train(script, env: dict, flags: list[str], cwd):
    return run(["bash", script, *flags], cwd=cwd, timeout=900, clean=False,
               **{"PYTHON": PY, "REPORT_TO": "none", "HF_HUB_OFFLINE": "1", "NPROC_PER_NODE": "1",
                  "MASTER_PORT": str(29600 + os.getpid() % 1000), **env})


@pytest.mark.timeout(900)
def test_one_sft_step_and_one_grpo_step_on_the_outputs(distilled, tiny_model, tmp_path):
    root, out = distilled
    assert len(json.loads((out / "cot.json").read_text())) == 5
    sft = _train(SFT_SCRIPT, {"MODEL_PATH": str(tiny_model), "DATA_PATH": str(out / "cot.json"),
                              "IMAGE_ROOT": str(root), "OUTPUT_DIR": str(tmp_path / "sft")},
                 ["--max_steps", "1", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
                  "--logging_steps", "1", "--gradient_checkpointing", "false", "--save_strategy", "no"], tmp_path)
    assert sft.returncode == 0, sft.stdout[-3000:] + sft.stderr[-3000:]
    assert json.loads((tmp_path / "sft" / "trainer_state.json").read_text())["global_step"] == 1
    grpo = _train(GRPO_SCRIPT, {"MODEL_PATH": str(tiny_model), "DATA_PATH": str(out / "rlvr.json"),
                                "IMAGE_ROOT": str(root), "OUTPUT_DIR": str(tmp_path / "grpo"), "VLLM_MODE": "none",
                                "VLLM_CPU_KVCACHE_SPACE": "1"},
                  ["--num_generations", "2", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps",
                   "1", "--max_completion_length", "4", "--logging_steps", "1", "--gradient_checkpointing", "false",
                   "--reward_funcs", "accuracy", "format", "--max_steps", "1", "--save_strategy", "no",
                   "--seed", "0"], "/")
    assert grpo.returncode == 0, grpo.stdout[-3000:] + grpo.stderr[-3000:]
    assert json.loads((tmp_path / "grpo" / "trainer_state.json").read_text())["global_step"] == 1
