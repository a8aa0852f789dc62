"""Figures: confusion matrices (counts and row-normalised), per-set accuracy bars, the leaderboard (heatmap and
ranking), training curves.

matplotlib is imported inside the functions (scoring without figures never pays for it) and only through its
object-oriented API with the Agg canvas: no pyplot, no global backend switch, nothing shown on a screen — safe on
a headless server and inside a notebook that uses another backend. Every figure is written atomically (temp
file beside it, then rename).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

PROTOCOL_COLOURS = {"paper": "#3b6ea8", "strict": "#e59a3a"}


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def copy_figure(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a written figure (e.g. into ``figs/``), atomically."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=".png", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst


def _heatmap(ax, values: np.ndarray, texts: list[list[str]], rows: Sequence[str], cols: Sequence[str], vmax: float,
             title: str, cbar_label: str):
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax if vmax > 0 else 1, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=cols, rotation=40, ha="right")
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = 0.6 * (vmax if vmax > 0 else 1)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            colour = "white" if values[i, j] > threshold else "black"
            ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=8, color=colour)
    if cols and cols[-1] == "unknown":  # set the non-answers apart from the confusions
        ax.axvline(len(cols) - 1.5, color="0.3", linewidth=1.2)
    ax.figure.colorbar(im, ax=ax, shrink=0.8, label=cbar_label)


def confusion_figure(
    matrix: Sequence[Sequence[int]],
    labels: Sequence[str],
    path: str | os.PathLike,
    title: str,
    unknown_per_class: Sequence[int] | None = None,
) -> Path:
    """Two panels, counts and row-normalised, rows true and columns predicted. Predictions outside the labels
    (``unknown``) get their own column when there are any, so every row sums to its support and the row-normalised
    diagonal is each class's recall."""
    counts = np.asarray(matrix, dtype=np.int64)
    labels = list(labels)
    cols = list(labels)
    if unknown_per_class is not None and any(unknown_per_class):
        counts = np.concatenate([counts, np.asarray(unknown_per_class, dtype=np.int64)[:, None]], axis=1)
        cols.append("unknown")
    support = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)

    side = 1.0 + 0.62 * len(cols)
    fig = _new_figure(2 * side + 2.2, side)
    fig.suptitle(title)
    ax_counts, ax_share = fig.subplots(1, 2)
    _heatmap(ax_counts, counts, [[str(v) for v in row] for row in counts], labels, cols,
             float(counts.max()) if counts.size else 0.0, "counts", "items")
    _heatmap(ax_share, share, [[f"{v:.2f}" for v in row] for row in share], labels, cols, 1.0,
             "row-normalised (diagonal = recall)", "share of the true class")
    return save_figure(fig, path)


def accuracy_bars(rows: Sequence[dict], path: str | os.PathLike, title: str, divider_before: int | None = None) -> Path:
    """Accuracy (%) per row name (a set, the pooled total, the mean of the sets) for each protocol in ``rows`` (the
    FERBench table rows), grouped by name; ``divider_before`` draws a line before that group (sets | aggregates)."""
    names = list(dict.fromkeys(r["set"] for r in rows))
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    by = {(r["set"], r["protocol"]): r for r in rows}
    fig = _new_figure(1.4 + 1.25 * len(names), 4.2)
    ax = fig.subplots()
    width = 0.8 / max(1, len(protocols))
    x = np.arange(len(names))
    for k, proto in enumerate(protocols):
        values = [100 * by[(n, proto)]["accuracy"] if (n, proto) in by else np.nan for n in names]
        offset = (k - (len(protocols) - 1) / 2) * width
        bars = ax.bar(x + offset, values, width, label=f"{proto} protocol",
                      color=PROTOCOL_COLOURS.get(proto, None))
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    if divider_before:
        ax.axvline(divider_before - 0.5, color="0.5", linestyle="--", linewidth=1)
    ax.set_xticks(x, labels=names, rotation=15)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if len(protocols) > 1:
        ax.legend(loc="upper left", fontsize=8, ncols=len(protocols))
    return save_figure(fig, path)


def leaderboard_heatmap(rows: Sequence[dict], path: str | os.PathLike,
                        title: str = "FERBench accuracy (%), paper protocol") -> Path:
    """Runs (rows, in the order given) × sets, then the pooled total and the mean of the sets: paper-protocol
    accuracy as colour and number; a missing set is blank. ``rows``: leaderboard rows (``<set>_paper`` keys)."""
    from unifer.data.sets import SET_KEYS, SETS

    cols = [SETS[k].name for k in SET_KEYS] + ["Total (pooled)", "Mean of sets"]
    keys = [f"{k}_paper" for k in SET_KEYS] + ["pooled_paper", "mean_paper"]
    values = np.array([[np.nan if r.get(k) is None else 100 * r[k] for k in keys] for r in rows], dtype=float)
    fig = _new_figure(2.2 + 1.15 * len(cols), 1.4 + 0.45 * len(rows))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=cols, rotation=25, ha="right")
    ax.set_yticks(range(len(rows)), labels=[r.get("model") or r["run"] for r in rows])
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if not np.isnan(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="black" if values[i, j] > 60 else "white")
    ax.axvline(len(SET_KEYS) - 0.5, color="white", linewidth=2)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8, label="accuracy (%)")
    return save_figure(fig, path)


def ranked_bars(rows: Sequence[dict], path: str | os.PathLike,
                title: str = "FERBench ranking: pooled accuracy (%)") -> Path:
    """Horizontal bars, best run on top: pooled accuracy under each protocol (runs with all four sets only), with
    error bars where the rows carry ``pooled_<protocol>_ci95``."""
    ranked = [r for r in rows if r.get("pooled_paper") is not None]
    fig = _new_figure(7.0, 1.3 + 0.5 * max(1, len(ranked)))
    ax = fig.subplots()
    y = np.arange(len(ranked))
    height = 0.38
    for k, proto in enumerate(("paper", "strict")):
        values = [100 * r[f"pooled_{proto}"] for r in ranked]
        cis = [r.get(f"pooled_{proto}_ci95") for r in ranked]
        xerr = (np.array([[v - 100 * c[0], 100 * c[1] - v] if c else [0, 0] for v, c in zip(values, cis)]).T
                if any(cis) else None)  # the 95% intervals, where the leaderboard computed them
        bars = ax.barh(y + (k - 0.5) * height, values, height, label=f"{proto} protocol",
                       color=PROTOCOL_COLOURS[proto])
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
        if xerr is not None:
            ax.errorbar(values, y + (k - 0.5) * height, xerr=xerr, fmt="none", ecolor="0.2", capsize=3, lw=1)
    ax.set_yticks(y, labels=[r.get("model") or r["run"] for r in ranked])
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(title if ranked else title + " — no run has all four sets")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def read_log_history(trainer_state: str | os.PathLike) -> list[dict]:
    """The per-step log entries of a Trainer run (``trainer_state.json`` in its output or checkpoint dir)."""
    import json

    state = json.loads(Path(trainer_state).read_text(encoding="utf-8"))
    return [e for e in state.get("log_history", []) if "step" in e]


def training_curves(panels: Sequence[tuple[str, str | os.PathLike, Sequence[str]]], path: str | os.PathLike,
                    title: str = "training curves") -> Path:
    """One panel per (title, trainer_state.json, metric keys): each key's logged values against the step, e.g.
    ``("cold-start SFT", sft/trainer_state.json, ["loss"])`` and ``("GRPO", ..., ["reward",
    "rewards/format_reward/mean"])``. Keys a run did not log are skipped."""
    fig = _new_figure(4.6 * len(panels), 3.4)
    fig.suptitle(title)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, state, keys) in zip(axes, panels):
        history = read_log_history(state)
        for key in keys:
            pts = [(e["step"], e[key]) for e in history if isinstance(e.get(key), (int, float))]
            if pts:
                steps, values = zip(*pts)
                ax.plot(steps, values, marker="o", markersize=3, linewidth=1.5, label=key)
        ax.set_title(panel_title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    return save_figure(fig, path)
