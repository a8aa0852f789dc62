"""FERBench from the raw datasets: ``build`` the four QA files, ``check`` any QA file, write ``rlvr`` records.

    python -m unifer ferbench build --image-root ROOT [--datasets rafdb,ferplus,affectnet,sfew_2.0] [--out-dir DIR]
    python -m unifer ferbench check FILE|SET --image-root ROOT
    python -m unifer ferbench rlvr --image-root ROOT --dataset rafdb[,ferplus,…]|folder --split train --out F

``build`` reads the layouts of ``unifer.data.raw`` (the ones the paper's image paths show) and writes
``<set>_qa.json`` — by default into each set's ``eval_<set>/data/`` — with records
``{image_path, true_label, prompt, candidate_labels}`` sorted by image path; prompt and labels come from the
registry. Given the same files, the output equals the published FERBench as sets of records. No image is decoded
(``check`` does that). A set that fails is not written; the others are, and the exit status is non-zero.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from unifer.data.check import add_check_arguments, run_check
from unifer.data.jsonio import write_json_atomic, write_text_atomic
from unifer.data.raw import BENCHMARK_SPLITS, DATASET_FOLDERS, LAYOUTS, Scan, scan_dataset, to_set_label
from unifer.data.records import solution_label, validate_records
from unifer.data.sets import SET_KEYS, FERSet, get_set, resolve_path
from unifer.errors import DataError, UniferError


def qa_record(fer_set: FERSet, image_path: str, label: str) -> dict:
    return {"image_path": image_path, "true_label": label, "prompt": fer_set.prompt,
            "candidate_labels": list(fer_set.labels)}


def rlvr_record(fer_set: FERSet, image_path: str, label: str) -> dict:
    return {"image_path": image_path, "problem": fer_set.prompt, "solution": f"<answer>{label}</answer>"}


def build_set(key: str, image_root: str | Path, affectnet_csv: str | Path | None = None,
              split: str | None = None) -> tuple[list[dict], Scan]:
    """One set's QA records from its raw layout (``split``, default the benchmark's), sorted by image path."""
    fer_set = get_set(key)
    scan = scan_dataset(fer_set.key, Path(image_root), split or BENCHMARK_SPLITS[fer_set.key],
                        affectnet_csv=affectnet_csv)
    records = [qa_record(fer_set, p, scan.labels[p]) for p in sorted(scan.labels)]
    _assert_valid(records, "qa", fer_set.qa_filename)
    return records, scan


def rlvr_from_scan(scan: Scan, vocabulary: FERSet) -> tuple[list[dict], Counter]:
    """RLVR records (the set's prompt, ``<answer>label</answer>``) and the labels the set has no word for."""
    records, skipped = [], Counter()
    for p in sorted(scan.labels):
        label = to_set_label(scan.labels[p], vocabulary)
        if label is None:
            skipped[scan.labels[p]] += 1
        else:
            records.append(rlvr_record(vocabulary, p, label))
    return records, skipped


def _assert_valid(records: list[dict], kind: str, name: str) -> None:
    # The layouts cannot produce a bad record; this guards the guarantee that every file we write loads.
    for p in validate_records(records, kind):
        if p.severity == "error":
            raise DataError(name, p.message, index=p.index, field=p.field)


def _parse_datasets(text: str | None, allowed) -> list[str]:
    if text is None:
        return []
    keys = []
    for part in (t.strip() for t in text.split(",")):
        if not part:
            continue
        key = "folder" if part == "folder" else get_set_key(part)
        if key not in allowed:
            raise UniferError(f"unknown dataset {part!r}; choose from: {', '.join(allowed)}")
        if key not in keys:
            keys.append(key)
    if not keys:
        raise UniferError("no dataset named (e.g. --datasets rafdb,ferplus)")
    return keys


def get_set_key(name: str) -> str:
    try:
        return get_set(name).key
    except ValueError as e:
        raise UniferError(str(e)) from None


def _label_summary(labels) -> str:
    return ", ".join(f"{k} {v}" for k, v in Counter(labels).most_common())


def qa_filename(fer_set: FERSet, split: str | None) -> str:
    """``<set>_qa.json`` for the benchmark split; ``<set>_<split>_qa.json`` for another (``train``)."""
    if split is None or split in ("test", "val", "validation") or split == BENCHMARK_SPLITS[fer_set.key]:
        return fer_set.qa_filename
    return f"{fer_set.key}_{split}_qa.json"


def build(image_root, datasets: str | None = None, out_dir=None, affectnet_csv=None,
          split: str | None = None) -> dict[str, Path]:
    """Build the requested sets (default: every set whose folder is present). Returns set → written file.
    ``split`` (e.g. ``train``): that split of each layout instead of the benchmark's, as ``<set>_<split>_qa.json``
    (the records' shape is FERBench's, for ``unifer distill``)."""
    root = resolve_path(image_root)
    if not root.is_dir():
        raise DataError(root, "image root is not a directory")
    requested = _parse_datasets(datasets, SET_KEYS)
    keys = requested or list(SET_KEYS)
    written: dict[str, Path] = {}
    failures: list[str] = []
    for key in keys:
        top = root / DATASET_FOLDERS[key]
        if not requested and not top.is_dir():
            print(f"note: {key}: skipped ({top} not found)")
            continue
        fer_set = get_set(key)
        try:
            csv_path = resolve_path(affectnet_csv) if (affectnet_csv and key == "affectnet") else None
            records, scan = build_set(key, root, affectnet_csv=csv_path, split=split)
        except UniferError as e:
            failures.append(f"{key}: {e}")
            print(f"error: {key}: {e} (nothing written for {key})", file=sys.stderr)
            continue
        for note in scan.notes[:10]:
            print(f"note: {key}: {note}")
        name = qa_filename(fer_set, split)
        out = (resolve_path(out_dir) / name) if out_dir else fer_set.default_qa_path().with_name(name)
        write_json_atomic(out, records)
        written[key] = out
        print(f"{key}: {len(records)} records -> {out} ({_label_summary(r['true_label'] for r in records)})")
    if len(failures) == 1:
        raise UniferError(failures[0])
    if failures:
        raise UniferError(f"{len(failures)} sets failed ({', '.join(f.split(':')[0] for f in failures)}); "
                          "see the errors above")
    if not written:
        raise UniferError(f"no dataset folders under {root} (expected any of: {', '.join(DATASET_FOLDERS.values())})")
    return written


def write_rlvr(image_root, datasets: str, split: str, out, vocabulary: str | None = None, folder=None,
               affectnet_csv=None) -> list[dict]:
    """RLVR records from labeled folders (one or more layouts, one split) → ``out`` (JSON, or JSONL by suffix)."""
    root = resolve_path(image_root)
    keys = _parse_datasets(datasets, LAYOUTS)
    if "folder" in keys and vocabulary is None:
        raise UniferError("--dataset folder needs --set KEY: the FERBench set whose labels and prompt to use")
    records: list[dict] = []
    for key in keys:
        vocab = get_set(vocabulary) if vocabulary else get_set(key)
        scan = scan_dataset(key, root, split, affectnet_csv=resolve_path(affectnet_csv) if affectnet_csv else None,
                            folder=resolve_path(folder) if folder else None, vocabulary=vocab)
        recs, skipped = rlvr_from_scan(scan, vocab)
        for note in scan.notes[:10]:
            print(f"note: {key}: {note}")
        for label, n in sorted(skipped.items()):
            print(f"note: {key}: skipped {n} {label!r} images ({vocab.name} has no such label)")
        print(f"{key}/{split}: {len(recs)} records ({_label_summary(solution_label(r['solution']) for r in recs)})")
        records += recs
    if not records:
        raise UniferError("no records to write")
    seen = set()
    unique = [r for r in records if not (r["image_path"] in seen or seen.add(r["image_path"]))]
    if len(unique) < len(records):
        print(f"note: {len(records) - len(unique)} images named by two layouts were kept once")
    _assert_valid(unique, "rlvr", str(out))
    out = resolve_path(out)
    if out.suffix == ".jsonl":
        write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in unique))
    else:
        write_json_atomic(out, unique)
    print(f"{len(unique)} RLVR records -> {out}")
    return unique


def _qa_file_argument(text: str) -> str:
    """``check rafdb`` means the set's default QA file; anything else is a path."""
    if not Path(text).exists():
        try:
            return str(get_set(text).default_qa_path())
        except ValueError as e:
            if "/" not in text and not Path(text).suffix:  # meant as a set name, not a file
                raise UniferError(f"{e} (and there is no file {text!r})") from None
    return text


def add_arguments(parser: argparse.ArgumentParser):
    """``unifer ferbench build|check|rlvr``; returns the subparsers, where ``unifer ferbench run`` adds itself."""
    sub = parser.add_subparsers(dest="action", required=True)

    b = sub.add_parser("build", help="build the FERBench QA files from the raw dataset folders")
    b.add_argument("--image-root", required=True, help="folder holding RAF-DB/, FERPlus/, AffectNet/, SFEW-2.0/")
    b.add_argument("--datasets", default=None,
                   help="comma-separated sets (default: every set whose folder is under the image root)")
    b.add_argument("--out-dir", default=None, help="write <set>_qa.json here (default: each eval_<set>/data/)")
    b.add_argument("--affectnet-csv", default=None,
                   help="AffectNet labels (default: IMAGE_ROOT/AffectNet/validation.csv; training.csv for "
                        "--split train)")
    b.add_argument("--split", default=None,
                   help="another split than the benchmark's (train: <set>_train_qa.json, the records "
                        "unifer distill asks a teacher about)")

    c = sub.add_parser("check", help="validate a QA file (schema, labels, prompt, duplicates, images)")
    add_check_arguments(c)

    r = sub.add_parser("rlvr", help="write RLVR (GRPO) records from labeled dataset folders")
    r.add_argument("--image-root", required=True, help="the root the records' image paths are relative to")
    r.add_argument("--dataset", required=True, help=f"layout(s), comma-separated: {', '.join(LAYOUTS)}")
    r.add_argument("--split", default="train", help="split to read (default: train)")
    r.add_argument("--out", required=True, help="output file (.json: a JSON array; .jsonl: JSON Lines)")
    r.add_argument("--set", dest="vocabulary", default=None,
                   help="FERBench set whose prompt and labels to use (default: the dataset's own; required "
                        "for --dataset folder)")
    r.add_argument("--folder", default=None, help="for --dataset folder: DIR/<label>/<image>, inside the root")
    r.add_argument("--affectnet-csv", default=None,
                   help="AffectNet labels (default: IMAGE_ROOT/AffectNet/training.csv for --split train)")
    from unifer.data import export_cli

    export_cli.add_arguments(sub.add_parser("export", help="FERBench as a Hugging Face dataset, an lmms-eval task "
                                                            "or VLMEvalKit TSVs, from your own image root"))
    return sub



def run(args: argparse.Namespace) -> int:
    if args.action == "export":
        from unifer.data import export_cli

        return export_cli.run(args)
    if args.action == "build":
        build(args.image_root, args.datasets, args.out_dir, args.affectnet_csv, split=args.split)
    elif args.action == "check":
        run_check(_qa_file_argument(args.file), "qa", args.image_root, decode=not args.no_decode,
                  workers=args.workers, max_listed=args.max_listed, progress=not args.no_progress,
                  hint="build it with: python -m unifer ferbench build --image-root ROOT")
    else:
        write_rlvr(args.image_root, args.dataset, args.split, args.out, vocabulary=args.vocabulary,
                   folder=args.folder, affectnet_csv=args.affectnet_csv)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unifer ferbench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
