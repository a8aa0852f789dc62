"""``unifer ferbench``: the data side (build | check | rlvr, ``unifer.data.ferbench``) and ``run`` — answer all of
FERBench with one model load (``unifer.infer.suite``), score every set and the total under both protocols
(``unifer.pipeline.scores``), print the table."""
from __future__ import annotations

import argparse

from unifer.data import ferbench as data_ferbench
from unifer.data.sets import SETS
from unifer.infer import allsets
from unifer.pipeline.scores import score_run
from unifer.scoring.files import DEFAULT_TOTAL_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = data_ferbench.add_arguments(parser)
    r = sub.add_parser("run", help="answer the four sets with one model load, score them and the total",
                       description="Answer all of FERBench in one process (the flags of eval_total/code/"
                                   "infer_unifer.py), then score every set and the total under both protocols.")
    allsets.add_arguments(r)
    from unifer.infer.ray_pool import add_executor_arguments

    add_executor_arguments(r)


def run(args: argparse.Namespace) -> int:
    if args.action != "run":
        return data_ferbench.run(args)
    from unifer.infer.ray_pool import executor_from
    from unifer.infer.suite import answer_sets

    plans = allsets.plan_sets(args)
    rc = answer_sets(plans, executor_from(args))
    if rc or args.shard:
        if args.shard and not rc:
            print("shard done; the sets are scored once every shard is merged (unifer ferbench run --merge)")
        return rc
    keys = list(plans)
    results = {key: plan.output for key, plan in plans.items()}
    total_dir = results[keys[0]].parent if args.results_dir else DEFAULT_TOTAL_DIR
    scores = score_run(results, plans[keys[0]].run_name, total_dir)
    if scores.table is None:
        print(f"scored {', '.join(SETS[k].name for k in keys)}: metrics beside each results file")
        return 0
    print("\nFERBench — accuracy % under both protocols (metrics beside the results files, the total in "
          f"{total_dir}):\n")
    print(scores.table.strip())
    return 0
