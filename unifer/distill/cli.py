"""``unifer distill``: ask a teacher K times per labelled face, keep what the paper's rewards accept.

    unifer distill --records rafdb_train_qa.json --image-root /dataset --model qwen2.5-vl-7b \\
        --samples 8 --temperature 1.0 --out distill/rafdb [--keep 1] [--pick shortest|first] \\
        [--rlvr-pass-rate 0.125,0.875] [--balance] [--reward paper|strict] [--executor local|ray]

Outputs in ``--out``: ``cot.json`` (UniFER-CoT), ``rlvr.json`` (UniFER-RLVR + ``pass_rate``), ``stats.json``,
``distill.png``, and the samples' progress file (resume: rerun the same command). See docs/distill.md.
"""
from __future__ import annotations

import argparse
import os

from unifer.data.images import IMAGE_SIZE
from unifer.data.sources_cli import add_source_arguments, load_from_args
from unifer.errors import UniferError
from unifer.infer.engines import ENGINES, add_option_arguments
from unifer.infer.ray_pool import add_executor_arguments

DEFAULT_SAMPLES = 8
DEFAULT_TEMPERATURE = 1.0


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--records", required=True,
                    help="the labelled faces: a QA file (unifer ferbench build --split train, unifer data records), "
                         "a labelled folder DIR/<CLASS>/<IMAGE>, or a CSV / JSON(L) of image_path,label")
    ap.add_argument("--image-root", default=None,
                    help="prefix of the records' image paths (default: $UNIFER_IMAGE_ROOT, else /)")
    add_source_arguments(ap)
    ap.add_argument("--out", required=True, help="output folder: cot.json, rlvr.json, stats.json, distill.png")
    t = ap.add_argument_group("teacher")
    t.add_argument("--model", default=None,
                   help="checkpoint directory, a preset name (unifer presets), or the model an endpoint serves")
    t.add_argument("--preset", default=None, help="a preset name (the same as --model PRESET)")
    t.add_argument("--presets", default=None, metavar="FILE", help="a presets file of your own")
    t.add_argument("--engine", choices=ENGINES, default=None, help="hf, vllm, openai, fake; a preset names its own")
    t.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help=f"K samples per face (default {DEFAULT_SAMPLES})")
    t.add_argument("--temperature", type=float, default=None,
                   help=f"sampling temperature (default: the preset's, else {DEFAULT_TEMPERATURE})")
    t.add_argument("--top-p", type=float, default=None, help="nucleus sampling's share (default 1: off)")
    t.add_argument("--max-new-tokens", type=int, default=None, help="new-token budget per sample (default 1024)")
    t.add_argument("--seed", type=int, default=0,
                   help="base seed: face f is asked with seed hash(f's image path, SEED), on every executor (default 0)")
    t.add_argument("--batch-size", type=int, default=None, help="faces per engine call (default: the engine's)")
    t.add_argument("--image-size", default=None, metavar="N|native", help=f"images resized to N×N (default {IMAGE_SIZE})")
    t.add_argument("--limit", type=int, default=None, help="only the first N faces")
    s = ap.add_argument_group("selection (from the kept samples: changing these asks nothing again)")
    s.add_argument("--keep", type=int, default=1, help="accepted samples kept per face in cot.json (default 1)")
    s.add_argument("--pick", choices=("shortest", "first"), default="shortest",
                   help="which accepted samples: the shortest (default) or the first")
    s.add_argument("--rlvr-pass-rate", default=None, metavar="LO,HI",
                   help="keep RLVR faces whose pass rate lies in [LO, HI] (default 0,1: all); e.g. 0.01,0.99 drops "
                        "the never- and the always-solved")
    s.add_argument("--balance", action="store_true", help="cap each class at the rarest class's count")
    s.add_argument("--reward", choices=("paper", "strict"), default="paper",
                   help="paper: accuracy + format (GRPO's); strict: accuracy_strict + format_strict")
    r = ap.add_argument_group("run")
    r.add_argument("--overwrite", action="store_true", help="start fresh, discarding the kept samples")
    r.add_argument("--retry-errors", action="store_true", help="ask the error items of earlier runs again")
    add_executor_arguments(ap)
    add_option_arguments(ap)


def run(args: argparse.Namespace) -> int:
    from unifer.data.sets import resolve_path
    from unifer.distill.job import distill
    from unifer.distill.select import Selection, parse_pass_rate
    from unifer.distill.work import TeacherPlan, check_samples
    from unifer.infer.plan import parse_image_size, plan_engine
    from unifer.infer.ray_pool import executor_from

    flags = dict(vars(args))
    if args.preset:
        if args.model:
            raise UniferError("give --model or --preset, not both")
        flags["model"] = args.preset
    if args.keep < 1:
        raise UniferError(f"--keep must be at least 1, got {args.keep}")
    executor = executor_from(args)
    sel = Selection(keep=args.keep, pick=args.pick, pass_rate=parse_pass_rate(args.rlvr_pass_rate),
                    balance=args.balance, reward=args.reward)
    image_root = args.image_root or os.environ.get("UNIFER_IMAGE_ROOT") or "/"
    args.image_root = image_root
    records = load_from_args(args, args.records)
    if args.limit is not None:
        if args.limit < 1:
            raise UniferError(f"--limit must be at least 1, got {args.limit}")
        records = records[: args.limit]
    digest = records_digest(records)  # the records as read (labels mapped, prompts written), not the source's bytes
    image_size = parse_image_size(args.image_size)
    flags["seed"] = None  # the per-face seeds are the run's; the engine's own default is not used
    chosen = plan_engine(flags, image_size)
    temperature = args.temperature if args.temperature is not None else (
        chosen.decoding.temperature if chosen.preset and "temperature" in chosen.preset.defaults else DEFAULT_TEMPERATURE)
    check_samples(args.samples, temperature)
    decoding = chosen.decoding.with_(n=args.samples, temperature=temperature, seed=args.seed)
    batch = args.batch_size if args.batch_size is not None else chosen.batch_size()
    if batch < 1:
        raise UniferError(f"--batch-size must be at least 1, got {batch}")
    plan = TeacherPlan(engine=chosen.engine, model=str(chosen.model), settings=chosen.settings,
                       options=dict(chosen.options), decoding=decoding, image_root=str(image_root),
                       image_size=image_size, batch_size=batch)
    return distill(plan, records, digest, resolve_path(args.out), sel, executor, overwrite=args.overwrite,
                   retry_errors=args.retry_errors)


def records_digest(records: list[dict]) -> str:
    """What the teacher is asked about: every record (path, label, prompt, candidates), in order."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
