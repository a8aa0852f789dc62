"""``unifer judge`` against the REAL vLLM OpenAI server on loopback serving the tiny model (the session fixture
``tiny_vllm_server``), its ratings constrained by vLLM's structured outputs so every rating parses: all items rated
(regex) or rated / error items with a reason (JSON schema), the ranges respected, a budget stop and a SIGKILL
each rerun to what one run writes, faults survived, and the key written nowhere."""
from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from helpers import PY, REPO, answer, clean_env

from unifer.cli import main as unifer_main
from unifer.data.sets import get_set
from unifer.scoring.reasoning_report import judge_path, read_judge_lines

pytest.importorskip("vllm")
pytest.importorskip("openai")
from fault_proxy import FaultProxy  # noqa: E402
from helpers import FAKE_KEY, assert_key_nowhere  # noqa: E402

RAF = get_set("rafdb")
THINKS = ["Raised cheeks and a broad smile.", "The brows are drawn together and the lips pressed.",
          "Inner brows raised, corners of the mouth turned down.", "Wide open eyes and the mouth open.",
          "The face looks relaxed.", "A wrinkled nose."]


def write_results(photos, folder):
    recs = []
    for n, p in enumerate(photos[:6]):
        label = RAF.labels[n % len(RAF.labels)]
        recs.append({"image_path": str(p.path), "true_label": label, "prompt": RAF.prompt,
                     "candidate_labels": list(RAF.labels), "model_response": answer(label, THINKS[n])})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rafdb_tiny_results.json"
    path.write_text(json.dumps(recs), encoding="utf-8")
    return path


def judge(base_url, results, output, *extra):
    return unifer_main(["judge", "--set", "rafdb", "--results", str(results), "--output", str(output),
                        "--engine", "openai", "--base-url", base_url, "--model", "tiny", "--with-image",
                        "--concurrency", "1", "--max-retries", "3", "--retry-base-delay", "0.05", *extra])


def check_ranges(lines):
    for x in lines:
        assert x["judge"] == "tiny/ferbench-reasoning/v1"
        if "error" in x:
            assert x["error"] and not any(k in x for k in ("visual_grounding", "hallucination"))
            continue
        assert all(isinstance(x[k], int) and 1 <= x[k] <= 5 for k in ("visual_grounding", "consistency",
                                                                        "specificity"))
        assert isinstance(x["hallucination"], bool) and x["rationale"]


@pytest.mark.slow
def test_judge_against_the_real_server(tiny_vllm_server, photos, tmp_path, monkeypatch, capsys):
    base_url, served, _ = tiny_vllm_server
    assert served == "tiny"
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    results = write_results(photos, tmp_path / "run")

    clean = tmp_path / "run" / "clean.jsonl"
    assert judge(base_url, results, clean, "--structured", "regex") == 0
    lines = read_judge_lines(clean)
    assert len(lines) == 6 and not [x for x in lines if "error" in x], lines  # the regex: every rating parses
    check_ranges(lines)

    # the JSON schema: every item rated or an error line with its reason, never a default
    schema = tmp_path / "run" / "schema.jsonl"
    assert judge(base_url, results, schema, "--structured", "json") == 0
    lines = read_judge_lines(schema)
    assert len(lines) == 6
    check_ranges(lines)

    # a request budget stops the run cleanly; the rerun finishes it, byte for byte the uninterrupted run's
    resumed = tmp_path / "run" / "resumed.jsonl"
    assert judge(base_url, results, resumed, "--structured", "regex", "--max-requests", "2", "--batch-size",
                 "3") == 0
    assert "pending (stopped: --max-requests 2 reached)" in capsys.readouterr().out
    assert 0 < len(read_judge_lines(resumed)) < 6
    assert judge(base_url, results, resumed, "--structured", "regex") == 0
    assert resumed.read_bytes() == clean.read_bytes()

    # SIGKILL mid-run (a process of its own, one rating per batch); the rerun ends byte for byte as one run
    killed = tmp_path / "run" / "killed.jsonl"
    argv = [PY, "-m", "unifer", "judge", "--set", "rafdb", "--results", str(results), "--output", str(killed),
            "--engine", "openai", "--base-url", base_url, "--model", "tiny", "--with-image", "--concurrency", "1",
            "--structured", "regex", "--batch-size", "1"]
    proc = subprocess.Popen(argv, cwd=REPO, env=clean_env(OPENAI_API_KEY=FAKE_KEY), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and len(read_judge_lines(killed)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 2 <= len(read_judge_lines(killed)) < 6, "the kill came after the run (a slower machine?)"
    assert judge(base_url, results, killed, "--structured", "regex") == 0
    assert killed.read_bytes() == clean.read_bytes()

    # faults between us and the server: retried by the openai engine, the same ratings in the end
    faulty = tmp_path / "run" / "faulty.jsonl"
    with FaultProxy(base_url, {0: "500", 1: "drop", 3: "429", 4: "truncate"}, retry_after="0") as proxy:
        assert judge(proxy.base_url, results, faulty, "--structured", "regex") == 0
    got = {x["image_path"]: {k: v for k, v in x.items() if k not in ("key",)} for x in read_judge_lines(faulty)}
    want = {x["image_path"]: {k: v for k, v in x.items() if k not in ("key",)} for x in read_judge_lines(clean)}
    assert got == want  # the key differs (another base URL is another judge), the ratings do not
    assert_key_nowhere(tmp_path / "run", capsys.readouterr().out, "judge")
    assert judge_path(results).name == "rafdb_tiny_judge.jsonl"
