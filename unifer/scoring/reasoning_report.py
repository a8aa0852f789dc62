"""Reasoning metrics in files and tables: rates over items, the metrics file's ``reasoning`` block, the per-item
file ``<set>_<run>_items_<protocol>.jsonl`` beside the metrics, and the leaderboard's reasoning section.

Every rate runs over the non-error items of a set (or of the four pooled) and comes with its counts ``k`` of ``n``
and a 95 % Wilson score interval. Agreement runs over the items where both the reasoning's label and the answered
one are known. The flags themselves are ``unifer.scoring.reasoning``'s.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from unifer.data.jsonio import write_text_atomic
from unifer.data.runmeta import read_meta
from unifer.data.sets import FERSet, get_set
from unifer.scoring.aggregate import is_error
from unifer.scoring.extract import extractor_for
from unifer.scoring.reasoning import analyze_records, load_lexicon

# ------------------------------------------------------------------------------------------------ aggregates

#: rate name → (what counts, over which items); items are the non-error ones.
RATES = {
    "think": ("has_think", None),
    "answer": ("has_answer", None),
    "truncated": ("truncated", None),
    "agreement": ("think_answer_agree", "think_answer_agree"),
    "cues": ("cues", None),
    "supports": ("cue_support=supports", None),
    "contradicts": ("cue_support=contradicts", None),
    "right_for_right_reasons": ("correct&supports", None),
    "right_with_contradicting_cues": ("correct&contradicts", None),
}
RATE_TITLES = {"think": "think rate", "answer": "answer rate", "truncated": "truncation rate",
               "agreement": "think–answer agreement", "cues": "cue rate", "supports": "cue support",
               "contradicts": "cue contradiction", "right_for_right_reasons": "right for the right reasons",
               "right_with_contradicting_cues": "right with contradicting cues"}


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The 95 % Wilson score interval of k successes in n (None for n = 0)."""
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _hit(item: dict, what: str) -> bool:
    if what == "cues":
        return bool(item["cues"])
    if what.startswith("cue_support="):
        return item["cue_support"] == what.split("=")[1]
    if what.startswith("correct&"):
        return bool(item["correct"]) and item["cue_support"] == what.split("&")[1]
    return bool(item[what])


def aggregate(items: list[dict]) -> dict:
    """Every rate of ``RATES`` over the non-error items: ``{"rate", "k", "n", "low", "high"}`` (rate None at n 0).
    Agreement runs over the items where both the reasoning's and the answered label are known."""
    valid = [i for i in items if not i.get("error")]
    rates = {}
    for name, (what, among) in RATES.items():
        pool = [i for i in valid if i[among] is not None] if among else valid
        k = sum(_hit(i, what) for i in pool)
        ci = wilson(k, len(pool))
        rates[name] = {"rate": k / len(pool) if pool else None, "k": k, "n": len(pool),
                       "low": ci[0] if ci else None, "high": ci[1] if ci else None}
    return {"items": len(items), "valid": len(valid), "rates": rates}


def reasoning_block(items: list[dict]) -> dict:
    """The metrics file's ``reasoning`` block: the rates, and the lexicon's version they were read with."""
    return {**aggregate(items), "lexicon_version": load_lexicon().version}


def items_path(results: Path, protocol: str) -> Path:
    """``<set>_<run>_results.json`` → ``<set>_<run>_items_<protocol>.jsonl`` beside it."""
    name = results.name
    stem = name[: -len("_results.json")] if name.endswith("_results.json") else Path(name).stem
    return results.with_name(f"{stem}_items_{protocol}.jsonl")


# ------------------------------------------------------------------------------------------------ files


def run_budget(results: Path) -> int | None:
    """The run's new-token budget, from its ``.meta.json`` (None when it has none)."""
    budget = (read_meta(results).get("decoding") or {}).get("max_new_tokens")
    return budget if isinstance(budget, int) else None


def set_items(records: list[dict], fer_set: FERSet, protocol: str, budget: int | None = None) -> list[dict]:
    """The item lines of one set's (checked) results under ``protocol``."""
    extract = extractor_for(fer_set.key, protocol)
    preds = [None if is_error(r) else extract(r["model_response"]) for r in records]
    return analyze_records(records, fer_set.key, preds, budget)


def items_text(items: list[dict]) -> str:
    return "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items)


def score_set_reasoning(records: list[dict], fer_set: FERSet, results: Path, out_dir: Path,
                        protocol: str) -> tuple[dict, Path]:
    """The ``reasoning`` block of one set's metrics and its per-item file, written into ``out_dir``."""
    items = set_items(records, fer_set, protocol, run_budget(results))
    path = write_text_atomic(items_path(Path(out_dir) / Path(results).name, protocol), items_text(items))
    return {**reasoning_block(items), "items_file": str(path)}, path


def score_total_reasoning(records_by_set: dict[str, list[dict]], results_files: dict[str, Path],
                          protocol: str) -> dict:
    """The total's ``reasoning`` block: every set's rates and the four pooled."""
    per_set = {key: set_items(recs, get_set(key), protocol, run_budget(results_files[key]))
               for key, recs in records_by_set.items()}
    return {**reasoning_block([i for items in per_set.values() for i in items]),
            "per_set": {key: aggregate(items) for key, items in per_set.items()}}
