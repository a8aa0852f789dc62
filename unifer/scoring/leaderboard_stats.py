"""The leaderboard's uncertainty: 95% intervals per cell, which runs are not significantly worse than the best,
and how small a difference each set can show at all.

- Intervals (paper protocol, as the table's first number): a set's and the pooled accuracy Wilson's (or
  Clopper–Pearson's), the mean of sets, pooled UAR and pooled macro F1 from the bootstrap stratified by set
  (``unifer.scoring.intervals``); the pooled accuracy under the strict protocol too (the ranked bars draw both).
- Marks: per set and pooled, the best run (highest paper accuracy) is compared with every other run on the items
  both answered (McNemar's exact test, ``unifer.scoring.paired``), the p-values Holm-corrected over the runs
  compared; the best run and every run whose corrected p is at least 0.05 are printed in bold.
- Power: per set, the smallest accuracy difference a paired test detects at 80% power (α = 0.05) given the
  discordance observed between the two best runs of that set.
"""
from __future__ import annotations

from pathlib import Path

from unifer.data.sets import SET_KEYS, SETS, TOTAL_LABEL_MAP, get_set
from unifer.scoring.aggregate import is_error, load_results
from unifer.scoring.extract import extractor_for
from unifer.scoring.intervals import CIOptions, proportion_ci, stratified
from unifer.scoring.metrics import uar
from unifer.scoring.paired import item_key, mcnemar_p, smallest_detectable_difference

ALPHA = 0.05
COLUMNS = (*SET_KEYS, "pooled")


def hits_by_item(files: dict[str, Path], protocol: str) -> dict[str, dict[str, tuple[str, str | None]]]:
    """set key → item key → (truth, prediction; None for an error item)."""
    out = {}
    for key, path in files.items():
        extract = extractor_for(key, protocol)
        out[key] = {item_key(r, i): (r["true_label"], None if is_error(r) else extract(r["model_response"]))
                    for i, r in enumerate(load_results(path, get_set(key)))}
    return out


def pairs_of(items: dict, key: str) -> tuple[list[str], list[str]]:
    valid = [(t, p) for t, p in items[key].values() if p is not None]
    return [t for t, _ in valid], [p for _, p in valid]


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def discordant(a: dict, b: dict, key: str | None) -> tuple[int, int, int]:
    """(pairs, only a right, only b right) over the items both answered, one set or all (``key`` None)."""
    keys = [key] if key else [k for k in a if k in b]
    n = a_only = b_only = 0
    for k in keys:
        if k not in a or k not in b:
            continue
        for item, (t, pa) in a[k].items():
            pb = b[k].get(item, (None, None))[1]
            if pa is None or pb is None:
                continue
            n += 1
            a_only += pa == t and pb != t
            b_only += pb == t and pa != t
    return n, a_only, b_only


def annotate(rows: list[dict], runs: dict[str, dict[str, Path]], opts: CIOptions) -> dict:
    """Add intervals and marks to leaderboard rows (in place); returns the power per set and the notes' facts."""
    items = {r["run"]: hits_by_item(runs[r["run"]], "paper") for r in rows}
    for r in rows:
        it = items[r["run"]]
        pairs = {k: pairs_of(it, k) for k in it}
        for key, (t, p) in pairs.items():
            if t:
                r[f"{key}_paper_ci95"] = proportion_ci(sum(a == b for a, b in zip(t, p)), len(t), opts.accuracy)
        if r.get("pooled_paper") is not None:
            b = stratified({k: v for k, v in pairs.items() if v[0]}, opts, TOTAL_LABEL_MAP)
            m = TOTAL_LABEL_MAP
            truths = [m.get(x, x) for t, _ in pairs.values() for x in t]
            preds = [m.get(x, x) for _, p in pairs.values() for x in p]
            r["pooled_uar_paper"] = uar(truths, preds)
            r["pooled_paper_ci95"], r["mean_paper_ci95"] = b["pooled"]["accuracy"], b["mean"]["accuracy"]
            r["pooled_uar_paper_ci95"], r["pooled_f1_paper_ci95"] = b["pooled"]["uar"], b["pooled"]["f1"]
            strict = hits_by_item(runs[r["run"]], "strict")
            st = [pairs_of(strict, k) for k in strict]
            r["pooled_uar_strict"] = uar([m.get(x, x) for t, _ in st for x in t], [m.get(x, x) for _, p in st for x in p])
            hits, n = sum(a == b for t, p in st for a, b in zip(t, p)), sum(len(t) for t, _ in st)
            r["pooled_strict_ci95"] = proportion_ci(hits, n, opts.accuracy)
    power = {}
    for col in COLUMNS:
        value = f"{col}_paper"
        ranked = sorted([r for r in rows if r.get(value) is not None], key=lambda r: -r[value])
        if not ranked:
            continue
        best = ranked[0]
        best[f"{col}_best"] = True
        others = ranked[1:]
        ps = [mcnemar_p(*discordant(items[best["run"]], items[o["run"]], None if col == "pooled" else col)[1:])
              for o in others]
        for o, adj in zip(others, holm(ps)):
            o[f"{col}_holm_p"] = adj
            o[f"{col}_best"] = adj >= ALPHA
        if others and col != "pooled":
            n, a_only, b_only = discordant(items[best["run"]], items[others[0]["run"]], col)
            share = (a_only + b_only) / n if n else 0.0
            power[col] = {"items": n, "discordance": share,
                          "detectable_diff": smallest_detectable_difference(n, share),
                          "runs": [best["run"], others[0]["run"]]}
    return power


def cell(r: dict, col: str) -> str:
    """``paper [lo, hi] / strict`` in percent; the paper number in bold where the run is (tied with) the best."""
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    paper = pct(r.get(f"{col}_paper"))
    if r.get(f"{col}_best"):
        paper = f"**{paper}**"
    ci = r.get(f"{col}_paper_ci95")
    if ci:
        paper += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return f"{paper} / {pct(r.get(f'{col}_strict'))}"


def notes(power: dict, marked: bool) -> str:
    """The lines under the table: what the bold means, and each set's power."""
    lines = []
    if marked:
        lines.append("Paper protocol with its 95% interval in brackets (accuracy: Wilson; mean of sets, UAR, F1: "
                     "bootstrap stratified by set). **Bold**: the best run of a column and every run not "
                     "significantly worse than it (McNemar's exact test on the items both answered, "
                     f"Holm-corrected over the runs compared, α = {ALPHA}).")
    if power:
        parts = []
        for key, p in power.items():
            d = p["detectable_diff"]
            what = f"{100 * d:.1f} points" if d is not None else "none detectable"
            parts.append(f"{SETS[key].name} {what} ({p['items']} items, {100 * p['discordance']:.0f}% discordant)")
        lines.append("Smallest accuracy difference a paired test detects at 80% power (α = 0.05), given the "
                     "discordance between each set's two best runs: " + "; ".join(parts) + ".")
    return "\n\n".join(lines)
