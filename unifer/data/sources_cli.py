"""``unifer data records SOURCE --image-root R (--set KEY | --labels a,b,c) --out FILE``: labelled faces from a
folder (``CLASS/IMAGE``), a CSV or a JSON(L) of ``image_path,label``, as FERBench-shaped QA records (see
``unifer.data.sources``), ready for ``unifer distill --records FILE``."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from unifer.data.jsonio import write_json_atomic, write_text_atomic
from unifer.data.sets import resolve_path
from unifer.data.sources import load_or_refuse, vocabulary_for


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """The label vocabulary of a source that is not a QA file (shared with ``unifer distill``)."""
    p.add_argument("--set", dest="vocabulary", default=None,
                   help="FERBench set whose labels, synonyms and prompt the source's labels are read in")
    p.add_argument("--labels", default=None, help="or: the candidate labels, comma-separated (a,b,c)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="keep the good rows of a source with bad ones (each bad row is listed either way)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="labelled folder DIR/<CLASS>/<IMAGE> (inside the image root), or a CSV / JSON / "
                                  "JSON Lines file of image_path,label rows")
    p.add_argument("--image-root", required=True, help="the root the image paths are relative to")
    p.add_argument("--out", required=True, help="QA records (.json: a JSON array; .jsonl: JSON Lines)")
    add_source_arguments(p)


def load_from_args(args: argparse.Namespace, source) -> list[dict]:
    vocab = vocabulary_for(args.vocabulary, args.labels)
    return load_or_refuse(resolve_path(source), resolve_path(args.image_root), vocab,
                          skip_bad=args.skip_bad_rows, echo=lambda s: print(s, file=sys.stderr))


def run(args: argparse.Namespace) -> int:
    records = load_from_args(args, args.source)
    out = resolve_path(args.out)
    if out.suffix == ".jsonl":
        write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    else:
        write_json_atomic(out, records)
    counts = ", ".join(f"{k} {v}" for k, v in Counter(r["true_label"] for r in records).most_common())
    print(f"{len(records)} records -> {out} ({counts})")
    return 0
