"""``unifer predict IMAGE_OR_DIR... --model M``: the faces of your own photographs, answered as FERBench items.

Per face: the file, the box ``[x0, y0, x1, y1]`` (pixels of the photo after its EXIF orientation), the detector's
score, the label (the paper's extraction) and the model's reasoning; ``--json`` prints one JSON object per face per
line instead, ``--out DIR`` writes annotated copies. Notices (no face found, an unreadable file) go to stderr, and
the run goes on; the exit status is 1 when a file could not be read, else 0.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

from unifer.data.images import ImageLoadError
from unifer.data.sets import DEFAULT_MAX_NEW_TOKENS, REPO_ROOT
from unifer.errors import UniferError
from unifer.infer.engines import ENGINES, default_batch_size
from unifer.predict.core import (DEFAULT_MARGIN, Predictor, annotate, load_photo, open_engine, photo_paths, reasoning,
                                 resolve_labels)

DEFAULT_MODEL = REPO_ROOT / "model" / "UniFER-7B"


def add_model_arguments(ap: argparse.ArgumentParser) -> None:
    """The flags ``unifer predict`` and ``unifer app`` share."""
    ap.add_argument("--model", default=None,
                    help="checkpoint directory (default: $UNIFER_MODEL, else model/UniFER-7B in the repository)")
    ap.add_argument("--engine", choices=ENGINES, default="hf", help="inference engine (default hf)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float16", "float32"),
                    help="auto: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    ap.add_argument("--labels", default="rafdb",
                    help="candidate labels: a set's (rafdb, ferplus, affectnet, sfew; default rafdb) or yours, a,b,c")
    ap.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                    help=f"added around a face, as a share of its side, on every side (default {DEFAULT_MARGIN})")
    ap.add_argument("--whole-image", action="store_true", help="no detection: ask about each whole photo")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="photos, or directories of photos")
    add_model_arguments(ap)
    ap.add_argument("--json", action="store_true", help="one JSON object per face per line")
    ap.add_argument("--out", default=None, metavar="DIR", help="write annotated copies (boxes and labels) here")
    ap.add_argument("--batch-size", type=int, default=None, help="faces per generate call")


def build_predictor(args) -> Predictor:
    """Check the cheap things first (labels, margin, model path), then load the model."""
    fer_set = resolve_labels(args.labels)
    if args.max_new_tokens < 1:
        raise UniferError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.margin < 0:
        raise UniferError(f"--margin must be 0 or more, got {args.margin}")
    model = args.model or os.environ.get("UNIFER_MODEL") or str(DEFAULT_MODEL)
    detector = None
    if not args.whole_image:
        from unifer.predict.detect import FaceDetector

        detector = FaceDetector()
    engine = open_engine(args.engine, model, args.max_new_tokens, args.dtype)
    batch = getattr(args, "batch_size", None) or default_batch_size(args.engine)
    return Predictor(engine, fer_set, margin=args.margin, whole_image=args.whole_image, detector=detector,
                     batch_size=batch)


def print_answer(a, n: int, total: int) -> None:
    score = "" if a.score is None else f"  score {a.score:g}"
    print(f"{a.image}  face {n}/{total}  box {list(a.box)}{score}  label {a.label}")
    print(textwrap.indent(reasoning(a.response) or "(no reasoning)", "    "))


def run(args) -> int:
    paths = photo_paths(args.inputs)
    if not paths:
        raise UniferError(f"no image files in {', '.join(args.inputs)}")
    if not any(p.exists() for p in paths):
        raise UniferError(f"not found: {', '.join(str(p) for p in paths)}")
    out_dir = Path(args.out).expanduser().resolve() if args.out else None
    predictor = build_predictor(args)
    failed = 0
    try:
        for path in paths:
            try:
                image = load_photo(path)
            except ImageLoadError as e:
                print(f"cannot read: {e}", file=sys.stderr)
                failed += 1
                continue
            answers = predictor.predict(image, str(path))
            if not answers:
                print(f"no face found in {path}", file=sys.stderr)
            for n, a in enumerate(answers, 1):
                if args.json:
                    print(json.dumps(a.as_json(), ensure_ascii=False), flush=True)
                else:
                    print_answer(a, n, len(answers))
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                target = out_dir / (path.stem + (".png" if path.suffix.lower() not in (".jpg", ".jpeg") else ".jpg"))
                annotate(image, answers).save(target, quality=90)
    finally:
        predictor.engine.close()
    return 1 if failed else 0
