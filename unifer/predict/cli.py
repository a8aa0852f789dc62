"""``unifer predict IMAGE_OR_DIR... --model M``: the faces of your own photographs, answered as FERBench items.

Per face: the file, the box ``[x0, y0, x1, y1]`` (pixels of the photo after its EXIF orientation), the detector's
score, the label (the paper's extraction) and the model's reasoning; ``--json`` prints one JSON object per face per
line instead, ``--out DIR`` writes annotated copies. Notices (no face found, an unreadable file) go to stderr, and
the run goes on; the exit status is 1 when a file could not be read, else 0.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from unifer.data.images import IMAGE_SIZE, ImageLoadError
from unifer.errors import UniferError
from unifer.infer.engines import ENGINES, add_decoding_arguments, add_option_arguments
from unifer.infer.plan import plan_engine
from unifer.predict.core import DEFAULT_MARGIN, Predictor, annotate, load_photo, photo_paths, reasoning, resolve_labels


def add_model_arguments(ap: argparse.ArgumentParser) -> None:
    """The flags ``unifer predict`` and ``unifer app`` share: the engine is chosen as ``unifer infer`` chooses it."""
    ap.add_argument("--model", default=None,
                    help="checkpoint directory, a preset name (unifer presets lists them), or the model an endpoint "
                         "serves (default: $UNIFER_MODEL, else model/UniFER-7B in the repository)")
    ap.add_argument("--presets", default=None, metavar="FILE", help="a presets file of your own")
    ap.add_argument("--engine", choices=ENGINES, default=None, help="inference engine (default hf; a preset names "
                    "its own)")
    ap.add_argument("--labels", default="rafdb",
                    help="candidate labels: a set's (rafdb, ferplus, affectnet, sfew; default rafdb) or yours, a,b,c")
    ap.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                    help=f"added around a face, as a share of its side, on every side (default {DEFAULT_MARGIN})")
    ap.add_argument("--whole-image", action="store_true", help="no detection: ask about each whole photo")
    add_decoding_arguments(ap)
    add_option_arguments(ap)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="photos, or directories of photos")
    add_model_arguments(ap)
    ap.add_argument("--json", action="store_true", help="one JSON object per face per line")
    ap.add_argument("--out", default=None, metavar="DIR", help="write annotated copies (boxes and labels) here")
    ap.add_argument("--batch-size", type=int, default=None, help="faces per generate call")


def build_predictor(args) -> Predictor:
    """Check the cheap things first (labels, margin, model path), then load the model."""
    fer_set = resolve_labels(args.labels)
    if args.margin < 0:
        raise UniferError(f"--margin must be 0 or more, got {args.margin}")
    chosen = plan_engine(vars(args), IMAGE_SIZE)  # the engine, its options and decoding, checked in one line
    detector = None
    if not args.whole_image:
        from unifer.predict.detect import FaceDetector

        detector = FaceDetector()
    engine = chosen.open()
    batch = getattr(args, "batch_size", None) or chosen.batch_size()
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
