"""``unifer ferbench``: the data side (build | check | rlvr, ``unifer.data.ferbench``) and ``run`` — answer all of
FERBench with one model load, score every set and the total under both protocols, print the table."""
from __future__ import annotations

import argparse

from unifer.data import ferbench as data_ferbench
from unifer.data.sets import REPO_ROOT, SETS
from unifer.infer import allsets

PROTOCOLS = ("paper", "strict")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = data_ferbench.add_arguments(parser)
    r = sub.add_parser("run", help="answer the four sets with one model load, score them and the total",
                       description="Answer all of FERBench in one process (the flags of eval_total/code/"
                                   "infer_unifer.py), then score every set and the total under both protocols.")
    allsets.add_arguments(r)


def run(args: argparse.Namespace) -> int:
    if args.action != "run":
        return data_ferbench.run(args)
    from unifer.infer.suite import answer_sets

    plans = allsets.plan_sets(args)
    rc = answer_sets(plans)
    if rc or args.shard:
        if args.shard and not rc:
            print("shard done; the sets are scored once every shard is merged (unifer ferbench run --merge)")
        return rc
    return score_run(plans, to_results_dir=bool(args.results_dir))


def score_run(plans: dict, to_results_dir: bool = False) -> int:
    """Score every answered set under both protocols (metrics beside each results file) and, with all four, the
    total; print the total's table (per set and pooled, both protocols)."""
    import contextlib
    import io

    from unifer.scoring.cli import score_all_sets, score_one_set

    keys = list(plans)
    results = {key: plan.output for key, plan in plans.items()}
    run_name = plans[keys[0]].run_name
    common = dict(no_figs=False, figs_dir=None, run=run_name)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        for key in keys:
            for protocol in PROTOCOLS:
                metrics = results[key].with_name(results[key].name.replace("_results.json", f"_metrics{_tag(protocol)}.json"))
                score_one_set(key, argparse.Namespace(**common, results=str(results[key]), output=str(metrics),
                                                      protocol=protocol))
    if len(keys) < len(SETS):
        print(f"scored {', '.join(SETS[k].name for k in keys)}: metrics beside each results file")
        return 0
    flags = {key.replace(".", "_"): str(results[key]) for key in SETS}
    total_dir = results[keys[0]].parent if to_results_dir else REPO_ROOT / "eval_total" / "results"
    with contextlib.redirect_stdout(log):
        for protocol in PROTOCOLS:
            score_all_sets(argparse.Namespace(**common, **flags, protocol=protocol,
                                              output=str(total_dir / f"{run_name}_results{_tag(protocol)}.json")))
    print("\nFERBench — accuracy % under both protocols (metrics beside the results files, the total in "
          f"{total_dir}):\n")
    print((total_dir / f"{run_name}_table.md").read_text(encoding="utf-8").strip())
    return 0


def _tag(protocol: str) -> str:
    return "" if protocol == "paper" else f"_{protocol}"
