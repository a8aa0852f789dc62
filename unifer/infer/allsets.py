"""All of FERBench in one process: ``eval_total/code/infer_unifer.py`` and ``unifer ferbench run``.

The per-set scripts' flags, with ``--qa-dir`` / ``--results-dir`` in place of ``--input`` / ``--output``; one model
load answers every pending item of the four sets in one stream (``unifer.infer.suite``), and each set's results
file is the one its own script would write.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from unifer.data.sets import SET_KEYS, get_set, resolve_path
from unifer.errors import UniferError, run_cli
from unifer.infer.plan import RunPlan, resolve_run
from unifer.infer.runner import add_arguments as add_inference_arguments
from unifer.infer.suite import answer_sets


def plan_sets(args) -> dict[str, RunPlan]:
    """Every chosen set's plan (model, records, output, run header), all checked before anything heavy loads. The
    results go where each set's own script would write them, or into ``--results-dir`` under the same names."""
    keys, qa_dir, results_dir = chosen_sets(args)
    flags = {**vars(args), "input": None, "output": None}
    plans = {}
    for key in keys:
        plan = resolve_run(flags, key, input_path=qa_dir / get_set(key).qa_filename if qa_dir else None)
        plans[key] = plan.with_output(results_dir / plan.output.name) if results_dir is not None else plan
    return plans


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The per-set scripts' flags, with ``--qa-dir`` / ``--results-dir`` in place of ``--input`` / ``--output``."""
    add_inference_arguments(ap, set_key="all", paths=False)
    ap.add_argument("--sets", default=",".join(SET_KEYS),
                    help=f"comma-separated sets to answer (default all four: {','.join(SET_KEYS)})")
    ap.add_argument("--qa-dir", default=None,
                    help="folder holding <set>_qa.json for every set (default: each eval_<set>/data/)")
    ap.add_argument("--results-dir", default=None,
                    help="write the per-set results files here (default: each eval_<set>/results/)")


def chosen_sets(args) -> tuple[list[str], Path | None, Path | None]:
    """(set keys, --qa-dir, --results-dir) from the flags."""
    try:
        keys = list(dict.fromkeys(get_set(k).key for k in args.sets.split(",") if k.strip()))
    except ValueError as e:
        raise UniferError(f"--sets: {e}") from None
    if not keys:
        raise UniferError("--sets names no set")
    qa_dir = resolve_path(args.qa_dir) if args.qa_dir else None
    results_dir = resolve_path(args.results_dir) if args.results_dir else None
    return keys, qa_dir, results_dir


def run(args: argparse.Namespace) -> int:
    return answer_sets(plan_sets(args))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="eval_total/code/infer_unifer.py",
                                 description="Answer all of FERBench in one process: one model load, one stream.")
    add_arguments(ap)
    return run(ap.parse_args(argv))


def cli(argv: list[str] | None = None) -> int:
    """Entry point of ``eval_total/code/infer_unifer.py``."""
    return run_cli(main, argv)
