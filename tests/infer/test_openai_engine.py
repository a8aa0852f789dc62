"""The openai engine through the real runner, against a pure-Python chat-completions upstream (fast) behind the
fault-injecting proxy of tests/fault_proxy.py: every item answered or an error item, nothing lost, the rerun
completes with the clean run's answers, budgets stop cleanly, usage is summed, and the key is written nowhere.
The same checks against a real vLLM server are in tests/infer/test_openai_engine_vllm.py."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from unifer.data.images import load_image
from unifer.data.sets import get_set
from unifer.errors import UniferError
from unifer.infer.engines.openai import KeyScrubber, backoff_delay, image_data_url, parse_retry_after
from unifer.infer.runner import main as infer_main

pytest.importorskip("openai")
from fault_proxy import FakeUpstream, FaultProxy  # noqa: E402  (tests/ is on sys.path under pytest)
from helpers import FAKE_KEY, KEY_PIECES, assert_key_nowhere  # noqa: E402,F401

# Every fault kind early on, interleaved with clean requests; "hang" outlasts the request timeout.
FAULT_PLAN = {0: "429", 1: "500", 2: "503", 3: "drop", 4: "truncate", 6: "hang", 7: "sticky500",
              9: "echo-key-400", 11: "429", 12: "drop", 14: "truncate", 15: "503"}

def write_qa(paths, out: Path) -> Path:
    qa = []
    for n, p in enumerate(paths):
        s = get_set(("rafdb", "ferplus")[n % 2])
        qa.append({"image_path": str(p), "true_label": s.labels[0], "prompt": s.prompt,
                   "candidate_labels": list(s.labels)})
    out.write_text(json.dumps(qa), encoding="utf-8")
    return out


def run_infer(base_url, model, qa, out, *extra, tokens=48):
    argv = ["--engine", "openai", "--base-url", base_url, "--model", model, "--input", str(qa), "--output",
            str(out), "--image-root", "/", "--max-new-tokens", str(tokens), *extra]
    return infer_main(argv, "rafdb")


def usage_sum(results) -> tuple[int, int]:
    return (sum(r["usage"]["prompt_tokens"] for r in results if "usage" in r),
            sum(r["usage"]["completion_tokens"] for r in results if "usage" in r))


def check_faults_and_budgets(base_url, model, qa, folder: Path, clean: list[dict], capsys, caplog,
                             timeout_s: float = 2.0, tokens=48, extra=()):
    """The shared scenario: a faulty run, its --retry-errors rerun, a --max-requests stop and its rerun."""
    caplog.set_level(logging.DEBUG)
    fast = ["--concurrency", "4", "--max-retries", "2", "--retry-base-delay", "0.05",
            "--request-timeout", str(timeout_s), *extra]
    out = folder / "faulty.json"
    with FaultProxy(base_url, FAULT_PLAN, hang_s=timeout_s + 2) as proxy:
        assert run_infer(proxy.base_url, model, qa, out, *fast, tokens=tokens) == 0
        first = json.loads(out.read_text(encoding="utf-8"))
        # nothing lost: every item is there, in order, answered as the clean run answered it or an error item
        assert [r["image_path"] for r in first] == [r["image_path"] for r in clean]
        errors = [i for i, r in enumerate(first) if r.get("error") is True]
        for i, r in enumerate(first):
            if i in errors:
                assert r["model_response"].startswith("ERROR: ") and len(r["model_response"]) > 12
            else:
                assert r["model_response"] == clean[i]["model_response"], i
        reasons = " ".join(first[i]["model_response"] for i in errors)
        # Which item meets which fault depends on arrival order under concurrency: the doomed body fails all its
        # attempts (or meets the echoed-key 400, which is not retried); an unlucky item may exhaust its retries.
        assert 1 <= len(errors) <= 4, reasons  # the retries saved the rest
        if "HTTP 400" in reasons:
            assert "Incorrect API key provided: [api key]" in reasons
        assert proxy.authorizations == {f"Bearer {FAKE_KEY}"}  # the key was really sent, and echoed back...
        assert (9, "echo-key-400") in proxy.log
        said = capsys.readouterr()
        printed = said.out + said.err + caplog.text
        assert_key_nowhere(folder, printed, "after the faulty run")  # ...and written nowhere, error items included
        proxy.plan.clear()
        proxy.doomed.clear()
        # a rerun answers the error items again when asked, and then equals the clean run
        assert run_infer(proxy.base_url, model, qa, out, *fast, "--retry-errors", tokens=tokens) == 0
        assert json.loads(out.read_text(encoding="utf-8")) == clean
        said = capsys.readouterr()
        printed += said.out + said.err

        # --max-requests: stops cleanly, keeps everything; the rerun finishes; usage sums in the summary line
        budget = folder / "budget.json"
        assert run_infer(proxy.base_url, model, qa, budget, *fast, "--max-requests", "5", tokens=tokens) == 3
        said = capsys.readouterr()
        printed += said.out + said.err
        assert "stopped, --max-requests 5 reached: 5 of" in said.out and not budget.exists()
        assert run_infer(proxy.base_url, model, qa, budget, *fast, tokens=tokens) == 0
        final = json.loads(budget.read_text(encoding="utf-8"))
        assert final == clean
        prompt, completion = usage_sum(final)
        assert prompt > 0 and completion > 0
        said = capsys.readouterr()
        printed += said.out + said.err
        assert f"usage: {prompt} prompt + {completion} completion tokens over {len(final)} items" in said.out
    # every run's stdout and stderr, the whole log, every file of the run's folder: no piece of the key
    assert_key_nowhere(folder, printed + caplog.text, "after the reruns")
    return first


def test_faults_budgets_and_key_against_a_fake_upstream(photos, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    paths = [p.path for p in photos[:16]]
    qa = write_qa(paths, tmp_path / "qa.json")
    with FakeUpstream() as upstream:
        clean_out = tmp_path / "clean.json"
        assert run_infer(upstream.base_url, "fake", qa, clean_out, "--extra-body", '{"repetition_penalty": 1.05}',
                         "--concurrency", "8") == 0
        clean = json.loads(clean_out.read_text(encoding="utf-8"))
        # the request: the image (a lossless PNG of the 224×224 image every engine sees) then the prompt, greedy
        assert len(upstream.requests) == len(paths)
        records = json.loads(qa.read_text(encoding="utf-8"))
        expected = sorted((image_data_url(load_image(r["image_path"])), r["prompt"]) for r in records)
        sent = []
        for req in upstream.requests:
            assert req["temperature"] == 0 and req["max_tokens"] == 48 and req["repetition_penalty"] == 1.05
            assert len(req["messages"]) == 1 and req["messages"][0]["role"] == "user"
            image, text = req["messages"][0]["content"]
            assert image["type"] == "image_url" and text["type"] == "text"
            sent.append((image["image_url"]["url"], text["text"]))
        assert sorted(sent) == expected  # each image with its own record's FERBench prompt, word for word
        assert {t for _, t in sent} == {get_set("rafdb").prompt, get_set("ferplus").prompt}
        for p, r in zip(paths, clean):
            assert r["model_response"] == FakeUpstream.answer_for(image_data_url(load_image(p)))
            assert r["usage"]["completion_tokens"] == 3
        check_faults_and_budgets(upstream.base_url, "fake", qa, tmp_path, clean, capsys, caplog, timeout_s=3.0,
                                 extra=("--extra-body", '{"repetition_penalty": 1.05}'))


def test_retry_after_is_honoured_and_backoff_is_jittered(photos, tmp_path):
    qa = write_qa([photos[0].path], tmp_path / "qa.json")
    with FakeUpstream() as upstream, FaultProxy(upstream.base_url, {0: "429"}, retry_after="1.5") as proxy:
        t0 = time.monotonic()
        assert run_infer(proxy.base_url, "fake", qa, tmp_path / "out.json", "--retry-base-delay", "0.01") == 0
        assert time.monotonic() - t0 >= 1.5  # waited what the server asked, not the 10 ms backoff
        assert [what for _, what in proxy.log] == ["429", "ok"]
    # one at a time, so the faults meet known items: item 0 waits out a 429 then meets a doomed body thrice
    qa = write_qa([photos[0].path, photos[1].path], tmp_path / "qa2.json")
    with FakeUpstream() as upstream, FaultProxy(upstream.base_url, {0: "429", 1: "sticky500"}, retry_after="0") as proxy:
        assert run_infer(proxy.base_url, "fake", qa, tmp_path / "out2.json", "--retry-base-delay", "0.01",
                         "--max-retries", "2", "--concurrency", "1") == 0
        assert [what for _, what in proxy.log] == ["429", "sticky500", "sticky500", "ok"]
    first, second = json.loads((tmp_path / "out2.json").read_text(encoding="utf-8"))
    assert first["error"] is True
    assert first["model_response"] == "ERROR: failed after 3 attempts: HTTP 500: Error code: 500 - internal error (injected)"
    assert "error" not in second and second["model_response"].startswith("<answer>")
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25 and parse_retry_after({}) is None
    import random

    rng = random.Random(0)
    delays = [backoff_delay(a, 1.0, 60.0, rng) for a in range(8) for _ in range(20)]
    assert all(0 <= d <= 60 for d in delays) and len(set(delays)) == len(delays)
    assert max(backoff_delay(2, 1.0, 60.0, rng) for _ in range(50)) <= 4.0


def test_key_handling(tmp_path, monkeypatch, photos):
    qa = write_qa([photos[0].path], tmp_path / "qa.json")
    monkeypatch.delenv("MY_VENDOR_KEY", raising=False)
    with pytest.raises(UniferError, match=r"\$MY_VENDOR_KEY is not set") as e:
        run_infer("https://api.example.invalid/v1", "gpt-x", qa, tmp_path / "o.json", "--api-key-env", "MY_VENDOR_KEY")
    assert "\n" not in str(e.value)
    scrub = KeyScrubber(FAKE_KEY)
    said = scrub(f"bad key {FAKE_KEY}; seen sk-...{FAKE_KEY[-12:]} and {FAKE_KEY[:14]}****; model gpt-4o-mini")
    assert FAKE_KEY[-12:] not in said and FAKE_KEY[:14] not in said and "gpt-4o-mini" in said
    # a loopback server without a key: the placeholder, no error (the fake upstream accepts anything)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeUpstream() as upstream:
        assert run_infer(upstream.base_url, "fake", qa, tmp_path / "local.json") == 0
        # for vendors that want them: JPEG and a detail level
        assert run_infer(upstream.base_url, "fake", qa, tmp_path / "jpeg.json", "--image-format", "jpeg",
                         "--image-detail", "low") == 0
        png, jpeg = (r["messages"][0]["content"][0]["image_url"] for r in upstream.requests)
    assert png["url"].startswith("data:image/png;base64,") and "detail" not in png
    assert jpeg["url"].startswith("data:image/jpeg;base64,/9j/") and jpeg["detail"] == "low"


def test_token_budget_stops_cleanly_and_the_rerun_finishes(photos, tmp_path, capsys):
    qa = write_qa([p.path for p in photos[:4]], tmp_path / "qa.json")
    out = tmp_path / "out.json"
    with FakeUpstream() as upstream:
        # one at a time: the first answer's tokens spend the budget, nothing more is sent
        assert run_infer(upstream.base_url, "fake", qa, out, "--concurrency", "1", "--max-tokens-budget", "10") == 3
        assert len(upstream.requests) == 1 and not out.exists()
        assert "stopped, --max-tokens-budget 10 reached" in capsys.readouterr().out
        assert run_infer(upstream.base_url, "fake", qa, out, "--concurrency", "1") == 0
        assert len(upstream.requests) == 4  # the rerun sent only the 3 items left
    results = json.loads(out.read_text(encoding="utf-8"))
    assert [r["model_response"] for r in results] == [
        FakeUpstream.answer_for(image_data_url(load_image(p.path))) for p in photos[:4]]
    with pytest.raises(UniferError, match="--engine openai needs --base-url URL and --model NAME"):
        infer_main(["--engine", "openai", "--model", "x", "--input", str(qa)], "rafdb")


def test_a_refused_endpoint_stops_the_run_and_keeps_earlier_batches(photos, tmp_path):
    qa = write_qa([p.path for p in photos[:4]], tmp_path / "qa.json")
    out = tmp_path / "out.json"
    with FakeUpstream() as upstream, FaultProxy(upstream.base_url, {2: "401"}) as proxy:
        args = ("--concurrency", "1", "--batch-size", "2")
        with pytest.raises(UniferError, match=r"refused the request \(HTTP 401: .*invalid api key"):
            run_infer(proxy.base_url, "fake", qa, out, *args)
        assert [what for _, what in proxy.log] == ["ok", "ok", "401"]  # nothing sent after the refusal
        assert run_infer(proxy.base_url, "fake", qa, out, *args) == 0  # the first batch was kept
        assert len(proxy.log) == 5
    assert all("error" not in r for r in json.loads(out.read_text(encoding="utf-8")))
