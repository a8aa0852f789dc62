"""Rewards: agreement with the paper's functions on adversarial completions, the rules by hand, strict variants."""
from __future__ import annotations

import random
import re

import pytest

from unifer.errors import UniferError
from unifer.rewards import (
    DEFAULT_REWARD_FUNCS,
    REWARD_FUNCS,
    accuracy_reward,
    accuracy_strict_reward,
    format_reward,
    format_strict_reward,
    resolve_reward_funcs,
)


# --- The paper's two reward functions, restated from open_r1/grpo.py (the held-out reference) -----------------
def paper_accuracy(completions, solution):
    out = []
    for completion, sol in zip(completions, solution):
        content = completion[0]["content"]
        reward = 0.0
        try:
            m = re.search(r"<answer>(.*?)</answer>", sol, re.DOTALL)
            truth = m.group(1).strip() if m else sol.strip()
            m = re.search(r"<answer>(.*?)</answer>", content, re.DOTALL)
            said = m.group(1).strip() if m else content.strip()
            if said == truth:
                reward = 1.0
        except Exception:
            pass
        out.append(reward)
    return out


def paper_format(completions):
    pattern = r"<think>.*?</think>\s*<answer>.*?</answer>"
    return [1.0 if re.fullmatch(pattern, c[0]["content"], re.DOTALL) else 0.0 for c in completions]


# --- Adversarial completions ------------------------------------------------------------------------------------
LABELS = ["happiness", "Happiness", "HAPPINESS", "sadness", "neutral", "anger", "happy", "happiness or sadness"]
FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", "<Answer>", "</ANSWER>", "<answer >", "< answer>", "<think",
    "answer>", "</answer", "<", ">", "/", " ", "  ", "\n", "\n\n", "\t", "\r\n", "\u00a0", "\u2003", "\u200b",
    "reasoning", "The face shows", ".", ",", "or", "<think></think>", "<answer></answer>", "<<answer>>",
    "<answer><answer>", "</answer></answer>", "é", "😀", "\\s", ".*?", "$", "^",
] + LABELS


def adversarial_completions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = [
        "", " ", "happiness", " happiness\n", "<answer>happiness</answer>",
        "<think>x</think><answer>happiness</answer>", "<think>x</think>\n\n<answer> happiness </answer>",
        "<think>x</think><answer>happiness</answer>\n", " <think>x</think><answer>happiness</answer>",
        "<think>x</think>junk<answer>happiness</answer>", "<think></think><answer></answer>",
        "<think>a</think><answer>sadness</answer><answer>happiness</answer>",
        "<think>a</think><answer>happiness</answer> trailing <answer>x</answer>",
        "<think>a\n</think>\n<answer>\nhappiness\n</answer>", "<think>a</think><answer>happiness",
        "<answer>happiness</answer><think>a</think>", "<think><think>a</think></think><answer>happiness</answer>",
    ]
    while len(out) < n:
        k = rng.randint(1, 9)
        parts = [rng.choice(FRAGMENTS) for _ in range(k)]
        if rng.random() < 0.5:  # near-misses of the right shape
            pad = [rng.choice(["", " ", "\n", "\u00a0"]) for _ in range(2)]
            answer = rng.choice(LABELS) if rng.random() < 0.6 else "".join(parts[k // 2:])
            parts = ["<think>", *parts[: k // 2], "</think>", rng.choice(["", " ", "\n", "x"]), "<answer>",
                     pad[0], answer, pad[1], "</answer>"]
            if rng.random() < 0.3:
                parts.insert(rng.randint(0, len(parts)), rng.choice(FRAGMENTS))
        out.append("".join(parts))
    return out


SOLUTIONS = ["<answer>happiness</answer>", "happiness", " <answer> happiness \n</answer> ", "<answer>Happiness</answer>",
             "<answer>sadness</answer>", "<answer>happiness or sadness</answer>", "", "<answer></answer>"]


def as_trl(texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


@pytest.fixture(scope="module")
def adversarial():
    return adversarial_completions(600)


def test_accuracy_agrees_with_the_paper_on_every_adversarial_completion(adversarial):
    for sol in SOLUTIONS:
        sols = [sol] * len(adversarial)
        want = paper_accuracy(as_trl(adversarial), sols)
        assert accuracy_reward(as_trl(adversarial), sols) == want
        assert accuracy_reward(adversarial, sols) == want  # plain strings too
    # the set is not trivially all-zero: it holds both outcomes
    want = paper_accuracy(as_trl(adversarial), ["<answer>happiness</answer>"] * len(adversarial))
    assert 20 < sum(want) < len(adversarial) - 20


def test_format_agrees_with_the_paper_on_every_adversarial_completion(adversarial):
    want = paper_format(as_trl(adversarial))
    assert format_reward(as_trl(adversarial)) == want
    assert format_reward(adversarial) == want
    assert 50 < sum(want) < len(adversarial) - 50


@pytest.mark.parametrize(
    "completion, solution, reward",
    [
        ("<think>smile</think><answer>happiness</answer>", "<answer>happiness</answer>", 1.0),
        ("<think>smile</think><answer>Happiness</answer>", "<answer>happiness</answer>", 0.0),  # case-sensitive
        ("<answer>\n  happiness \n</answer>", "happiness", 1.0),  # stripped
        ("happiness", "<answer>happiness</answer>", 1.0),  # no tag: the whole text
        ("  happiness\n", "happiness", 1.0),
        ("<answer>happiness</answer><answer>sadness</answer>", "<answer>happiness</answer>", 1.0),  # first tag
        ("<answer>sadness</answer><answer>happiness</answer>", "<answer>happiness</answer>", 0.0),
        ("<answer>happiness or sadness</answer>", "<answer>happiness</answer>", 0.0),
        ("<answer>happiness", "<answer>happiness</answer>", 0.0),  # unclosed: the whole text
        ("<answer></answer>", "", 1.0),  # the paper pays an empty answer against an empty solution
        ("<answer>hap\npiness</answer>", "hap\npiness", 1.0),  # . matches newlines
    ],
)
def test_accuracy_rules(completion, solution, reward):
    assert accuracy_reward([[{"role": "assistant", "content": completion}]], [solution]) == [reward]
    assert accuracy_reward([completion], [solution]) == [reward]


@pytest.mark.parametrize(
    "completion, reward",
    [
        ("<think>a</think><answer>b</answer>", 1.0),
        ("<think>a</think>\n \t<answer>b</answer>", 1.0),
        ("<think></think><answer></answer>", 1.0),
        ("<think>multi\nline</think><answer>x\ny</answer>", 1.0),
        (" <think>a</think><answer>b</answer>", 0.0),  # whole text: no leading space
        ("<think>a</think><answer>b</answer>\n", 0.0),  # nor a trailing newline
        ("<think>a</think>x<answer>b</answer>", 0.0),
        ("<answer>b</answer>", 0.0),
        ("<think>a</think><answer>b</answer> junk <answer>c</answer>", 1.0),  # the paper lets this through
    ],
)
def test_format_rules(completion, reward):
    assert format_reward([completion]) == [reward]
    assert format_reward([[{"role": "assistant", "content": completion}]]) == [reward]


def test_debug_mode_appends_every_rollout_with_reward_and_solution(tmp_path, monkeypatch):
    log = tmp_path / "debug.txt"
    monkeypatch.setenv("DEBUG_MODE", "true")
    monkeypatch.setenv("LOG_PATH", str(log))
    accuracy_reward(["<answer>happiness</answer>", "<answer>x</answer>"], ["<answer>happiness</answer>"] * 2)
    accuracy_reward(["sadness"], ["sadness"])
    text = log.read_text()
    assert len(re.findall(r"^-{13} \d\d-\d\d-\d\d-\d\d-\d{6} Accuracy reward: (1\.0|0\.0) -{13}$", text, re.M)) == 3
    assert text.count("Content: <answer>x</answer>\nSolution: <answer>happiness</answer>\n") == 1
    assert "Accuracy reward: 0.0" in text and "Content: sadness\nSolution: sadness\n" in text
    monkeypatch.setenv("DEBUG_MODE", "false")
    accuracy_reward(["a"], ["a"])
    assert log.read_text() == text


# --- Strict variants --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "completion, solution, reward",
    [
        ("<think>a</think><answer>Happiness</answer>", "<answer>happiness</answer>", 1.0),  # case ignored
        ("<answer>  happiness\n</answer>", "happiness", 1.0),
        ("<answer>neutral  face</answer>", "<answer>Neutral face</answer>", 1.0),  # whitespace runs ignored
        ("<answer>happiness or sadness</answer>", "<answer>happiness</answer>", 0.0),  # hedge
        ("<answer>happiness</answer><answer>sadness</answer>", "<answer>happiness</answer>", 0.0),  # two tags
        ("<answer>sadness</answer> <answer>happiness</answer>", "<answer>happiness</answer>", 0.0),
        ("<answer></answer>", "", 0.0),  # empty answer
        ("<answer> </answer>", "<answer> </answer>", 0.0),
        ("happiness", "happiness", 0.0),  # no answer block: no fallback to the whole text
        ("<answer><answer>happiness</answer>", "happiness", 0.0),
        ("<answer>happiness</answer></answer>", "happiness", 0.0),
    ],
)
def test_strict_accuracy(completion, solution, reward):
    assert accuracy_strict_reward([[{"role": "assistant", "content": completion}]], [solution]) == [reward]


@pytest.mark.parametrize(
    "completion, reward",
    [
        ("<think>a</think><answer>b</answer>", 1.0),
        ("<think>a</think>\n<answer>b</answer>", 1.0),
        ("<think>a</think><answer>b</answer> junk <answer>c</answer>", 0.0),
        ("<think>a</think><answer>b</answer><think>c</think><answer>d</answer>", 0.0),
        ("<think></think><answer>b</answer>", 0.0),  # empty reasoning
        ("<think>a</think><answer> </answer>", 0.0),
        ("<think>a<answer>x</answer></think><answer>b</answer>", 0.0),  # tags inside the reasoning
        (" <think>a</think><answer>b</answer>", 0.0),
    ],
)
def test_strict_format(completion, reward):
    assert format_strict_reward([completion]) == [reward]


def test_strict_format_pays_only_where_the_paper_pays(adversarial):
    strict = format_strict_reward(adversarial)
    paper = format_reward(adversarial)
    assert all(p == 1.0 for s, p in zip(strict, paper) if s == 1.0)
    assert 0 < sum(strict) < sum(paper)  # strictly fewer: it closes real holes in this set


def test_registry_and_python_path_specs(tmp_path, monkeypatch):
    assert DEFAULT_REWARD_FUNCS == ("accuracy", "format")
    assert set(REWARD_FUNCS) == {"accuracy", "format", "accuracy_strict", "format_strict"}
    assert resolve_reward_funcs(["accuracy", "format"]) == [accuracy_reward, format_reward]
    (tmp_path / "my_rewards.py").write_text("def length(completions, **kw):\n    return [1.0 for _ in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (func,) = resolve_reward_funcs(["my_rewards:length"])
    assert func(["a", "b"]) == [1.0, 1.0]
    with pytest.raises(UniferError, match="unknown reward 'accurcy'"):
        resolve_reward_funcs(["accurcy"])
    with pytest.raises(UniferError, match="cannot import"):
        resolve_reward_funcs(["no_such_module:f"])
    with pytest.raises(UniferError, match="has no function"):
        resolve_reward_funcs(["my_rewards:nope"])
