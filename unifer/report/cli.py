"""``unifer report``: one folder, ``index.html`` and its files, that shows what a model said about every face.

The inputs are ``eval_total``'s: the four results files (``--rafdb --ferplus --affectnet --sfew``), each defaulting
to ``eval_<set>/results/<set>_<run>_results.json``. ``--compare`` names a second run (a run name, or its four
files in the order RAF-DB, FERPlus, AffectNet, SFEW 2.0) whose disagreements the page lists side by side.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from unifer.data.sets import DEFAULT_RUN_NAME, REPO_ROOT, SET_KEYS, SETS
from unifer.errors import UniferError
from unifer.report.build import write_report
from unifer.report.thumbs import DEFAULT_SIZE
from unifer.scoring.aggregate import relative, resolve_default

#: The total scorer's flag of each set (``eval_total/code/eval_unifer.py``).
SET_FLAGS = {"rafdb": "rafdb", "ferplus": "ferplus", "affectnet": "affectnet", "sfew_2.0": "sfew"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for key in SET_KEYS:
        parser.add_argument(f"--{SET_FLAGS[key]}", dest=key.replace(".", "_"), metavar="PATH",
                            help=f"{SETS[key].name} results (default {relative(SETS[key].default_results_path())})")
    parser.add_argument("--run", default=DEFAULT_RUN_NAME,
                        help=f"run name in the default file names (default {DEFAULT_RUN_NAME})")
    parser.add_argument("--image-root", default=None,
                        help="prefix of the records' image paths, as inference takes it (default: "
                             "$UNIFER_IMAGE_ROOT, else /); images not found there show a placeholder")
    parser.add_argument("--out", default=None,
                        help="the report folder (default eval_total/results/report_<run>/); an earlier report "
                             "there is replaced")
    parser.add_argument("--compare", nargs="+", metavar="RUN_OR_FILES",
                        help="a second run: its name (default file names) or its four results files "
                             "(RAF-DB FERPlus AffectNet SFEW 2.0); the page lists where the two disagree and the "
                             "paired test per set (unifer compare)")
    parser.add_argument("--title", default=None, help="the page's title (default: FERBench report: <run>)")
    parser.add_argument("--thumb-size", type=int, default=DEFAULT_SIZE,
                        help=f"thumbnail size in pixels (default {DEFAULT_SIZE}; 0: no thumbnails)")


def compare_paths(values: list[str] | None) -> tuple[dict[str, Path] | None, str]:
    """``--compare``'s files and the name the page gives that run."""
    if not values:
        return None, ""
    if len(values) == 1:
        return {key: SETS[key].default_results_path(values[0]) for key in SET_KEYS}, values[0]
    if len(values) != len(SET_KEYS):
        raise UniferError(f"--compare takes a run name or {len(SET_KEYS)} results files "
                          f"({', '.join(SETS[k].name for k in SET_KEYS)}), got {len(values)} values")
    return {key: resolve_default(v, Path(v)) for key, v in zip(SET_KEYS, values)}, "compared run"


def run(args: argparse.Namespace) -> int:
    if args.thumb_size < 0:
        raise UniferError(f"--thumb-size must be 0 (none) or a size in pixels, got {args.thumb_size}")
    paths = {key: resolve_default(getattr(args, key.replace(".", "_")), SETS[key].default_results_path(args.run))
             for key in SET_KEYS}
    compare, compare_name = compare_paths(args.compare)
    out = resolve_default(args.out, REPO_ROOT / "eval_total" / "results" / f"report_{args.run}")
    image_root = args.image_root or os.environ.get("UNIFER_IMAGE_ROOT") or "/"
    if compare and compare_name == args.run:
        compare_name += " (compared)"
    summary = write_report(paths, out, image_root, compare, names=(args.run, compare_name or "compared run"),
                           title=args.title, thumb_size=args.thumb_size or None)
    print(f"wrote the report of {summary['items']} items to {relative(summary['index'])} "
          f"({summary['thumbnails']} of {summary['images']} images found under {image_root}; "
          f"{summary['bytes'] / 1e6:.1f} MB; {summary['seconds']:.1f} s)")
    print(f"open it in a browser: {summary['index'].as_uri()}")
    return 0
