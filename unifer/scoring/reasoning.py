"""Deterministic reasoning metrics: does the ``<think>`` text agree with the answer, and do the facial actions it
names fit the answered expression? No model, no randomness: the same response always gets the same flags.

Per response (``analyze``), for one set and the label a protocol extracted:

- ``has_think``: a ``<think>`` tag opens a non-empty text; ``has_answer``: the paper's ``<answer>…</answer>``
  pattern matches; ``truncated``: the last tag opened (``<think>`` or ``<answer>``) is never closed, or the
  response used the whole token budget (its API usage against the run's ``max_new_tokens``, where both are known).
- ``think_label``: the last label named in the ``<think>`` text (a candidate, a synonym of the set, or a form of
  ``facs.yaml``'s ``label_forms``, as a whole word) that is not negated — no negation word or phrase of
  ``facs.yaml`` within three words before it, in its clause; ``None`` when the text names none.
  ``think_answer_agree``: ``think_label`` equals the answered label (``None`` when either is missing, or the
  answer is ``unknown``).
- ``cues``: the facial action units the reasoning names (the ``<think>`` text; without one, the response outside
  its ``<answer>``), from the phrases of ``facs.yaml``, as whole words, negation handled as above.
- ``cue_support``: how the cues fit the answered label under the EMFACS prototypes of ``facs.yaml``, among the
  set's candidate labels. The fit of a label is the Jaccard overlap of the cues with its prototype; ``supports``:
  the answered label fits better than any other candidate; ``contradicts``: it does not fit at all and another
  does; ``mixed``: cues named, but they single out neither (a tie, a better other, or no prototype fits);
  ``none``: no cue named; ``None`` when the response answers no label.

``unifer.scoring.reasoning_report`` turns them into rates (the metrics files' ``reasoning`` block, the per-item
files, the leaderboard's section).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from unifer.data.sets import TOTAL_LABEL_MAP, get_set
from unifer.errors import UniferError
from unifer.scoring.extract import ANSWER_PATTERN, UNKNOWN

LEXICON_FILE = Path(__file__).with_name("facs.yaml")
TAG = re.compile(r"<(/?)(think|answer)>", re.IGNORECASE)
THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.IGNORECASE | re.DOTALL)
ANSWER_BLOCK = re.compile(r"<answer>.*?(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
WORD = re.compile(r"[a-z]+(?:['’][a-z]+)?", re.IGNORECASE)
GAP = re.compile(r"[\s\-]+")  # what may stand between the words of a phrase
CLAUSE_END = re.compile(r"[.;:!?,()\n]")
SUPPORTS, CONTRADICTS, MIXED, NONE = "supports", "contradicts", "mixed", "none"
CUE_SUPPORT = (SUPPORTS, CONTRADICTS, MIXED, NONE)


# ------------------------------------------------------------------------------------------------ the lexicon


def phrase_variants(phrase: str) -> list[tuple[str, ...]]:
    """A lexicon phrase spelled out: every word sequence it stands for. ``(x)`` is optional, ``(a|b)`` one of,
    ``(a|b|)`` one of or none; words are lower-cased, a hyphen is a space."""
    texts, i = [""], 0
    while i < len(phrase):
        c = phrase[i]
        if c == "(":
            j = phrase.find(")", i)
            if j < 0:
                raise ValueError(f"unclosed '(' in {phrase!r}")
            alts = phrase[i + 1:j].split("|")
            alts = alts + [""] if len(alts) == 1 else alts
            texts = [t + a for t in texts for a in alts]
            i = j + 1
        else:
            texts = [t + c for t in texts]
            i += 1
    out = []
    for t in texts:
        words = tuple(w for w in WORD.findall(t.lower().replace("-", " ").replace("’", "'")))
        if words and words not in out:
            out.append(words)
    return out


class Tokens:
    """A text's words (lower case, ’ as ') and their spans: read once, by the label and the cue finders."""

    __slots__ = ("text", "spans", "words")

    def __init__(self, text: str):
        found = list(WORD.finditer(text))
        self.text, self.spans = text, [m.span() for m in found]
        self.words = [m.group(0).lower().replace("’", "'") for m in found]

    def joined(self, i: int, k: int) -> bool:
        """Whether words i .. i+k-1 stand apart by whitespace or hyphens only (one phrase, not across a comma)."""
        s = self.spans
        return all(GAP.fullmatch(self.text, s[j][1], s[j + 1][0]) for j in range(i, i + k - 1))


@dataclass(frozen=True)
class Negation:
    window: int
    words: frozenset[str]
    phrases: tuple[tuple[str, ...], ...]
    openers: frozenset[str] = frozenset()  # the words a negation starts with (filled in)

    def __post_init__(self):
        object.__setattr__(self, "openers", self.words | {p[0] for p in self.phrases})

    def negated(self, tokens: Tokens, i: int) -> bool:
        """Whether a negation stands within ``window`` words before word ``i``, in its clause (a sentence's or
        clause's punctuation ends a negation's reach: "no frown. Happy." is happy)."""
        w, lo = tokens.words, max(0, i - self.window)
        openers = self.openers
        for j in range(i - 1, lo - 1, -1):
            word = w[j]
            if not (word in openers or word.endswith("n't")):
                continue
            if CLAUSE_END.search(tokens.text, tokens.spans[j][1], tokens.spans[i][0]):
                return False  # this negation, and any before it, is in an earlier clause
            if word in self.words or word.endswith("n't"):
                return True
            if any(tuple(w[j:j + len(p)]) == p and j + len(p) <= i for p in self.phrases):
                return True
        return False


@dataclass(frozen=True)
class Lexicon:
    """``facs.yaml`` read once: the unit names, every phrase spelled out, the prototypes, the negation."""

    version: int
    names: dict  # AU → its FACS name
    phrases: dict  # words (a tuple) → units
    lengths: dict  # first word → the lengths of the phrases it opens, longest first
    prototypes: dict  # pooled label → frozenset of AUs
    negation: Negation
    label_forms: dict  # pooled label → extra word forms

    def find(self, tokens: Tokens):
        """(start, end, units, negated) of every phrase the text names, left to right; at one word the longest
        phrase wins, and phrases do not overlap. The words of a phrase stand apart by whitespace or hyphens only."""
        w, i, n = tokens.words, 0, len(tokens.words)
        while i < n:
            step = 1
            for k in self.lengths.get(w[i], ()):
                if i + k > n:
                    continue
                units = self.phrases.get(tuple(w[i:i + k]))
                if units is not None and tokens.joined(i, k):
                    yield tokens.spans[i][0], tokens.spans[i + k - 1][1], units, self.negation.negated(tokens, i)
                    step = k
                    break
            i += step

    @property
    def phrase_units(self) -> set:
        """Every unit some phrase names."""
        return {u for units in self.phrases.values() for u in units}


def _fail(path, message: str):
    raise UniferError(f"{path}: {message}")


@lru_cache(maxsize=4)
def load_lexicon(path: str | None = None) -> Lexicon:
    """The lexicon (default: ``facs.yaml`` beside this module); a malformed file is refused in one line."""
    import yaml

    path = Path(path) if path else LEXICON_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        _fail(path, f"cannot read the FACS lexicon: {e}")
    if not isinstance(data, dict) or not isinstance(data.get("units"), dict):
        _fail(path, "expected a mapping with 'units'")
    names, entries = {}, []  # entries: (phrase, units)
    for au, unit in data["units"].items():
        if not isinstance(unit, dict) or not isinstance(unit.get("name"), str):
            _fail(path, f"unit {au}: expected a mapping with 'name' and 'phrases'")
        names[au] = unit["name"]
        entries += [(p, (au,)) for p in unit.get("phrases") or []]
    for n, combo in enumerate(data.get("combined") or []):
        units = tuple(combo.get("units") or ())
        if not units or any(u not in names for u in units):
            _fail(path, f"combined entry {n}: units {list(units)} are not all units of the lexicon")
        entries += [(p, units) for p in combo.get("phrases") or []]
    prototypes = {}
    for label, units in (data.get("prototypes") or {}).items():
        bad = [u for u in units or () if u not in names]
        if bad:
            _fail(path, f"prototype {label}: unknown unit(s) {', '.join(bad)}")
        prototypes[label] = frozenset(units or ())
    phrases: dict[tuple, tuple] = {}
    for phrase, units in entries:
        try:
            spelled = phrase_variants(phrase)
        except ValueError as e:
            _fail(path, str(e))
        for words in spelled:  # a spelling two entries share names the units of both
            phrases[words] = tuple(dict.fromkeys(phrases.get(words, ()) + units))
    lengths: dict[str, set] = {}
    for words in phrases:
        lengths.setdefault(words[0], set()).add(len(words))
    neg = data.get("negation") or {}
    negation = Negation(int(neg.get("window", 3)), frozenset(w.lower() for w in neg.get("words") or ()),
                        tuple(tuple(p.lower().split()) for p in neg.get("phrases") or ()))
    return Lexicon(int(data.get("version", 1)), names, phrases,
                   {w: tuple(sorted(ks, reverse=True)) for w, ks in lengths.items()}, prototypes, negation,
                   {k: tuple(v) for k, v in (data.get("label_forms") or {}).items()})


def pooled_label(label: str) -> str:
    return TOTAL_LABEL_MAP.get(label, label)


@lru_cache(maxsize=None)
def label_words(set_key: str) -> dict[str, str]:
    """Word → candidate: the set's candidates, their synonyms (``unifer.data.sets``) and the lexicon's forms."""
    s = get_set(set_key)
    words = {label.lower(): label for label in s.labels}
    for label, alts in s.synonyms:
        for alt in alts:
            words.setdefault(alt.lower(), label)
    for label in s.labels:
        for form in load_lexicon().label_forms.get(pooled_label(label), ()):
            words.setdefault(form.lower(), label)
    return words


# ------------------------------------------------------------------------------------------------ one response


def is_truncated(response: str) -> bool:
    """The last ``<think>``/``<answer>`` tag opened is never closed after it."""
    last_open = None
    for m in TAG.finditer(response):
        if not m.group(1):
            last_open = m
        elif last_open is not None and m.group(2).lower() == last_open.group(2).lower():
            last_open = None
    return last_open is not None


def as_tokens(text) -> Tokens:
    return text if isinstance(text, Tokens) else Tokens(text)


def think_label(text: str | Tokens | None, set_key: str) -> str | None:
    """The last non-negated label the text names (see the module docstring), or None."""
    if not text:
        return None
    tokens, words = as_tokens(text), label_words(set_key)
    negation = load_lexicon().negation
    for i in range(len(tokens.words) - 1, -1, -1):
        label = words.get(tokens.words[i])
        if label is not None and not negation.negated(tokens, i):
            return label
    return None


def cue_spans(text: str | Tokens) -> list[tuple[int, int, tuple[str, ...], bool]]:
    """(start, end, units, negated) of every facial action phrase in ``text`` (the report highlights them)."""
    return list(load_lexicon().find(as_tokens(text)))


def find_cues(text: str | Tokens) -> list[str]:
    """The units ``text`` names, not negated, in the lexicon's order."""
    lex = load_lexicon()
    named = {u for _, _, units, negated in lex.find(as_tokens(text)) if not negated for u in units}
    return [u for u in lex.names if u in named]


def fits(cues, set_key: str) -> dict[str, float]:
    """The Jaccard overlap of ``cues`` with each candidate's prototype (candidates without one are left out)."""
    protos = load_lexicon().prototypes
    cues = set(cues)
    out = {}
    for label in get_set(set_key).labels:
        proto = protos.get(pooled_label(label))
        if proto:
            out[label] = len(cues & proto) / len(cues | proto)
    return out


def cue_support(cues, answered: str | None, set_key: str) -> str | None:
    if not cues:
        return NONE
    if answered is None or answered == UNKNOWN:
        return None
    fit = fits(cues, set_key)
    own = fit.get(answered, 0.0)
    best_other = max((v for k, v in fit.items() if k != answered), default=0.0)
    if own > 0 and own > best_other:
        return SUPPORTS
    if own == 0 and best_other > 0:
        return CONTRADICTS
    return MIXED


def read_reasoning(response: str, set_key: str, budget: int | None = None, usage: dict | None = None,
                   spans: bool = False) -> dict:
    """What does not depend on the answered label: has_think, has_answer, truncated, think_label, cues (and,
    with ``spans``, every cue phrase as ``(start, end, units, negated)`` at its place in ``response``). Cached:
    the scorers read each response under both protocols, per set and in the total."""
    used = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return dict(_read(response, set_key, budget, used if isinstance(used, int) else None, spans))


@lru_cache(maxsize=1 << 14)  # more than all of FERBench (11k responses)
def _read(response: str, set_key: str, budget: int | None, used: int | None, spans: bool) -> dict:
    m = THINK.search(response)
    think = m is not None and bool(m.group(1).strip())
    if think:
        base, text = m.start(1), m.group(1)
    else:  # the response outside its <answer> blocks, blanked in place so the offsets hold
        base, text = 0, ANSWER_BLOCK.sub(lambda a: " " * len(a.group(0)), response)
    tokens = Tokens(text)
    found = list(load_lexicon().find(tokens))
    named = {u for _, _, units, negated in found if not negated for u in units}
    truncated = is_truncated(response) or bool(budget and used is not None and used >= budget)
    out = {"has_think": think, "has_answer": ANSWER_PATTERN.search(response) is not None, "truncated": truncated,
           "think_label": think_label(tokens, set_key) if think else None,
           "cues": tuple(u for u in load_lexicon().names if u in named)}
    if spans:
        out["spans"] = tuple((base + a, base + b, units, neg) for a, b, units, neg in found)
    return out


def against_answer(parts: dict, answered: str | None, set_key: str) -> dict:
    """``read_reasoning``'s parts with the flags that compare them to the answered label."""
    answered = None if answered in (None, UNKNOWN) else answered
    label = parts["think_label"]
    return {**{k: v for k, v in parts.items() if k != "spans"}, "cues": list(parts["cues"]),
            "think_answer_agree": None if label is None or answered is None else label == answered,
            "cue_support": cue_support(parts["cues"], answered, set_key)}


def analyze(response: str, set_key: str, answered: str | None, budget: int | None = None,
            usage: dict | None = None) -> dict:
    """The reasoning flags of one response (module docstring); ``answered``: the label a protocol extracted."""
    return against_answer(read_reasoning(response, set_key, budget, usage), answered, set_key)


def analyze_records(records: list[dict], set_key: str, predicted: list[str | None],
                    budget: int | None = None) -> list[dict]:
    """One item line per record (``items_path``'s lines): the record's labels and its flags. ``predicted``: the
    protocol's label per record, None for an error item (whose flags are all None)."""
    out = []
    for r, pred in zip(records, predicted):
        base = {"image_path": r.get("image_path"), "true_label": r.get("true_label"), "predicted": pred}
        if pred is None:
            out.append({**base, "correct": None, "error": True, "has_think": None, "has_answer": None,
                        "truncated": None, "think_label": None, "think_answer_agree": None, "cues": [],
                        "cue_support": None})
            continue
        flags = analyze(r["model_response"], set_key, pred, budget, r.get("usage"))
        out.append({**base, "correct": pred == r["true_label"], **flags})
    return out
