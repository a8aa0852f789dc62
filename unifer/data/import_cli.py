"""``unifer import lmms-eval SAMPLES.jsonl…`` and ``unifer import vlmevalkit PREDICTIONS.xlsx|tsv…``: another
tool's FERBench run as this repository's results files plus ``.meta.json`` (``unifer.data.imports``), ready for
``unifer eval``, ``unifer leaderboard`` and ``unifer report``."""
from __future__ import annotations

import argparse

from unifer.data import imports
from unifer.data.sets import resolve_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tool", choices=imports.TOOLS, help="the tool whose per-sample outputs these are")
    parser.add_argument("files", nargs="+",
                        help="lmms-eval: *_samples_ferbench_<set>.jsonl (--log_samples); vlmevalkit: "
                             "<model>_FERBench_<SET>.xlsx (or .tsv / .csv); one set per file")
    parser.add_argument("--run", default=None,
                        help="run name in the results file names (default: the model's name, from lmms-eval's "
                             "results JSON beside the samples or VLMEvalKit's file name)")
    parser.add_argument("--model", default=None, help="the model's name in the sidecar and the leaderboard")
    parser.add_argument("--set", default=None, help="the set of every file (default: read from the samples)")
    parser.add_argument("--qa-dir", default=None,
                        help="folder holding the <set>_qa.json the export was built from (default: each "
                             "eval_<set>/data/)")
    parser.add_argument("--results-dir", default=None,
                        help="write <set>_<run>_results.json here (default: each eval_<set>/results/, where the "
                             "leaderboard looks)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results file")


def run(args: argparse.Namespace) -> int:
    for name in args.files:
        path = resolve_path(name)
        if args.tool == "lmms-eval":
            samples = imports.read_lmms_eval(path)
            found, decoding = imports.lmms_eval_run(path)
            model = args.model or found
            fallback = path.parent.name
        else:
            samples, decoding = imports.read_vlmevalkit(path), {}
            model = args.model
            fallback = path.stem.split("_FERBench_")[0]
        fer_set = imports.sets_of(samples, path, args.set)
        qa_path, qa_records = imports.load_qa(fer_set, args.qa_dir)
        imported = imports.match(samples, qa_records, fer_set)
        run_name = args.run or imports.run_name_for(model, fallback)
        output = (resolve_path(args.results_dir) / fer_set.default_results_path(run_name).name if args.results_dir
                  else fer_set.default_results_path(run_name))
        output.parent.mkdir(parents=True, exist_ok=True)
        meta = imports.run_meta(args.tool, run_name, path, model, decoding)
        imports.write_import(imported, qa_path, output, meta, overwrite=args.overwrite)
        for line in imported.unmatched_samples[: imports.MAX_LISTED]:
            print(f"note: unmatched sample {line}")
        if len(imported.unmatched_samples) > imports.MAX_LISTED:
            print(f"note: and {len(imported.unmatched_samples) - imports.MAX_LISTED} more unmatched samples "
                  f"(all in {output.name[:-5]}.meta.json)")
        missing = imported.items_without_sample
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            print(f"note: {len(missing)} of {len(qa_records)} {fer_set.name} items have no sample ({shown}; all in "
                  f"{output.name[:-5]}.meta.json)")
        errors = sum(1 for r in imported.results if r.get("error") is True)
        print(f"{fer_set.name}: {len(imported.results)} items imported ({errors} failed requests as error items), "
              f"{len(imported.unmatched_samples)} samples unmatched -> {output}\n"
              f"  score it: unifer eval --set {fer_set.key} --results {output}")
    return 0
