"""Paired comparison of two runs on the same FERBench items: is run A's lead over run B real?

Items are matched by set and image path (the record's position where it has none); two runs of different items
are refused in one line. A pair where either run has an error item is left out (and counted), as the scorers
leave error items out of their denominators. Per set and pooled over the sets:

- ``a_only`` / ``b_only``: the items only A / only B got right (the discordant pairs), and McNemar's exact test:
  the two-sided binomial test of ``a_only`` in ``a_only + b_only`` trials at 1/2 (``scipy.stats.binomtest``;
  1.0 when no pair is discordant);
- the accuracy difference A − B with Newcombe's hybrid score interval for paired proportions (Newcombe 1998,
  method 10: two Wilson intervals combined with the pairs' correlation);
- the UAR and macro-F1 differences with paired-bootstrap intervals: items are resampled as (truth, A's answer,
  B's answer) triples (``unifer.scoring.intervals``: one multinomial over the triples' cells; the pooled total
  resampled within each set).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from unifer.data.sets import TOTAL_LABEL_MAP, get_set
from unifer.errors import UniferError
from unifer.scoring.extract import extractor_for
from unifer.scoring.intervals import (
    Cells,
    CIOptions,
    bootstrap_intervals,
    metrics_of,
    pooling_matrix,
    proportion_ci,
    sums,
)


@dataclass
class Pairs:
    """One set's matched items: the truth and both runs' extracted labels, and what was left out."""

    truths: list[str] = field(default_factory=list)
    a: list[str] = field(default_factory=list)
    b: list[str] = field(default_factory=list)
    excluded_errors: int = 0


def item_key(record: dict, index: int) -> str:
    path = record.get("image_path")
    return path if isinstance(path, str) else f"#{index}"


def match(records_a: list[dict], records_b: list[dict], extract_a, extract_b, where: tuple[str, str],
          set_name: str) -> Pairs:
    """Pair the two runs' records of one set; ``where`` names the two runs in the mismatch line."""
    b_by = {item_key(r, i): r for i, r in enumerate(records_b)}
    a_keys = [item_key(r, i) for i, r in enumerate(records_a)]
    only_a = [k for k in a_keys if k not in b_by]
    only_b = sorted(set(b_by) - set(a_keys))
    if only_a or only_b:
        first = only_a[0] if only_a else only_b[0]
        raise UniferError(f"{set_name}: the runs answered different items ({len(only_a)} only in {where[0]}, "
                          f"{len(only_b)} only in {where[1]}; first: {first}); compare runs of the same items")
    out = Pairs()
    for k, ra in zip(a_keys, records_a):
        rb = b_by[k]
        if ra["true_label"] != rb["true_label"]:
            raise UniferError(f"{set_name}: item {k} is {ra['true_label']!r} in {where[0]} but "
                              f"{rb['true_label']!r} in {where[1]}; compare runs of the same FERBench files")
        if ra.get("error") or rb.get("error"):
            out.excluded_errors += 1
            continue
        out.truths.append(ra["true_label"])
        out.a.append(extract_a(ra["model_response"]))
        out.b.append(extract_b(rb["model_response"]))
    return out


# ------------------------------------------------------------------------------------------------ the tests


def mcnemar_p(a_only: int, b_only: int) -> float:
    """McNemar's exact test: two-sided binomial test of the discordant pairs at 1/2 (1.0 without any)."""
    if a_only + b_only == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(a_only, a_only + b_only, 0.5).pvalue)


def paired_diff_ci(both: int, a_only: int, b_only: int, neither: int, level: float = 0.95) -> list[float] | None:
    """Newcombe's interval of the paired difference of accuracies (A − B), as [lo, hi]."""
    n = both + a_only + b_only + neither
    if n == 0:
        return None
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    l1, u1 = proportion_ci(both + a_only, n, "wilson", level)
    l2, u2 = proportion_ci(both + b_only, n, "wilson", level)
    denom = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    cross = both * neither - a_only * b_only
    corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = corrected / math.sqrt(denom) if denom > 0 else 0.0
    d = p1 - p2
    lower = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return [max(-1.0, d - lower), min(1.0, d + upper)]


def triple_cells(p: Pairs, labels: Sequence[str]) -> tuple[Cells, Cells]:
    """The items as cells of (truth, A, B): A's view and B's view share the cells' counts."""
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    codes = np.array([(index[t] * k + index[x]) * k + index[y] for t, x, y in zip(p.truths, p.a, p.b)],
                     dtype=np.int64)
    cells, counts = np.unique(codes, return_counts=True)
    t, x, y = cells // (k * k), (cells // k) % k, cells % k
    eye = np.eye(k)
    return (Cells(eye[t], eye[x], (t == x).astype(float), counts), Cells(eye[t], eye[y], (t == y).astype(float), counts))


def counts_block(p: Pairs, level: float) -> dict:
    hits_a = [t == x for t, x in zip(p.truths, p.a)]
    hits_b = [t == y for t, y in zip(p.truths, p.b)]
    n = len(p.truths)
    a_only = sum(x and not y for x, y in zip(hits_a, hits_b))
    b_only = sum(y and not x for x, y in zip(hits_a, hits_b))
    both = sum(x and y for x, y in zip(hits_a, hits_b))
    return {"n": n, "excluded_errors": p.excluded_errors, "a_correct": sum(hits_a), "b_correct": sum(hits_b),
            "a_only": a_only, "b_only": b_only,
            "a_accuracy": sum(hits_a) / n if n else None, "b_accuracy": sum(hits_b) / n if n else None,
            "accuracy_diff": (a_only - b_only) / n if n else None,
            "accuracy_diff_ci95": paired_diff_ci(both, a_only, b_only, n - both - a_only - b_only, level),
            "mcnemar_p": mcnemar_p(a_only, b_only)}


def compare_pairs(pairs: dict[str, Pairs], opts: CIOptions, label_map: dict[str, str] | None = None) -> dict:
    """Every set's paired comparison and the pooled ``total`` (labels renamed by ``label_map`` to pool)."""
    label_map = label_map or {}
    keys = [k for k, p in pairs.items() if p.truths]
    own = [sorted(set(pairs[k].truths) | set(pairs[k].a) | set(pairs[k].b)) for k in keys]
    pooled_labels = sorted({label_map.get(x, x) for labels in own for x in labels})
    views = [triple_cells(pairs[k], labels) for k, labels in zip(keys, own)]
    maps = [pooling_matrix(labels, pooled_labels, label_map) for labels in own]

    def statistic(draws: list[np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        pooled = {"a": [0, 0, 0], "b": [0, 0, 0]}
        for key, (va, vb), d, mp in zip(keys, views, draws, maps):
            sa, sb = sums(va, d), sums(vb, d)
            ma, mb = metrics_of(*sa), metrics_of(*sb)
            for m in ("uar", "f1"):
                out[f"{key}.{m}"] = ma[m] - mb[m]
            for side, s in (("a", sa), ("b", sb)):
                pooled[side] = [acc + x @ mp for acc, x in zip(pooled[side], s)]
        if keys:
            ma, mb = metrics_of(*pooled["a"]), metrics_of(*pooled["b"])
            for m in ("uar", "f1"):
                out[f"total.{m}"] = ma[m] - mb[m]
        return out

    boot = bootstrap_intervals([va for va, _ in views], keys, statistic, opts) if keys else {}
    points = statistic([va.counts[None, :] for va, _ in views]) if keys else {}
    result: dict = {}
    for key in pairs:
        block = counts_block(pairs[key], opts.level)
        for m in ("uar", "f1"):
            block[f"{m}_diff"] = float(points[f"{key}.{m}"][0]) if key in keys else None
            block[f"{m}_diff_ci95"] = boot.get(f"{key}.{m}")
        result[key] = block
    total = Pairs(excluded_errors=sum(p.excluded_errors for p in pairs.values()))
    for p in pairs.values():
        total.truths += p.truths
        total.a += p.a
        total.b += p.b
    block = counts_block(total, opts.level)
    for m in ("uar", "f1"):
        block[f"{m}_diff"] = float(points[f"total.{m}"][0]) if keys else None
        block[f"{m}_diff_ci95"] = boot.get(f"total.{m}")
    result["total"] = block
    return result


def compare_records(records_a: dict[str, list[dict]], records_b: dict[str, list[dict]], protocol: str,
                    opts: CIOptions, names: tuple[str, str]) -> dict:
    """The paired comparison of two runs' checked records (set key → records; the sets both have), per set and
    ``total``; ``names`` name the runs (or their files) in a mismatch line."""
    pairs = {}
    for key in [k for k in records_a if k in records_b]:
        extract = extractor_for(key, protocol)
        pairs[key] = match(records_a[key], records_b[key], extract, extract, names, get_set(key).name)
    return compare_pairs(pairs, opts, TOTAL_LABEL_MAP)


def smallest_detectable_difference(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest accuracy difference McNemar's test detects with ``power`` on ``n`` pairs when a share
    ``discordance`` of them is discordant (Connor's 1987 normal approximation, solved for the difference)."""
    from scipy.special import ndtri

    if n <= 0 or discordance <= 0:
        return None
    za, zb = ndtri(1 - alpha / 2), ndtri(power)

    def needed(delta: float) -> float:  # pairs needed to detect delta
        return (za * math.sqrt(discordance) + zb * math.sqrt(max(0.0, discordance - delta ** 2))) ** 2 / delta ** 2

    lo, hi = 1e-9, discordance
    if needed(hi) > n:
        return None  # even the largest difference this discordance allows needs more items
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if needed(mid) > n else (lo, mid)
    return hi
