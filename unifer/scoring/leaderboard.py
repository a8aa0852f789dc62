"""``unifer leaderboard``: every scored run of FERBench in one table, as Markdown and CSV, and drawn.

A run is a name shared by results files ``eval_<set>/results/<set>_<run>_results.json``; it counts as scored for
a set when its metrics file ``<set>_<run>_metrics.json`` is there (the per-set scorer wrote it). The numbers are
computed again from the results, under both protocols, so the table never mixes stale metrics with newer answers:
per-set accuracy, the pooled accuracy (the paper's total: the four sets' items together) and the mean of the
per-set accuracies, the pooled macro F1, and the share of responses holding an ``<answer>…</answer>`` block. Pooled
and mean numbers need all four sets; a run with fewer shows its sets and "–" there. The engine, model and image size
come from each results file's sidecar (``unifer.data.runmeta``). A reasoning section follows the table (the rates of
``unifer.scoring.reasoning_report``, and a judge's ratings where ``unifer judge`` ran).

Written into ``--out`` (default ``eval_total/results/leaderboard/``, never ``figs/``): ``leaderboard.md``,
``leaderboard.csv``, ``leaderboard.json``, ``leaderboard_heatmap.png`` (runs × sets, paper accuracy) and
``leaderboard_ranked.png`` (runs ranked by pooled accuracy, both protocols).
"""
from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from unifer.data.jsonio import write_json_atomic, write_text_atomic
from unifer.data.runmeta import read_meta
from unifer.data.sets import REPO_ROOT, SET_KEYS, SETS, get_set, resolve_path
from unifer.errors import UniferError
from unifer.scoring.aggregate import is_error, load_results, overall_metrics, pool, predict, relative
from unifer.scoring.extract import ANSWER_PATTERN, PROTOCOLS
from unifer.scoring.reasoning_report import REASONING_COLUMNS, leaderboard_section, reasoning_columns

DEFAULT_OUT = Path("eval_total") / "results" / "leaderboard"
CSV_COLUMNS = ("rank", "run", "model", "engine", "model_id", "image_size", "sets", "items", "errors",
               *(f"{key}_{p}" for key in SET_KEYS for p in PROTOCOLS), "pooled_paper", "pooled_strict",
               "mean_paper", "mean_strict", "pooled_f1_paper", "pooled_f1_strict", "answer_share",
               "pooled_uar_paper", "pooled_uar_strict", "pooled_best", *REASONING_COLUMNS)


def find_runs(root: Path, include_unscored: bool = False) -> dict[str, dict[str, Path]]:
    """run name → {set key: results file}, for every set where the run is scored (or has results, if asked)."""
    runs: dict[str, dict[str, Path]] = {}
    for key in SET_KEYS:
        folder = root / f"eval_{key}" / "results"
        prefix, suffix = f"{key}_", "_results.json"
        for results in sorted(folder.glob(f"{prefix}*{suffix}")):
            run = results.name[len(prefix):-len(suffix)]
            if not run:
                continue
            if include_unscored or (folder / f"{key}_{run}_metrics.json").is_file():
                runs.setdefault(run, {})[key] = results
    return runs


def score_run(run: str, files: dict[str, Path]) -> dict:
    """One leaderboard row: the run's numbers under both protocols, from its results files."""
    records = {key: load_results(path, get_set(key)) for key, path in files.items()}
    meta = next((m for m in (read_meta(files[k]) for k in SET_KEYS if k in files) if m), {})
    row = {"run": run, "model": meta.get("display_name") or run, "engine": meta.get("engine") or "",
           "model_id": meta.get("model_id") or "", "image_size": meta.get("image_size", ""),
           "sets": len(records), "items": sum(len(r) for r in records.values()),
           "errors": sum(is_error(x) for r in records.values() for x in r)}
    complete = len(records) == len(SET_KEYS)
    for proto in PROTOCOLS:
        preds = {key: predict(recs, get_set(key), proto) for key, recs in records.items()}
        accs = {}
        for key, p in preds.items():
            accs[key] = overall_metrics(p)["accuracy"] if p.truths else None
            row[f"{key}_{proto}"] = accs[key]
        if complete:
            pooled = overall_metrics(pool(preds))
            row[f"pooled_{proto}"], row[f"pooled_f1_{proto}"] = pooled["accuracy"], pooled["f1"]
            row[f"mean_{proto}"] = sum(accs.values()) / len(accs)
    answered = [x for r in records.values() for x in r]
    row["answer_share"] = (sum(1 for x in answered if not is_error(x) and ANSWER_PATTERN.search(x["model_response"]))
                           / len(answered)) if answered else None
    row.update(reasoning_columns(records, files))
    return row


def rank(rows: list[dict]) -> list[dict]:
    """Complete runs first, by pooled accuracy (paper), then mean of sets; incomplete ones after, by name."""
    def key(r):
        pooled = r.get("pooled_paper")
        return (pooled is None, -(pooled or 0.0), -(r.get("mean_paper") or 0.0), r["run"])

    ordered = sorted(rows, key=key)
    for n, r in enumerate(ordered, 1):
        r["rank"] = n if r.get("pooled_paper") is not None else ""
    return ordered


def markdown(rows: list[dict], notes: str = "") -> str:
    from unifer.scoring.leaderboard_stats import cell

    head = (["#", "model", "run", "engine"] + [SETS[k].name for k in SET_KEYS] +
            ["Total (pooled)", "Mean of sets", "UAR (pooled)", "macro F1 (pooled)", "`<answer>` share", "items",
             "errors"])
    out = ["Accuracy %, paper / strict protocol (macro F1 likewise); image size and engine as recorded by the run.",
           "", "| " + " | ".join(head) + " |", "|" + "|".join(["---:", "---", "---", "---"] + ["---:"] * (len(head) - 4)) + "|"]
    for r in rows:
        cells = [str(r["rank"]), r["model"], f"`{r['run']}`", r["engine"] or "–"]
        cells += [cell(r, k) for k in (*SET_KEYS, "pooled", "mean", "pooled_uar", "pooled_f1")]
        share = r.get("answer_share")
        cells += ["–" if share is None else f"{100 * share:.0f}%", str(r["items"]), str(r["errors"])]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n" + (f"\n{notes}\n" if notes else "")


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: ("" if r.get(c) is None else (repr(r[c]) if isinstance(r.get(c), float) else r[c]))
                         for c in CSV_COLUMNS})
    return buf.getvalue()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None,
                        help="the folder holding eval_<set>/results/ (default: the repository)")
    parser.add_argument("--out", default=None, help=f"output folder (default {DEFAULT_OUT}/ in the repository)")
    parser.add_argument("--runs", default=None, help="only these runs, comma-separated (default: every scored run)")
    parser.add_argument("--include-unscored", action="store_true",
                        help="also runs whose per-set scorer has not run (results without a metrics file)")
    parser.add_argument("--no-figs", action="store_true", help="tables only")
    parser.add_argument("--no-ci", action="store_true",
                        help="no intervals, no paired marks, no power line (the point values are the same)")


def run(args: argparse.Namespace) -> int:
    root = resolve_path(args.root) if args.root else REPO_ROOT
    out = resolve_path(args.out) if args.out else REPO_ROOT / DEFAULT_OUT
    runs = find_runs(root, args.include_unscored)
    if args.runs:
        wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
        missing = [r for r in wanted if r not in runs]
        if missing:
            raise UniferError(f"no scored results for run(s) {', '.join(missing)} under {root}/eval_<set>/results/ "
                              f"(scored runs: {', '.join(sorted(runs)) or 'none'})")
        runs = {r: runs[r] for r in wanted}
    if not runs:
        raise UniferError(f"no scored runs under {root}/eval_<set>/results/: run infer_unifer.py and eval_unifer.py "
                          "first (or pass --include-unscored)")
    rows = rank([score_run(name, files) for name, files in runs.items()])
    notes = ""
    if not args.no_ci:
        from unifer.scoring.intervals import CIOptions
        from unifer.scoring.leaderboard_stats import annotate
        from unifer.scoring.leaderboard_stats import notes as stats_notes

        notes = stats_notes(annotate(rows, runs, CIOptions()), marked=True)
    table = markdown(rows, notes) + leaderboard_section(rows)
    written = []
    for name, text in (("leaderboard.md", table), ("leaderboard.csv", csv_text(rows))):
        written.append(write_text_atomic(out / name, text))
    write_json_atomic(out / "leaderboard.json", {"rows": rows, "root": str(root)})
    written.append(out / "leaderboard.json")
    if not args.no_figs:
        from unifer.scoring.plots import leaderboard_heatmap, ranked_bars

        written.append(leaderboard_heatmap(rows, out / "leaderboard_heatmap.png"))
        written.append(ranked_bars(rows, out / "leaderboard_ranked.png"))
    print(table)
    print("wrote " + ", ".join(relative(p) for p in written))
    return 0
