"""What the report shows of each item: its labels under both protocols and the shape of its response.

Every label comes from ``unifer.scoring`` (``extract_label``), so an item's prediction on the page is the one the
scorer counted. The shape flags are the report's own, defined here once:

- **no <answer>**: the paper's answer pattern (``<answer>…</answer>`` on one line, case-insensitive — the one
  ``extract_label`` reads) finds nothing;
- **hedged**: the response opens two or more ``<answer>`` tags, or its first answer names two or more distinct
  labels of the set (its candidates or their listed synonyms, matched as whole words, case-insensitive:
  "happy or surprise", "sad, maybe angry"). A synonym counts as its label, so "happiness / joy" is one label,
  and whole words keep FERPlus' "unhappy" (a synonym of *sad*) from also counting as *happy*;
- **protocols disagree**: the paper and the strict protocol extract different labels;
- **error item**: ``"error": true`` (inference could not answer it); it has no prediction and the scorers skip it.
"""
from __future__ import annotations

import re
from functools import lru_cache

from unifer.data.sets import SETS, TOTAL_LABEL_MAP
from unifer.scoring.aggregate import PROTOCOLS, UNKNOWN, extract_label, extractor_for, is_error
from unifer.scoring.extract import ANSWER_PATTERN

#: Bits of an item's ``flags``: the filters of the page test them.
ERROR, HAS_ANSWER, HEDGED, PROTOCOLS_DISAGREE = 1, 2, 4, 8
ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)


@lru_cache(maxsize=None)
def label_words(set_key: str) -> tuple[re.Pattern, dict[str, str]]:
    """A whole-word pattern of the set's candidates and synonyms, and the word → label map (own names first)."""
    exact = extractor_for(set_key, "strict").exact  # candidate or synonym (lower case) → candidate
    words = sorted(exact, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b"), exact


def first_answer(response: str) -> str | None:
    """The first answer as the paper's pattern reads it (stripped), or None without one."""
    m = ANSWER_PATTERN.search(response)
    return m.group(1) if m else None


def is_hedged(response: str, set_key: str) -> bool:
    """Two ``<answer>`` tags, or a first answer naming two or more distinct labels (module docstring)."""
    if len(ANSWER_OPEN.findall(response)) >= 2:
        return True
    answer = first_answer(response)
    if answer is None:
        return False
    pattern, exact = label_words(set_key)
    return len({exact[w] for w in pattern.findall(answer.lower())}) >= 2


def describe(record: dict, set_key: str) -> dict:
    """One item: predictions under both protocols (None for an error item), its flags, its response text."""
    response = record.get("model_response")
    response = response if isinstance(response, str) else ("" if response is None else str(response))
    if is_error(record):
        return {"preds": None, "flags": ERROR, "response": response}
    preds = tuple(extract_label(response, set_key, p) for p in PROTOCOLS)
    flags = 0
    if first_answer(response) is not None:
        flags |= HAS_ANSWER
    if is_hedged(response, set_key):
        flags |= HEDGED
    if preds[0] != preds[1]:
        flags |= PROTOCOLS_DISAGREE
    return {"preds": preds, "flags": flags, "response": response}


def label_space(pooled_labels: list[str]) -> tuple[list[str], dict[str, int]]:
    """Every label string the page names (each set's candidates, the pooled ones, ``unknown``) and its index."""
    names: list[str] = []
    for s in SETS.values():
        names += [label for label in s.labels if label not in names]
    names += [label for label in [*pooled_labels, *TOTAL_LABEL_MAP.values(), UNKNOWN] if label not in names]
    return names, {n: i for i, n in enumerate(names)}


def pooled(label: str) -> str:
    """A set's spelling in the pooled vocabulary (angry→anger, happy→happiness, sad→sadness), as ``score_total``."""
    return TOTAL_LABEL_MAP.get(label, label)
