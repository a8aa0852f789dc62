"""The openai engine against a REAL vLLM OpenAI-compatible server on loopback serving the tiny model (the session's
one server, tests/conftest.py): its answers equal the offline hf engine's on real photos in float32 with
Qwen2.5-VL-Instruct's repetition penalty (in the checkpoint's generation config offline, in each request served);
then, behind the fault-injecting proxy, every item is answered or an error item, the reruns complete with the clean
answers, budgets stop cleanly and the key is written nowhere (the scenario of tests/infer/test_openai_engine.py, here with a real server upstream)."""
from __future__ import annotations

import json
import shutil

import pytest

from unifer.infer.runner import main as infer_main

pytest.importorskip("vllm")
pytest.importorskip("openai")
from test_openai_engine import FAKE_KEY, KEY_PIECES, check_faults_and_budgets, run_infer, write_qa  # noqa: E402

TOKENS = 48  # as tests/infer/test_infer_vllm.py: long enough for the repetition penalty to change greedy choices
PENALTY = '{"repetition_penalty": 1.05}'


@pytest.fixture(scope="module")
def penalty_model(tiny_model, tmp_path_factory):
    model = tmp_path_factory.mktemp("served") / "tiny-penalty"  # Qwen2.5-VL-Instruct's repetition_penalty 1.05
    shutil.copytree(tiny_model, model)
    cfg = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**cfg, "repetition_penalty": 1.05}))
    return model


@pytest.fixture(scope="module")
def server(tiny_vllm_server):
    """The session's one tiny-model server (tests/conftest.py); every request here sends the penalty itself."""
    base_url, _name, log = tiny_vllm_server
    return base_url, log


@pytest.mark.slow
def test_served_answers_equal_the_offline_engine(server, penalty_model, photos, tmp_path):
    base_url, _ = server
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths = [p.path for p in photos[:3]] + [broken] + [p.path for p in photos[-6:]]
    qa = write_qa(paths, tmp_path / "qa.json")
    hf_out = tmp_path / "hf.json"
    assert infer_main(["--engine", "hf", "--model", str(penalty_model), "--input", str(qa), "--output", str(hf_out),
                       "--image-root", "/", "--max-new-tokens", str(TOKENS), "--dtype", "float32",
                       "--batch-size", "8"], "rafdb") == 0
    hf = json.loads(hf_out.read_text(encoding="utf-8"))
    api_out = tmp_path / "api.json"
    assert run_infer(base_url, "tiny", qa, api_out, "--extra-body", PENALTY, "--concurrency", "4", tokens=TOKENS) == 0
    api = json.loads(api_out.read_text(encoding="utf-8"))

    assert api[3] == hf[3] and api[3]["error"] is True  # the unreadable image: the same error item
    answered = [i for i in range(len(paths)) if i != 3]
    assert all("error" not in api[i] and api[i]["usage"]["completion_tokens"] > 0 for i in answered)
    # As vllm = hf offline (tests/infer/test_infer_vllm.py): one near-tie flip allowed for other CPUs' kernels; a
    # systematic difference (image bytes, template, penalty, decoding) breaks most items.
    same = sum(api[i]["model_response"] == hf[i]["model_response"] for i in answered)
    assert same >= len(answered) - 1, [(hf[i]["model_response"], api[i]["model_response"]) for i in answered]
    assert len({api[i]["model_response"] for i in answered}) >= len(answered) - 1, "answers depend on the image"


@pytest.mark.slow
def test_faults_reruns_budgets_and_key_against_the_real_server(server, photos, tmp_path, monkeypatch, capsys,
                                                               caplog):
    base_url, server_log = server
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    qa = write_qa([p.path for p in photos[:16]], tmp_path / "qa.json")
    clean_out = tmp_path / "run" / "clean.json"
    assert run_infer(base_url, "tiny", qa, clean_out, "--extra-body", PENALTY, "--concurrency", "8",
                     tokens=TOKENS) == 0
    clean = json.loads(clean_out.read_text(encoding="utf-8"))
    assert not any(r.get("error") for r in clean)
    check_faults_and_budgets(base_url, "tiny", qa, tmp_path / "run", clean, capsys, caplog, timeout_s=15.0,
                             tokens=TOKENS, extra=("--extra-body", PENALTY))
    assert not [n for n, piece in KEY_PIECES.items() if piece.encode() in server_log.read_bytes()]


@pytest.mark.slow
def test_bench_section_measures_concurrencies_side_by_side(server, penalty_model, tmp_path):
    from argparse import Namespace

    from unifer.bench.openai_api import openai_markdown, run_openai

    args = Namespace(items=6, max_new_tokens=16, synthetic_images=False, openai_concurrency=[1, 3])
    sec = run_openai(args, penalty_model, tmp_path / "bench", server=(server[0], "tiny"))
    one, three = sec["variants"]
    assert (one["concurrency"], three["concurrency"]) == (1, 3)
    for row in (one, three):
        assert row["items"] == 6 and row["errors"] == 0 and row["items_per_s"] > 0
        assert 0 < row["completion_tokens"] <= 6 * 16
    assert three["same_answers"] == 1.0 and one["speedup"] == 1.0  # concurrency changes speed, not answers
    md = openai_markdown(sec)
    assert "| 1 | 6 | 0 |" in md and "| 3 | 6 | 0 |" in md
