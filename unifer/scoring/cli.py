"""The scorers' command lines: ``eval_<set>/code/eval_unifer.py`` and ``eval_total/code/eval_unifer.py``.

Both are thin faces over ``set_main(key)`` / ``total_main()``; everything they compute lives in ``unifer.scoring.aggregate``.
Defaults reproduce the paper's file names, resolved against the repository; figures go next to the metrics file
(``--no-figs``: none), and are copied into another folder only when ``--figs-dir DIR`` asks for it — scoring never
writes into the tracked ``figs/`` by itself (``unifer demo --figs`` is what refreshes the docs' figures).
``unifer eval --set S`` and ``unifer eval --total`` are the same two commands.
"""
from __future__ import annotations

import argparse

from unifer.data.sets import DEFAULT_RUN_NAME, SET_KEYS, SETS, get_set
from unifer.errors import UniferError, run_cli
from unifer.scoring.aggregate import PROTOCOLS, format_report, relative, resolve_default
from unifer.scoring.files import (
    DEFAULT_TOTAL_DIR,
    protocol_suffix,
    score_set_files,
    score_total_files,
    total_results_path,
)
from unifer.scoring.intervals import ACCURACY_METHODS, BOOTSTRAP_METHODS, CIOptions

TOTAL_FLAGS = {"rafdb": "rafdb", "ferplus": "ferplus", "affectnet": "affectnet", "sfew_2.0": "sfew"}


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=PROTOCOLS, default="paper",
                        help="paper (default): the paper's extraction; strict: only an exact <answer> counts")
    parser.add_argument("--run", default=DEFAULT_RUN_NAME,
                        help=f"run name in the default file names (default {DEFAULT_RUN_NAME})")
    parser.add_argument("--figs-dir", default=None,
                        help="also copy the figures into this folder (default: no copy; they stay beside the metrics)")
    parser.add_argument("--no-figs", action="store_true", help="write no figures at all")
    parser.add_argument("--no-ci", action="store_true", help="no 95%% intervals (the point values are the same)")
    parser.add_argument("--ci-accuracy", choices=ACCURACY_METHODS, default="wilson",
                        help="accuracy and per-class recall intervals: wilson (default) or clopper-pearson (exact)")
    parser.add_argument("--bootstrap", choices=BOOTSTRAP_METHODS, default="percentile",
                        help="UAR and macro-F1 intervals: percentile (default) or bca bootstrap")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--ferplus-votes", metavar="FILE", default=None,
                        help="FERPlus' label.csv (ten raters per test face): soft accuracy, agreed vs ambiguous "
                             "faces (FERPlus and the total)")


def ci_options(args: argparse.Namespace) -> CIOptions | None:
    """The intervals the flags ask for (None under --no-ci)."""
    if args.no_ci:
        return None
    try:
        return CIOptions(args.ci_accuracy, args.bootstrap, args.resamples, args.seed)
    except ValueError as e:
        raise UniferError(str(e)) from None


def votes_path(args: argparse.Namespace):
    return resolve_default(args.ferplus_votes, None) if args.ferplus_votes else None


# ------------------------------------------------------------------------------------------------------- per set


def _set_parser(set_key: str) -> argparse.ArgumentParser:
    s = get_set(set_key)
    parser = argparse.ArgumentParser(
        prog=f"eval_{s.key}/code/eval_unifer.py",
        description=f"Score {s.name} results of FERBench (the paper's metrics, or --protocol strict).",
    )
    parser.add_argument("--results", help=f"results file (default {relative(s.default_results_path())})")
    parser.add_argument("--output", help=f"metrics JSON (default {relative(s.default_metrics_path())}; "
                                          "_strict is added under --protocol strict)")
    _common_flags(parser)
    return parser


def run_set(set_key: str, argv: list[str] | None = None) -> int:
    return score_one_set(set_key, _set_parser(set_key).parse_args(argv))


def score_one_set(set_key: str, args: argparse.Namespace) -> int:
    s = get_set(set_key)
    results = resolve_default(args.results, s.default_results_path(args.run))
    default_out = s.default_metrics_path(args.run)
    output = resolve_default(args.output,
                             default_out.with_name(default_out.stem + protocol_suffix(args.protocol) + ".json"))
    if votes_path(args) is not None and set_key != "ferplus":
        raise UniferError(f"--ferplus-votes holds FERPlus' raters; {s.name} has none (score FERPlus or the total)")
    scored = score_set_files(set_key, results, output, args.protocol, args.run, figs=not args.no_figs,
                             figs_dir=args.figs_dir, ci=ci_options(args), votes=votes_path(args))
    print(format_report(scored.report, f"{s.name} · {relative(results)}"))
    if "ferplus_votes" in scored.report:
        from unifer.scoring.votes import format_votes

        print("\n" + format_votes(scored.report["ferplus_votes"]))
    print("\nwrote " + ", ".join(relative(p) for p in scored.written))
    return 0


def set_main(set_key: str, argv: list[str] | None = None) -> int:
    """Entry point of ``eval_<set>/code/eval_unifer.py``: one clear line and exit 2 on bad input."""
    return run_cli(lambda a: run_set(set_key, a), argv)


# ------------------------------------------------------------------------------------------------------- total


TOTAL_DESCRIPTION = ("Score the four FERBench sets together: pooled metrics (the paper's total), the mean of the "
                     "per-set accuracies, and a per-set table under both protocols (Markdown and CSV).")


def _add_total_inputs(parser: argparse.ArgumentParser) -> None:
    for key in SET_KEYS:
        parser.add_argument(f"--{TOTAL_FLAGS[key]}", dest=key.replace(".", "_"), metavar="PATH",
                            help=f"{SETS[key].name} results (default {relative(SETS[key].default_results_path())})")


def _total_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eval_total/code/eval_unifer.py", description=TOTAL_DESCRIPTION)
    _add_total_inputs(parser)
    parser.add_argument("--output", help=f"metrics JSON (default eval_total/results/{DEFAULT_RUN_NAME}_results.json)")
    _common_flags(parser)
    return parser


def run_total(argv: list[str] | None = None) -> int:
    return score_all_sets(_total_parser().parse_args(argv))


def score_all_sets(args: argparse.Namespace) -> int:
    paths = {key: resolve_default(getattr(args, key.replace(".", "_")), SETS[key].default_results_path(args.run))
             for key in SET_KEYS}
    output = resolve_default(args.output, total_results_path(DEFAULT_TOTAL_DIR, args.run, args.protocol))
    scored = score_total_files(paths, output, args.protocol, args.run, figs=not args.no_figs, figs_dir=args.figs_dir,
                               ci=ci_options(args), votes=votes_path(args))
    print(format_report(scored.report, "FERBench total (pooled over the four sets)"))
    print(f"\nmean of the per-set accuracies: {scored.report['mean_set_accuracy']:.4f}\n")
    if "ferplus_votes" in scored.report:
        from unifer.scoring.votes import format_votes

        print(format_votes(scored.report["ferplus_votes"]) + "\n")
    print(scored.table)
    print("wrote " + ", ".join(relative(p) for p in scored.written))
    return 0


def total_main(argv: list[str] | None = None) -> int:
    """Entry point of ``eval_total/code/eval_unifer.py``."""
    return run_cli(run_total, argv)



# ------------------------------------------------------------------------------------------------------- unifer eval


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``unifer eval --set S`` (one set, as ``eval_<set>/code/eval_unifer.py``) or ``unifer eval --total``."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--set", choices=SET_KEYS, help="score one set")
    which.add_argument("--total", action="store_true", help="score the four sets together (" + TOTAL_DESCRIPTION[22:])
    parser.add_argument("--results", help="--set: the results file (default eval_<set>/results/<set>_<run>_results.json)")
    _add_total_inputs(parser)
    parser.add_argument("--output", help="metrics JSON (default: beside the results, as the eval scripts write it)")
    _common_flags(parser)


def run(args: argparse.Namespace) -> int:
    if args.set:
        if any(getattr(args, key.replace(".", "_")) for key in SET_KEYS):
            raise UniferError("--rafdb/--ferplus/--affectnet/--sfew name the total's inputs; with --set use --results")
        return score_one_set(args.set, args)
    if args.results:
        raise UniferError("--results names one set's file; with --total use --rafdb/--ferplus/--affectnet/--sfew")
    return score_all_sets(args)
