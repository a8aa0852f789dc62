"""The scorers' command lines: ``eval_<set>/code/eval_unifer.py`` and ``eval_total/code/eval_unifer.py``.

Both are thin faces over ``set_main(key)`` / ``total_main()``; everything they compute lives in ``unifer.scoring.aggregate``.
Defaults reproduce the paper's file names, resolved against the repository; figures go next to the metrics file
(``--no-figs``: none), and are copied into another folder only when ``--figs-dir DIR`` asks for it — scoring never
writes into the tracked ``figs/`` by itself (``unifer demo --figs`` is what refreshes the docs' figures).
``unifer eval --set S`` and ``unifer eval --total`` are the same two commands.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from unifer.errors import UniferError, run_cli
from unifer.data.jsonio import WriteError, write_json_atomic, write_text_atomic
from unifer.data.sets import DEFAULT_RUN_NAME, REPO_ROOT, SET_KEYS, SETS, get_set
from unifer.scoring.aggregate import (
    PROTOCOLS,
    csv_table,
    format_report,
    load_results,
    markdown_table,
    relative,
    resolve_default,
    score_set,
    score_total,
)

TOTAL_FLAGS = {"rafdb": "rafdb", "ferplus": "ferplus", "affectnet": "affectnet", "sfew_2.0": "sfew"}


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=PROTOCOLS, default="paper",
                        help="paper (default): the paper's extraction; strict: only an exact <answer> counts")
    parser.add_argument("--run", default=DEFAULT_RUN_NAME,
                        help=f"run name in the default file names (default {DEFAULT_RUN_NAME})")
    parser.add_argument("--figs-dir", default=None,
                        help="also copy the figures into this folder (default: no copy; they stay beside the metrics)")
    parser.add_argument("--no-figs", action="store_true", help="write no figures at all")


def _suffix(protocol: str) -> str:
    return "" if protocol == "paper" else f"_{protocol}"


def _sibling(output: Path, old: str, new: str, ext: str) -> Path:
    """A file next to ``output`` named after it: ``x_metrics.json`` → ``x_confusion.png`` (last ``old`` replaced)."""
    stem = output.stem
    i = stem.rfind(old)
    stem = stem[:i] + new + stem[i + len(old):] if i >= 0 else f"{stem}{new}"
    return output.with_name(stem + ext)


def _figs_name(base: str, run: str, protocol: str) -> str:
    run_part = "" if run == DEFAULT_RUN_NAME else f"_{run}"
    return f"{base}{run_part}{_suffix(protocol)}.png"


def _refuse_overwriting_inputs(output: Path, inputs: list[Path]) -> None:
    for p in inputs:
        if output.resolve() == p.resolve():
            raise UniferError(f"--output {output} is the results file being scored; choose another path")


def _write(fn, path: Path, *args):
    try:
        return fn(path, *args)
    except WriteError:
        raise  # already one line, and it says the previous file is intact
    except OSError as e:
        raise UniferError(f"cannot write {path}: {e.strerror or e}") from None


def _draw(draw, path: Path, figs_dir: str, figs_name: str) -> list[Path]:
    """Draw one figure at ``path`` and copy it into ``figs_dir`` (unless empty)."""
    from unifer.scoring.plots import copy_figure

    try:
        out = [draw(path)]
        if figs_dir:
            out.append(copy_figure(path, Path(figs_dir).expanduser().resolve() / figs_name))
    except OSError as e:
        raise UniferError(f"cannot write figure {path}: {e.strerror or e}") from None
    return out


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
    output = resolve_default(args.output, default_out.with_name(default_out.stem + _suffix(args.protocol) + ".json"))
    _refuse_overwriting_inputs(output, [results])

    report = score_set(load_results(results, s), s, args.protocol)
    report["results_file"] = str(results)
    print(format_report(report, f"{s.name} · {relative(results)}"))
    _write(write_json_atomic, output, report)
    written = [output]
    if not args.no_figs:
        from unifer.scoring.plots import confusion_figure

        fig = _sibling(output, "_metrics", "_confusion", ".png")
        title = f"{s.name} · {args.protocol} protocol · accuracy {100 * report['overall']['accuracy']:.2f}%"
        written += _draw(lambda p: confusion_figure(report["confusion_matrix"], report["labels"], p, title,
                                                    report["unknown_per_class"]),
                         fig, args.figs_dir, _figs_name(f"confusion_{s.key}", args.run, args.protocol))
    print("\nwrote " + ", ".join(relative(p) for p in written))
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
    default_out = REPO_ROOT / "eval_total" / "results" / f"{args.run}_results{_suffix(args.protocol)}.json"
    output = resolve_default(args.output, default_out)
    _refuse_overwriting_inputs(output, list(paths.values()))

    records = {key: load_results(path, SETS[key]) for key, path in paths.items()}
    report = score_total(records, args.protocol)
    report["results_files"] = {key: str(p) for key, p in paths.items()}
    table = markdown_table(report["table"])
    print(format_report(report, "FERBench total (pooled over the four sets)"))
    print(f"\nmean of the per-set accuracies: {report['mean_set_accuracy']:.4f}\n")
    print(table)
    md, csv = _sibling(output, "_results", "_table", ".md"), _sibling(output, "_results", "_table", ".csv")
    _write(write_json_atomic, output, report)
    _write(write_text_atomic, md, table)
    _write(write_text_atomic, csv, csv_table(report["table"]))
    written = [output, md, csv]
    if not args.no_figs:
        from unifer.scoring.plots import accuracy_bars, confusion_figure

        acc = report["overall"]["accuracy"]
        written += _draw(lambda p: accuracy_bars(report["table"], p, "FERBench accuracy per set",
                                                            divider_before=len(SET_KEYS)),
                         _sibling(output, "_results", "_accuracy", ".png"), args.figs_dir,
                         _figs_name("ferbench_accuracy", args.run, "paper"))
        written += _draw(lambda p: confusion_figure(report["confusion_matrix"], report["labels"], p,
                                                    f"FERBench total · {args.protocol} protocol · accuracy "
                                                    f"{100 * acc:.2f}%", report["unknown_per_class"]),
                         _sibling(output, "_results", "_confusion", ".png"), args.figs_dir,
                         _figs_name("confusion_total", args.run, args.protocol))
    print("wrote " + ", ".join(relative(p) for p in written))
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
