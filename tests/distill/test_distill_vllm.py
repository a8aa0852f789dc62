"""`unifer distill` with a real teacher: the tiny model served by vLLM's OpenAI server on loopback. K samples per
face in one request (n), seeded per face, so a second run asks and gets the same; every sample's acceptance and
every pass rate equal the rewards computed here from the samples."""
from __future__ import annotations

import json

import pytest
from distill_faces import write_faces
from helpers import in_process

from unifer.cli import main as unifer_main
from unifer.infer.progress import read_progress
from unifer.rewards import accuracy_reward, format_reward

pytestmark = pytest.mark.slow  # the shared vLLM server (~100 s to start, once per run)


def test_a_served_teacher_seeded_per_face_and_scored_by_the_rewards(tiny_vllm_server, tmp_path):
    base_url, served, _ = tiny_vllm_server
    root = tmp_path / "root"
    folder, _ = write_faces(root, tmp_path, broken=False)
    outs = []
    for name in ("first", "second"):
        out = tmp_path / name
        rc, _, err = in_process(unifer_main, "distill", "--records", folder, "--image-root", root, "--set", "rafdb",
                                "--engine", "openai", "--base-url", base_url, "--model", served, "--samples", "3",
                                "--temperature", "1.0", "--max-new-tokens", "12", "--seed", "3", "--out", out)
        assert rc == 0, err
        outs.append(out)
    done = read_progress(outs[0] / "samples.progress.jsonl")[1]
    assert done == read_progress(outs[1] / "samples.progress.jsonl")[1]  # the same seeds, the same samples
    assert len(done) == 5 and all(len(r["samples"]) == 3 for r in done.values())
    accepted, rates = 0, {}
    for r in done.values():
        texts = [s["text"] for s in r["samples"]]
        acc = accuracy_reward(texts, [f"<answer>{r['label']}</answer>"] * 3)
        fmt = format_reward(texts)
        accepted += sum(a * f for a, f in zip(acc, fmt))
        rates[r["image_path"]] = sum(acc) / 3
    stats = json.loads((outs[0] / "stats.json").read_text())
    assert stats["accepted_samples"] == accepted and stats["samples"] == 15
    rlvr = json.loads((outs[0] / "rlvr.json").read_text())
    assert {r["image_path"]: r["pass_rate"] for r in rlvr} == pytest.approx(rates)
    rc, o, e = in_process(unifer_main, "data", "check", outs[0] / "rlvr.json", "--kind", "rlvr", "--image-root", root,
                          "--no-progress")
    assert rc == 0, o + e
