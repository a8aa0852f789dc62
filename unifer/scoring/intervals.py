"""95% intervals of FERBench's numbers: Wilson (or Clopper–Pearson) for proportions, a bootstrap over items for
UAR and macro F1, stratified by set for the pooled total and the mean of sets.

Proportions (accuracy, a class's recall) come from ``scipy.stats.binomtest(k, n).proportion_ci``: ``wilson``
(default; well behaved at 0% and 100%) or ``exact`` (Clopper–Pearson). UAR and macro F1 are not proportions, so
their intervals come from the bootstrap: resample the items with replacement, recompute, take the 2.5th and 97.5th
percentiles of 10,000 resamples (or BCa, bias-corrected and accelerated, as ``scipy.stats.bootstrap``'s).

The bootstrap is vectorised by hand, because a metric of a classifier depends on the items only through the cells
of its (true, predicted) table: resampling n items with replacement draws the cell counts from a multinomial with
the observed cell shares, so one ``Generator.multinomial`` call over at most 9 × 9 cells replaces 10,000 × n
index draws (FERBench's 11,072 items, all sets and both protocols, take well under a second). BCa's jackknife
likewise leaves out one item per non-empty cell, weighted by the cell's count. Seeded: the same input and seed
give the same interval.

Stratified by set: each set is resampled on its own with its own size (FERBench fixes how many items each set
has), and the pooled total (the cells of the four sets summed) and the mean of sets (the four sets' metrics
averaged) are computed from the same draws.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

ACCURACY_METHODS = {"wilson": "wilson", "clopper-pearson": "exact"}
BOOTSTRAP_METHODS = ("percentile", "bca")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class CIOptions:
    """How the intervals are computed: proportions' method, the bootstrap's method, resamples, seed, level."""

    accuracy: str = "wilson"
    bootstrap: str = "percentile"
    resamples: int = 10_000
    seed: int = 0
    level: float = 0.95

    def __post_init__(self):
        if self.accuracy not in ACCURACY_METHODS:
            raise ValueError(f"unknown accuracy interval {self.accuracy!r}; choose one of: "
                             f"{', '.join(ACCURACY_METHODS)}")
        if self.bootstrap not in BOOTSTRAP_METHODS:
            raise ValueError(f"unknown bootstrap interval {self.bootstrap!r}; choose one of: "
                             f"{', '.join(BOOTSTRAP_METHODS)}")
        if self.resamples < 100:
            raise ValueError(f"a bootstrap needs at least 100 resamples, got {self.resamples}")

    def describe(self) -> dict:
        """The methods, as the metrics JSON names them (``ci``)."""
        return {"level": self.level, "accuracy": f"{self.accuracy} interval (scipy.stats.binomtest)",
                "recall_per_class": f"{self.accuracy} interval",
                "uar_f1": f"{self.bootstrap} bootstrap over items, {self.resamples} resamples, seed {self.seed}",
                "pooled_and_mean": "bootstrap stratified by set (accuracy of the pooled total: "
                                   f"{self.accuracy} interval)"}


def proportion_ci(k: int, n: int, method: str = "wilson", level: float = 0.95) -> list[float] | None:
    """The interval of k successes in n trials as [lo, hi] (None for n = 0)."""
    if n <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method=ACCURACY_METHODS[method])
    return [float(max(0.0, ci.low)), float(min(1.0, ci.high))]


# ------------------------------------------------------------------------------------------------ cell tables


@dataclass(frozen=True)
class Cells:
    """One stratum's items as the non-empty cells of a (true, predicted) table over ``labels``: for each cell,
    one-hot truth (``T``), one-hot prediction (``P``), whether it is a hit, and how many items fall in it."""

    T: np.ndarray  # cells × labels
    P: np.ndarray  # cells × labels
    hit: np.ndarray  # cells
    counts: np.ndarray  # cells

    @property
    def n(self) -> int:
        return int(self.counts.sum())


def cells_of(truths: Sequence[str], preds: Sequence[str], labels: Sequence[str]) -> Cells:
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    codes = np.array([index[t] * k + index[p] for t, p in zip(truths, preds)], dtype=np.int64)
    cells, counts = np.unique(codes, return_counts=True)
    t, p = cells // k, cells % k
    eye = np.eye(k)
    return Cells(eye[t], eye[p], (t == p).astype(float), counts.astype(np.int64))


def sums(c: Cells, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per resample (rows of ``draws``: cell counts) and label: true positives, true count, predicted count."""
    k = c.T.shape[1]
    out = draws.astype(float) @ np.concatenate([c.T * c.hit[:, None], c.T, c.P], axis=1)
    return out[:, :k], out[:, k:2 * k], out[:, 2 * k:]


def metrics_of(tp: np.ndarray, true: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, UAR (mean recall over the labels that are some item's truth) and macro F1 (over the labels that
    are some item's truth or prediction, as scikit-learn's), per row."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n = true.sum(axis=-1)
        has_true = true > 0
        recall = np.where(has_true, tp / np.where(has_true, true, 1), 0.0)
        seen = (true + pred) > 0
        f1 = np.where(seen, 2 * tp / np.where(seen, true + pred, 1), 0.0)
        return {"accuracy": tp.sum(axis=-1) / n, "uar": recall.sum(axis=-1) / has_true.sum(axis=-1),
                "f1": f1.sum(axis=-1) / seen.sum(axis=-1)}


# ------------------------------------------------------------------------------------------------ the bootstrap


def multinomial(rng: np.random.Generator, counts: np.ndarray, resamples: int) -> np.ndarray:
    """``resamples`` rows of cell counts, multinomial with the shares of ``counts`` and their total: one
    conditional binomial per cell across all rows (far faster than ``Generator.multinomial``'s row loop)."""
    n = int(counts.sum())
    out = np.empty((resamples, len(counts)), dtype=np.int64)
    remaining = np.full(resamples, n, dtype=np.int64)
    rest = n
    for j, c in enumerate(counts[:-1]):
        out[:, j] = rng.binomial(remaining, min(1.0, c / rest)) if rest > 0 else 0
        remaining -= out[:, j]
        rest -= int(c)
    out[:, -1] = remaining
    return out


def stratum_rng(seed: int, key: str) -> np.random.Generator:
    """A stratum's own generator: a set draws the same resamples alone and inside the total."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def draw(strata: Sequence[Cells], keys: Sequence[str], opts: "CIOptions") -> list[np.ndarray]:
    """Each stratum's cell counts of ``opts.resamples`` resamples of its own size."""
    return [multinomial(stratum_rng(opts.seed, k), c.counts, opts.resamples) for c, k in zip(strata, keys)]


def jackknife(strata: Sequence[Cells]) -> tuple[list[np.ndarray], np.ndarray]:
    """Leave-one-item-out replicates (one per non-empty cell of each stratum) and their weights (cell counts)."""
    blocks: list[list[np.ndarray]] = [[] for _ in strata]
    weights = []
    for s, c in enumerate(strata):
        m = len(c.counts)
        for j, other in enumerate(strata):
            blocks[j].append(c.counts - np.eye(m, dtype=np.int64) if j == s else np.tile(other.counts, (m, 1)))
        weights.append(c.counts)
    return [np.concatenate(b) for b in blocks], np.concatenate(weights).astype(float)


def interval(boot: np.ndarray, point: float, level: float, method: str,
             jack: np.ndarray | None = None, weights: np.ndarray | None = None) -> list[float]:
    """The percentile or BCa interval of bootstrap values ``boot`` around ``point``."""
    from scipy.special import ndtr, ndtri

    boot = boot[np.isfinite(boot)]
    alpha = (1 - level) / 2
    qs = np.array([alpha, 1 - alpha])
    if method == "bca" and jack is not None and boot.size and np.ptp(boot) > 0:
        z0 = ndtri(((boot < point).mean() + (boot <= point).mean()) / 2)
        ok = np.isfinite(jack)
        w, j = weights[ok], jack[ok]
        mean = (w * j).sum() / w.sum()
        num, den = (w * (mean - j) ** 3).sum(), 6 * ((w * (mean - j) ** 2).sum()) ** 1.5
        a = num / den if den > 0 else 0.0
        z = ndtri(qs)
        adj = ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))
        if np.all(np.isfinite(adj)):
            qs = adj
    if not boot.size:
        return [float(point), float(point)]
    lo, hi = np.quantile(boot, qs)
    return [float(lo), float(hi)]


def bootstrap_intervals(strata: Sequence[Cells], keys: Sequence[str],
                        statistic: Callable[[list[np.ndarray]], dict[str, np.ndarray]],
                        opts: CIOptions) -> dict[str, list[float]]:
    """The interval of every value ``statistic`` returns (name → one value per row of cell counts)."""
    points = {k: float(v[0]) for k, v in statistic([c.counts[None, :] for c in strata]).items()}
    boot = statistic(draw(strata, keys, opts))
    jack, weights = jackknife(strata) if opts.bootstrap == "bca" else (None, None)
    jack_values = statistic(jack) if jack is not None else {}
    return {k: interval(boot[k], points[k], opts.level, opts.bootstrap, jack_values.get(k), weights)
            for k in points}


# ------------------------------------------------------------------------------------------------ FERBench's blocks


def pooling_matrix(own: Sequence[str], pooled: Sequence[str], label_map: dict[str, str]) -> np.ndarray:
    """own labels × pooled labels: 1 where ``label_map`` (identity elsewhere) sends one to the other."""
    index = {label: i for i, label in enumerate(pooled)}
    return np.eye(len(pooled))[[index[label_map.get(x, x)] for x in own]]


def stratified(pairs: dict[str, tuple[Sequence[str], Sequence[str]]], opts: CIOptions,
               label_map: dict[str, str] | None = None) -> dict:
    """Intervals of every set (key → (truths, predictions)), of the pooled total (labels renamed by ``label_map``)
    and of the mean of sets, from one bootstrap stratified by set: ``{"sets": {key: ci95}, "pooled": ci95, "mean":
    ci95}`` with ``ci95 = {"accuracy": [lo, hi], "uar": [lo, hi], "f1": [lo, hi]}``. A set's and the pooled
    accuracy intervals are the proportion's (Wilson or Clopper–Pearson); the mean of sets' is bootstrapped."""
    label_map = label_map or {}
    keys = list(pairs)
    own = [sorted(set(pairs[k][0]) | set(pairs[k][1])) for k in keys]
    pooled = sorted({label_map.get(x, x) for labels in own for x in labels})
    strata = [cells_of(*pairs[k], labels) for k, labels in zip(keys, own)]
    maps = [pooling_matrix(labels, pooled, label_map) for labels in own]

    def statistic(draws: list[np.ndarray]) -> dict[str, np.ndarray]:
        per = [sums(c, d) for c, d in zip(strata, draws)]
        out = {}
        for key, s in zip(keys, per):
            out.update({f"{key}.{m}": v for m, v in metrics_of(*s).items()})
        together = [sum(x[i] @ mp for x, mp in zip(per, maps)) for i in range(3)]
        out.update({f"pooled.{m}": v for m, v in metrics_of(*together).items()})
        for m in ("accuracy", "uar", "f1"):
            out[f"mean.{m}"] = np.mean([out[f"{k}.{m}"] for k in keys], axis=0)
        return out

    boot = bootstrap_intervals(strata, keys, statistic, opts)
    result: dict = {"sets": {}}
    for key, c in zip(keys, strata):
        result["sets"][key] = {"accuracy": proportion_ci(int(c.counts @ c.hit), c.n, opts.accuracy, opts.level),
                               "uar": boot[f"{key}.uar"], "f1": boot[f"{key}.f1"]}
    hits, n = sum(int(c.counts @ c.hit) for c in strata), sum(c.n for c in strata)
    result["pooled"] = {"accuracy": proportion_ci(hits, n, opts.accuracy, opts.level),
                        "uar": boot["pooled.uar"], "f1": boot["pooled.f1"]}
    result["mean"] = {m: boot[f"mean.{m}"] for m in ("accuracy", "uar", "f1")}
    return result


def recall_intervals(rows: list[dict], opts: CIOptions) -> None:
    """Add ``recall_ci95`` to per-class rows (their recall is tp / support: a proportion; None without support)."""
    for r in rows:
        tp = int(round(r["recall"] * r["support"]))
        r["recall_ci95"] = proportion_ci(tp, r["support"], opts.accuracy, opts.level)


def add_set_intervals(report: dict, truths: Sequence[str], preds: Sequence[str], opts: CIOptions,
                      key: str = "set") -> dict:
    """One set's metrics JSON with its intervals: ``overall.ci95``, per-class ``recall_ci95`` and ``ci``."""
    report["overall"]["ci95"] = stratified({key: (truths, preds)}, opts)["sets"][key]
    recall_intervals(report["per_class"], opts)
    report["ci"] = opts.describe()
    return report


def fmt_ci(value: float, ci: Sequence[float] | None, digits: int = 2) -> str:
    """``47.40 [45.62, 49.18]`` (percentages) or the bare value without an interval."""
    text = f"{100 * value:.{digits}f}"
    return text if not ci else f"{text} [{100 * ci[0]:.{digits}f}, {100 * ci[1]:.{digits}f}]"
