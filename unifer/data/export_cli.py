"""``unifer ferbench export``: FERBench as a Hugging Face dataset, an lmms-eval task folder or VLMEvalKit TSVs,
built from the user's own image root (``unifer.data.exports``; docs/exports.md)."""
from __future__ import annotations

import argparse

from unifer.data import exports
from unifer.data.sets import SET_KEYS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=exports.FORMATS,
                        help="hf: a datasets folder (Parquet + card); lmms-eval: that plus a task package; "
                             "vlmevalkit: one TSV per set")
    parser.add_argument("--image-root", required=True,
                        help="the folder the QA files' image paths are relative to (RAF-DB/, FERPlus/, ...)")
    parser.add_argument("--out", required=True, help="the folder to write (it holds the images: keep it private)")
    parser.add_argument("--qa-dir", default=None,
                        help="folder holding <set>_qa.json for every set (default: each eval_<set>/data/)")
    parser.add_argument("--sets", default=",".join(SET_KEYS),
                        help=f"comma-separated sets (default all four: {','.join(SET_KEYS)})")
    parser.add_argument("--max-new-tokens", type=int, default=exports.MAX_NEW_TOKENS,
                        help=f"lmms-eval: the token budget of each answer (default the paper's {exports.MAX_NEW_TOKENS})")


def run(args: argparse.Namespace) -> int:
    sets = exports.load_sets(args.qa_dir, args.sets)
    sizes = ", ".join(f"{s.key} {len(s.records)}" for s in sets)
    if args.format == "hf":
        written = exports.export_hf(sets, args.image_root, args.out)
        folder = next(iter(written.values())).parents[1]
        print(f"Hugging Face dataset ({sizes} items) -> {folder}\n"
              f"  datasets.load_dataset({str(folder)!r}, {sets[0].key!r}, split='test')")
    elif args.format == "lmms-eval":
        tasks = exports.export_lmms_eval(sets, args.image_root, args.out, args.max_new_tokens)
        print(f"lmms-eval tasks ({sizes} items) -> {tasks}\n"
              f"  lmms-eval --include_path {tasks} --tasks {exports.LMMS_GROUP} --log_samples --output_path OUT ...\n"
              f"  or: PYTHONPATH={tasks.parents[1]} LMMS_EVAL_PLUGINS={exports.LMMS_PACKAGE} lmms-eval "
              f"--tasks {exports.LMMS_GROUP} ...")
    else:
        written = exports.export_vlmevalkit(sets, args.image_root, args.out)
        for key, path in written.items():
            print(f"VLMEvalKit TSV ({key}: {len(next(s for s in sets if s.key == key).records)} items) -> {path}")
        print("  copy them into $LMUData (default ~/LMUData) and run: python run.py --data "
              + " ".join(exports.VLMEVALKIT_NAMES[k] for k in written) + " --model MODEL (see docs/exports.md)")
    return 0
