"""Sampling and structured output through a REAL vLLM OpenAI-compatible server serving the random tiny model (the
session's ``tiny_vllm_server``): n samples per request, reproducible by seed, and a regular expression or a list of
choices that makes the random model answer ``<answer>X</answer>`` with X a candidate label."""
from __future__ import annotations

import re

import pytest

from unifer.data.images import load_image
from unifer.data.sets import get_set
from unifer.infer.engines import Decoding, GenerationSettings, make_engine

pytest.importorskip("vllm")
pytest.importorskip("openai")

LABELS = get_set("rafdb").labels


@pytest.fixture(scope="module")
def served(tiny_vllm_server):
    base_url, name, _ = tiny_vllm_server
    engine = make_engine("openai", name, GenerationSettings(16, 1.0, (), None), {"base_url": base_url})
    yield engine
    engine.close()


@pytest.mark.slow
def test_served_sampling_and_structured_output(served, photos):
    images = [load_image(p.path) for p in photos[:2]]
    prompts = [get_set("rafdb").prompt] * 2
    two = Decoding(max_new_tokens=16, temperature=1.0, top_p=0.95, n=2)
    first = served.sample(images, prompts, two, seeds=[11, 12])
    assert [len(s) for s in first] == [2, 2] and all(a.error is None and a.text for s in first for a in s)
    again = served.sample(images, prompts, two, seeds=[11, 12])
    assert [[a.text for a in s] for s in again] == [[a.text for a in s] for s in first], "a seed reproduces"
    other = served.sample(images, prompts, two, seeds=[21, 22])
    assert [[a.text for a in s] for s in other] != [[a.text for a in s] for s in first]

    # the budget leaves room for the longest answer in any tokenization a sampled path may take
    pattern = "<answer>(" + "|".join(LABELS) + ")</answer>"
    forced = served.generate(images, prompts, Decoding(max_new_tokens=48, regex=pattern))
    assert all(re.fullmatch(pattern, a.text) and a.stop_reason == "stop" for a in forced), [a.text for a in forced]
    sampled = served.sample(images[:1], prompts[:1], two.with_(max_new_tokens=48, regex=pattern, seed=5))
    assert all(re.fullmatch(pattern, a.text) for a in sampled[0]), [a.text for a in sampled[0]]
    chosen = served.generate(images, prompts, Decoding(max_new_tokens=48, choice=LABELS))
    assert all(a.text in LABELS for a in chosen), [a.text for a in chosen]
