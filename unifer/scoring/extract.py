"""Label extraction: the label a response names for a set, under the paper protocol or the strict one.

The paper protocol is the one rule the paper's aggregate scorer (``eval_total/code/eval_unifer.py``) applies to all
four sets. The paper's five scorers drifted: the SFEW 2.0 per-set copy matches ``<answer>(.*?)</answer>``
case-sensitively with ``re.DOTALL``, the other four (and the aggregate) ``<answer>\\s*(.*?)\\s*</answer>``
case-insensitively with ``.`` not crossing newlines. We use the latter everywhere, so a set scores the same alone
and inside the total. Their word-boundary search in step 2 is subsumed by the substring test beside it, and their
per-set confusion matrix used the candidate order of the last record read; we use the registry's order.

Paper rule, candidates in registry order: (1) the first ``<answer>`` match, lower-cased: the first candidate that
occurs in it; (2) else the first candidate that occurs in the lower-cased response; (3) else the first label of the
set's synonym walk any of whose alternatives occurs in it; (4) else ``unknown``. Substring matches, as the paper:
"unhappy" counts as *happy* on FERPlus, and a candidate named anywhere in the reasoning counts as the answer.

Strict rule (opt-in): only the first ``<answer>`` content counts; trimmed and lower-cased it must equal a candidate
or one of its listed synonyms, otherwise ``unknown``. It shows how often the model really answered.
"""
from __future__ import annotations

import re
from functools import lru_cache

from unifer.data.sets import FERSet, get_set

#: The paper's answer pattern: first match, case-insensitive, ``.`` does not match a newline.
ANSWER_PATTERN = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.IGNORECASE)
UNKNOWN = "unknown"
PROTOCOLS = ("paper", "strict")


class LabelExtractor:
    """``extractor(response) -> label | "unknown"`` for one set and protocol (built once, called per item)."""

    def __init__(self, fer_set: FERSet, protocol: str = "paper"):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
        self.fer_set, self.protocol = fer_set, protocol
        self.labels = tuple(label.lower() for label in fer_set.labels)
        self.synonyms = tuple((label, tuple(a.lower() for a in alts)) for label, alts in fer_set.synonyms)
        exact = {label: label for label in self.labels}
        for label, alts in self.synonyms:  # a candidate's own name wins over a synonym spelled the same
            for alt in alts:
                exact.setdefault(alt, label)
        self.exact = exact

    def __call__(self, response: str) -> str:
        return self._paper(response) if self.protocol == "paper" else self._strict(response)

    def _paper(self, response: str) -> str:
        match = ANSWER_PATTERN.search(response)
        if match:
            answer = match.group(1).strip().lower()
            for label in self.labels:
                if label in answer:
                    return label
        lowered = response.lower()
        for label in self.labels:
            if label in lowered:
                return label
        for label, alts in self.synonyms:
            for alt in alts:
                if alt in lowered:
                    return label
        return UNKNOWN

    def _strict(self, response: str) -> str:
        match = ANSWER_PATTERN.search(response)
        if not match:
            return UNKNOWN
        return self.exact.get(match.group(1).strip().lower(), UNKNOWN)


@lru_cache(maxsize=None)
def extractor_for(set_key: str, protocol: str) -> LabelExtractor:
    return LabelExtractor(get_set(set_key), protocol)


def extract_label(response: str, fer_set: FERSet | str, protocol: str = "paper") -> str:
    """The label a response names for ``fer_set`` under ``protocol`` (paper | strict), or ``"unknown"``."""
    key = fer_set if isinstance(fer_set, str) else fer_set.key
    return extractor_for(get_set(key).key, protocol)(response)
