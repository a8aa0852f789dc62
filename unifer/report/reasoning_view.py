"""What the report shows of the reasoning: per item, the facial-action cues at their place in the response and
three flags the page filters on; per set, the reasoning rates and the judge's ratings (where a judge ran).

The flags (bits of ``rp`` / ``rs``, one per protocol, since they compare the reasoning with the answered label):

- **right for the wrong reasons**: the answer is right, but the cues named contradict it, or the reasoning
  concludes another label (``unifer.scoring.reasoning``: ``cue_support == "contradicts"`` or
  ``think_answer_agree is False``);
- **reasoning and answer disagree**: ``think_answer_agree is False``;
- **truncated**: the response stops inside a tag (or used the whole token budget).

Cues go to the page as a flat list per item: ``start, end, unit`` triples of offsets into the response, the unit an
index into the page's ``units`` (a negated mention as ``-1 - index``).
"""
from __future__ import annotations

from unifer.data.sets import SETS
from unifer.scoring.aggregate import is_error
from unifer.scoring.reasoning import against_answer, load_lexicon, read_reasoning
from unifer.scoring.reasoning_report import (
    JUDGE_SCORES,
    RATE_TITLES,
    aggregate,
    judge_path,
    judge_summary,
    read_judge_lines,
    run_budget,
)

WRONG_REASONS, DISAGREE, TRUNCATED = 1, 2, 4
SHOWN_RATES = ("think", "answer", "truncated", "agreement", "cues", "supports", "contradicts",
               "right_for_right_reasons", "right_with_contradicting_cues")


def unit_names(registry: dict[tuple, int]) -> list[str]:
    """The page's names of the unit groups ``item_columns`` numbered: "AU1 Inner brow raiser + AU2 ..."."""
    names = load_lexicon().names
    return [" + ".join(f"{au} {names[au]}" for au in units) for units, _ in sorted(registry.items(),
                                                                                    key=lambda x: x[1])]


def item_flags(flags: dict, correct: bool) -> int:
    bits = 0
    if correct and (flags["cue_support"] == "contradicts" or flags["think_answer_agree"] is False):
        bits |= WRONG_REASONS
    if flags["think_answer_agree"] is False:
        bits |= DISAGREE
    if flags["truncated"]:
        bits |= TRUNCATED
    return bits


def item_columns(record: dict, set_key: str, preds, budget: int | None, registry: dict[tuple, int]) -> tuple:
    """(flags under each protocol, the cue triples, the paper protocol's item flags or None) of one record;
    ``registry`` numbers the unit groups the cues name, as they come."""
    if is_error(record) or preds is None:
        return (0, 0), [], None
    parts = read_reasoning(record["model_response"], set_key, budget, record.get("usage"), spans=True)
    bits, paper = [], None
    for n, pred in enumerate(preds):
        flags = against_answer(parts, pred, set_key)
        correct = pred == record["true_label"]
        bits.append(item_flags(flags, correct))
        if n == 0:
            paper = {**flags, "correct": correct}
    cues = []
    for start, end, units, negated in parts["spans"]:
        k = registry.setdefault(units, len(registry))
        cues += [start, end, -1 - k if negated else k]
    return tuple(bits), cues, paper


def _pct(rate: dict) -> str:
    if rate["rate"] is None:
        return "–"
    return f"{100 * rate['rate']:.1f} [{100 * rate['low']:.1f}–{100 * rate['high']:.1f}]"


def rates_table(per_set: dict[str, list[dict]]) -> dict:
    """The reasoning rates per set and pooled (paper protocol), as the page's table (header, rows of cells)."""
    header = ["Set", "items"] + [RATE_TITLES[r] for r in SHOWN_RATES]
    rows = []
    groups = [(SETS[k].name, items) for k, items in per_set.items()]
    groups.append(("Total (pooled)", [i for items in per_set.values() for i in items]))
    for name, items in groups:
        agg = aggregate(items)
        rows.append([name, str(agg["valid"])] + [_pct(agg["rates"][r]) for r in SHOWN_RATES])
    return {"header": header, "rows": rows}


def judge_table(paths: dict) -> dict | None:
    """The judge's ratings per set (where ``<set>_<run>_judge.jsonl`` lies beside the results), or None."""
    rows = []
    for key, path in paths.items():
        lines = read_judge_lines(judge_path(path))
        if not lines:
            continue
        s = judge_summary(lines)
        cells = [SETS[key].name, ", ".join(s["judges"]) or "–", str(s["rated"]), str(s["errors"])]
        for m in JUDGE_SCORES:
            v = s[m]
            cells.append("–" if v["mean"] is None else f"{v['mean']:.2f} [{v['low']:.2f}–{v['high']:.2f}]")
        h = s["hallucination"]["rate"]
        cells.append("–" if h is None else f"{100 * h:.1f}%")
        rows.append(cells)
    if not rows:
        return None
    return {"header": ["Set", "judge", "rated", "errors", "visual grounding", "consistency", "specificity",
                       "describes the invisible"], "rows": rows}


def judge_texts(paths: dict) -> dict[tuple[str, str], str]:
    """(set, image path) → the judge's rating of that item as one line of text, where a judge ran."""
    out = {}
    for key, path in paths.items():
        for x in read_judge_lines(judge_path(path)):
            if x.get("error"):
                text = f"judge error: {x['error']}"
            else:
                text = (f"judge {x.get('judge', '')}: grounding {x.get('visual_grounding')}, consistency "
                        f"{x.get('consistency')}, specificity {x.get('specificity')}, describes the invisible "
                        f"{'yes' if x.get('hallucination') else 'no'} — {x.get('rationale', '')}")
            out[(key, str(x["image_path"]))] = text
    return out


def budgets(paths: dict) -> dict:
    return {key: run_budget(p) for key, p in paths.items()}
