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

from unifer.data.runmeta import read_meta
from unifer.data.sets import FERSet, get_set
from unifer.scoring.aggregate import is_error
from unifer.scoring.extract import extractor_for
from unifer.scoring.intervals import proportion_ci
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


def wilson(k: int, n: int) -> tuple[float, float] | None:
    """The 95 % Wilson score interval of k successes in n (None for n = 0), as the scores' own (scipy's)."""
    ci = proportion_ci(k, n, "wilson")
    return None if ci is None else (ci[0], ci[1])


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
                        protocol: str) -> tuple[dict, Path, str]:
    """The ``reasoning`` block of one set's metrics, and its per-item file (path and text) for ``out_dir``: the
    caller writes it after the metrics file."""
    items = set_items(records, fer_set, protocol, run_budget(results))
    path = items_path(Path(out_dir) / Path(results).name, protocol)
    return {**reasoning_block(items), "items_file": str(path)}, path, items_text(items)


def score_total_reasoning(records_by_set: dict[str, list[dict]], results_files: dict[str, Path],
                          protocol: str) -> dict:
    """The total's ``reasoning`` block: every set's rates and the four pooled."""
    per_set = {key: set_items(recs, get_set(key), protocol, run_budget(results_files[key]))
               for key, recs in records_by_set.items()}
    return {**reasoning_block([i for items in per_set.values() for i in items]),
            "per_set": {key: aggregate(items) for key, items in per_set.items()}}


# ------------------------------------------------------------------------------------------------ judge files

#: The judge's ratings per item (``unifer judge`` writes them; the rubric is ``unifer/judge/rubric.yaml``).
JUDGE_SCORES = ("visual_grounding", "consistency", "specificity")


def judge_path(results: Path) -> Path:
    """``<set>_<run>_results.json`` → ``<set>_<run>_judge.jsonl`` beside it."""
    name = Path(results).name
    stem = name[: -len("_results.json")] if name.endswith("_results.json") else Path(name).stem
    return Path(results).with_name(f"{stem}_judge.jsonl")


def read_judge_lines(path: Path) -> list[dict]:
    """The judge file's lines (a torn last line, from a killed run, is left out); [] when absent."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "image_path" in obj:
            out.append(obj)
    return out


def mean_interval(values: list[float], z: float = 1.959964) -> dict:
    """The mean with a normal-approximation 95 % interval (None at n = 0; zero width at n = 1)."""
    n = len(values)
    if n == 0:
        return {"mean": None, "n": 0, "low": None, "high": None}
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = z * sd / math.sqrt(n)
    return {"mean": m, "n": n, "low": m - half, "high": m + half}


def judge_summary(lines: list[dict]) -> dict:
    """Means (with intervals) of the three ratings, the share rated as describing something not visible, the
    error items, and the judge configurations the lines were rated under."""
    rated = [x for x in lines if not x.get("error")]
    k = sum(1 for x in rated if x.get("hallucination") is True)
    ci = wilson(k, len(rated))
    out = {"items": len(lines), "rated": len(rated), "errors": len(lines) - len(rated),
           "hallucination": {"rate": k / len(rated) if rated else None, "k": k, "n": len(rated),
                             "low": ci[0] if ci else None, "high": ci[1] if ci else None},
           "judges": sorted({str(x.get("judge")) for x in rated if x.get("judge")})}
    for name in JUDGE_SCORES:
        out[name] = mean_interval([float(x[name]) for x in rated if isinstance(x.get(name), (int, float))])
    return out


# ------------------------------------------------------------------------------------------------ the leaderboard

LEADERBOARD_RATES = ("think", "answer", "truncated", "agreement", "cues", "supports", "contradicts",
                     "right_for_right_reasons", "right_with_contradicting_cues")
REASONING_COLUMNS = (*(f"reasoning_{r}{s}" for r in LEADERBOARD_RATES for s in ("", "_low", "_high")),
                     "judge_items", "judge_errors", "judge_hallucination",
                     *(f"judge_{m}{s}" for m in JUDGE_SCORES for s in ("", "_low", "_high")))


def reasoning_columns(records_by_set: dict[str, list[dict]], files: dict[str, Path]) -> dict:
    """A leaderboard row's reasoning columns: the rates pooled over the run's sets (paper protocol), and the
    judge's where a judge file lies beside the results."""
    items = [i for key, recs in records_by_set.items()
             for i in set_items(recs, get_set(key), "paper", run_budget(files[key]))]
    rates = aggregate(items)["rates"]
    row = {}
    for r in LEADERBOARD_RATES:
        row[f"reasoning_{r}"], row[f"reasoning_{r}_low"] = rates[r]["rate"], rates[r]["low"]
        row[f"reasoning_{r}_high"] = rates[r]["high"]
    lines = [x for key in records_by_set for x in read_judge_lines(judge_path(files[key]))]
    if lines:
        j = judge_summary(lines)
        row.update(judge_items=j["items"], judge_errors=j["errors"], judge_hallucination=j["hallucination"]["rate"],
                   judge_models=", ".join(j["judges"]))
        for m in JUDGE_SCORES:
            row[f"judge_{m}"], row[f"judge_{m}_low"], row[f"judge_{m}_high"] = (j[m]["mean"], j[m]["low"],
                                                                               j[m]["high"])
    return row


def _pct(row: dict, name: str) -> str:
    v = row.get(name)
    if v is None:
        return "–"
    lo, hi = row.get(f"{name}_low"), row.get(f"{name}_high")
    return f"{100 * v:.1f}" + ("" if lo is None else f" [{100 * lo:.1f}–{100 * hi:.1f}]")


def _mean(row: dict, name: str) -> str:
    v = row.get(name)
    return "–" if v is None else f"{v:.2f} [{row[f'{name}_low']:.2f}–{row[f'{name}_high']:.2f}]"


def leaderboard_section(rows: list[dict]) -> str:
    """The leaderboard's reasoning section (Markdown, appended after its accuracy table), and the judge's
    table where any run was judged."""
    head = ["model", "run", "`<think>`", "`<answer>`", "truncated", "think = answer", "cues named",
            "cues support", "cues contradict", "right for the right reasons", "right, contradicting cues"]
    out = ["", "## Reasoning", "",
           "Per cent of the valid items, pooled over the run's sets, paper protocol, with 95 % Wilson intervals "
           "(think = answer: among items whose reasoning and answer both name a label). Cues are the FACS units "
           "the reasoning names (docs/reasoning.md): a lexicon finds named cues, not true ones.", "",
           "| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        out.append("| " + " | ".join([r["model"], f"`{r['run']}`"] +
                                     [_pct(r, f"reasoning_{n}") for n in LEADERBOARD_RATES]) + " |")
    judged = [r for r in rows if r.get("judge_items")]
    if judged:
        head = ["model", "run", "judge", "rated", "errors", "visual grounding", "consistency", "specificity",
                "describes the invisible"]
        out += ["", "### Judge", "", "Mean rating 1–5 with a 95 % interval; the share of rated items the judge "
                "says describe something not visible. A judge is a model: its ratings are its opinion.", "",
                "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
        for r in judged:
            share = r.get("judge_hallucination")
            out.append("| " + " | ".join([r["model"], f"`{r['run']}`", r.get("judge_models") or "–",
                                          str(r["judge_items"] - r["judge_errors"]), str(r["judge_errors"])] +
                                         [_mean(r, f"judge_{m}") for m in JUDGE_SCORES] +
                                         ["–" if share is None else f"{100 * share:.1f}%"]) + " |")
    return "\n".join(out) + "\n"
