"""GRPO rewards: the paper's ``accuracy`` and ``format`` exactly, plus opt-in strict variants.

Every function takes completions as TRL passes them (one ``[{"role": "assistant", "content": str}]`` list per
completion) or as plain strings, and returns one float per completion.

The paper's rules (``open_r1/grpo.py``):

- ``accuracy``: a text's answer is its first ``<answer>…</answer>`` (``.`` matches newlines), stripped, or the whole
  text stripped when it has none. 1.0 when the completion's answer equals the solution's answer exactly, else 0.0.
  With ``DEBUG_MODE=true`` every rollout is appended to ``LOG_PATH`` with its reward and solution.
- ``format``: 1.0 when the WHOLE completion matches ``<think>.*?</think>\\s*<answer>.*?</answer>``, else 0.0.

Beyond the paper (opt-in by name, never the default), closing reward hacks seen in peer projects:

- ``accuracy_strict``: case and whitespace runs do not matter, but the completion must hold exactly one
  ``<answer>`` block whose content is not empty; no fallback to the whole text (a bare label, or two answer blocks
  of which the first is right, earn 0, and a hedge such as "happiness or sadness" never equals a label).
- ``format_strict``: nothing but ``<think>T</think>`` (whitespace) ``<answer>A</answer>``: each tag exactly once,
  T and A non-blank and free of the four tags. Whatever it pays 1.0, ``format`` pays 1.0 too.

``resolve_reward_funcs`` turns ``--reward_funcs`` names into functions; besides the registry names it accepts
``module:function`` (or ``module.function``) for a reward of the user's own.
"""
from __future__ import annotations

import importlib
import logging
import os
import re
from datetime import datetime
from typing import Callable, Iterable

from unifer.data.records import REWARD_ANSWER_PATTERN, extract_answer  # shared with the data check
from unifer.errors import UniferError

log = logging.getLogger(__name__)

FORMAT_PATTERN = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
STRICT_FORMAT_PATTERN = re.compile(r"<think>(.*?)</think>\s*<answer>(.*?)</answer>", re.DOTALL)
TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_WHITESPACE_RUN = re.compile(r"\s+")

RewardFunc = Callable[..., list]


def completion_text(completion) -> str:
    """The text of one completion: a string as is; TRL's message list → its first message's content (the paper
    reads ``completion[0]["content"]``); content given as parts → the text parts joined."""
    if isinstance(completion, str):
        return completion
    message = completion
    if isinstance(completion, (list, tuple)):
        if not completion:
            return ""
        message = completion[0]
    if isinstance(message, dict):
        content = message.get("content", "")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        return "" if content is None else str(content)
    return str(message)


def normalize_answer(text: str) -> str:
    """Case-folded, whitespace runs collapsed to one space, stripped (for the strict accuracy)."""
    return _WHITESPACE_RUN.sub(" ", text).strip().casefold()


def strict_answer(text: str) -> str | None:
    """The content of the ONLY <answer> block, normalised; None when there is not exactly one, or it is empty."""
    if text.count("<answer>") != 1 or text.count("</answer>") != 1:
        return None
    match = REWARD_ANSWER_PATTERN.search(text)
    if match is None:
        return None
    answer = normalize_answer(match.group(1))
    return answer or None


def _debug_log(kind: str, contents: list[str], solutions: list[str], rewards: list[float]) -> None:
    """The paper's DEBUG_MODE trace: one block per rollout appended to LOG_PATH."""
    if os.getenv("DEBUG_MODE") != "true":
        return
    path = os.getenv("LOG_PATH")
    if not path:
        log.warning("DEBUG_MODE=true but LOG_PATH is not set: rollouts are not logged")
        return
    stamp = datetime.now().strftime("%d-%H-%M-%S-%f")
    with open(path, "a", encoding="utf-8") as f:
        for content, sol, reward in zip(contents, solutions, rewards):
            f.write(f"------------- {stamp} {kind} reward: {reward} -------------\n")
            f.write(f"Content: {content}\n")
            f.write(f"Solution: {sol}\n")


def accuracy_reward(completions, solution, **kwargs) -> list[float]:
    """The paper's accuracy: exact, case-sensitive equality of the extracted answers."""
    contents = [completion_text(c) for c in completions]
    rewards = [1.0 if extract_answer(c) == extract_answer(s) else 0.0 for c, s in zip(contents, solution)]
    _debug_log("Accuracy", contents, list(solution), rewards)
    return rewards


def format_reward(completions, **kwargs) -> list[float]:
    """The paper's format: the whole completion is <think>…</think> (whitespace) <answer>…</answer>."""
    return [1.0 if FORMAT_PATTERN.fullmatch(completion_text(c)) else 0.0 for c in completions]


def accuracy_strict_reward(completions, solution, **kwargs) -> list[float]:
    """Opt-in: one non-empty <answer> block equal to the solution up to case and whitespace; hedges earn 0."""
    contents = [completion_text(c) for c in completions]
    rewards = []
    for content, sol in zip(contents, solution):
        answer = strict_answer(content)
        rewards.append(1.0 if answer is not None and answer == normalize_answer(extract_answer(sol)) else 0.0)
    _debug_log("Strict accuracy", contents, list(solution), rewards)
    return rewards


def is_strict_format(text: str) -> bool:
    match = STRICT_FORMAT_PATTERN.fullmatch(text)
    if match is None:
        return False
    for part in match.groups():
        if not part.strip() or any(tag in part for tag in TAGS):
            return False
    return True


def format_strict_reward(completions, **kwargs) -> list[float]:
    """Opt-in: nothing outside the two blocks, each tag once, both blocks non-blank."""
    return [1.0 if is_strict_format(completion_text(c)) else 0.0 for c in completions]


REWARD_FUNCS: dict[str, RewardFunc] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "accuracy_strict": accuracy_strict_reward,
    "format_strict": format_strict_reward,
}
#: The paper's ``--reward_funcs`` default.
DEFAULT_REWARD_FUNCS = ("accuracy", "format")


def load_reward_spec(spec: str) -> RewardFunc:
    """``package.module:function`` (or ``package.module.function``) → the function, importable from sys.path."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise UniferError(f"unknown reward {spec!r}; choose from {', '.join(REWARD_FUNCS)} or give module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UniferError(f"reward {spec!r}: cannot import {module_name!r} ({e})") from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise UniferError(f"reward {spec!r}: {module_name!r} has no function {attr!r}")
    return func


def resolve_reward_funcs(names: Iterable[str]) -> list[RewardFunc]:
    """Registry names and ``module:function`` specs → reward functions, in order."""
    funcs = []
    for name in names:
        funcs.append(REWARD_FUNCS[name] if name in REWARD_FUNCS else load_reward_spec(name))
    if not funcs:
        raise UniferError("no reward functions given (--reward_funcs)")
    return funcs
