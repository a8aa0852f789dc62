"""``unifer compare RUN_A RUN_B``: a paired comparison of two runs on the same FERBench items, per set and pooled.

A run is the name in its results files, ``eval_<set>/results/<set>_<run>_results.json`` under ``--root`` (default:
the repository); the sets both runs answered are compared. The numbers and their tests: ``unifer.scoring.paired``.
``--json`` prints one object ``{"protocol", "runs", "sets": {<set>: {...}, ..., "total": {...}}}``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from unifer.data.sets import REPO_ROOT, SET_KEYS, get_set, resolve_path
from unifer.errors import UniferError
from unifer.scoring.aggregate import PROTOCOLS, load_results
from unifer.scoring.intervals import CIOptions
from unifer.scoring.paired import compare_records


def results_path(root: Path, key: str, run: str) -> Path:
    return root / f"eval_{key}" / "results" / f"{key}_{run}_results.json"


def compare_runs(run_a: str, run_b: str, root: Path = REPO_ROOT, protocol: str = "paper",
                 opts: CIOptions | None = None) -> dict:
    """The comparison object ``--json`` prints (module docstring)."""
    opts = opts or CIOptions()
    keys = [k for k in SET_KEYS if results_path(root, k, run_a).is_file() and results_path(root, k, run_b).is_file()]
    if not keys:
        have = {r: [get_set(k).name for k in SET_KEYS if results_path(root, k, r).is_file()] for r in (run_a, run_b)}
        raise UniferError(f"no set answered by both {run_a} ({', '.join(have[run_a]) or 'no results'}) and {run_b} "
                          f"({', '.join(have[run_b]) or 'no results'}) under {root}/eval_<set>/results/")
    records = {side: {k: load_results(results_path(root, k, run), get_set(k)) for k in keys}
               for side, run in (("a", run_a), ("b", run_b))}
    return {"protocol": protocol, "runs": {"a": run_a, "b": run_b}, "ci": opts.describe(),
            "sets": compare_records(records["a"], records["b"], protocol, opts, (run_a, run_b))}


def _pts(v) -> str:
    return "–" if v is None else f"{100 * v:+.2f}"


def _diff(block: dict, m: str) -> str:
    ci = block.get(f"{m}_diff_ci95")
    text = _pts(block.get(f"{m}_diff"))
    return text if not ci else f"{text} [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"


def format_comparison(result: dict) -> str:
    """The comparison as a Markdown table (percentage points) with the verdicts under it."""
    a, b = result["runs"]["a"], result["runs"]["b"]
    head = ["Set", "Pairs", "Left out (errors)", f"Acc A", f"Acc B", "A only", "B only", "McNemar p",
            "Δ Acc [95%]", "Δ UAR [95%]", "Δ F1 [95%]"]
    lines = [f"A = {a}, B = {b} · {result['protocol']} protocol · differences A − B in points", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for key, block in result["sets"].items():
        name = "Total (pooled)" if key == "total" else get_set(key).name
        acc = [("–" if block[f"{s}_accuracy"] is None else f"{100 * block[f'{s}_accuracy']:.2f}") for s in "ab"]
        lines.append("| " + " | ".join([name, str(block["n"]), str(block["excluded_errors"]), *acc,
                                        str(block["a_only"]), str(block["b_only"]), f"{block['mcnemar_p']:.3g}",
                                        _diff(block, "accuracy"), _diff(block, "uar"), _diff(block, "f1")]) + " |")
    lines += ["", "McNemar p: exact two-sided binomial test of the items only one run got right; Δ Acc: Newcombe's "
              "paired interval; Δ UAR, Δ F1: paired bootstrap over items (pooled: resampled within each set).",
              ""]
    for key, block in result["sets"].items():
        name = "pooled" if key == "total" else get_set(key).name
        verdict = ("A is better" if block["a_only"] > block["b_only"] else "B is better")
        sig = block["mcnemar_p"] < 0.05
        lines.append(f"{name}: " + (f"{verdict} (p = {block['mcnemar_p']:.3g} < 0.05)" if sig else
                                     f"no significant accuracy difference (p = {block['mcnemar_p']:.3g})"))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", metavar="RUN_A", help="a run name (eval_<set>/results/<set>_<RUN_A>_results.json)")
    parser.add_argument("run_b", metavar="RUN_B", help="the run to compare it with")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="paper",
                        help="paper (default): the paper's extraction; strict: only an exact <answer> counts")
    parser.add_argument("--root", default=None, help="the folder holding eval_<set>/results/ (default: the repository)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--bootstrap", choices=("percentile", "bca"), default="percentile",
                        help="UAR and F1 difference intervals: percentile (default) or bca")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def run(args: argparse.Namespace) -> int:
    root = resolve_path(args.root) if args.root else REPO_ROOT
    try:
        opts = CIOptions(bootstrap=args.bootstrap, resamples=args.resamples, seed=args.seed)
    except ValueError as e:
        raise UniferError(str(e)) from None
    result = compare_runs(args.run_a, args.run_b, root, args.protocol, opts)
    print(json.dumps(result, indent=1) if args.json else format_comparison(result))
    return 0
