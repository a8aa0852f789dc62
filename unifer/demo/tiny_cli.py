"""``unifer tiny --out DIR [--family qwen2.5-vl|qwen3-vl|llava-onevision]``: a tiny random checkpoint on the real
Qwen2 vocabulary (``unifer.demo.tiny``, ``unifer.demo.tiny_families``)."""
from __future__ import annotations

import argparse

from unifer.demo.tiny import build_tiny_model
from unifer.demo.tiny_families import BUILDERS

FAMILIES = ("qwen2.5-vl", "qwen3-vl", "llava-onevision")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", required=True, help="directory to write the checkpoint into")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--family", choices=FAMILIES, default="qwen2.5-vl",
                    help="which architecture (default qwen2.5-vl; the others: unifer.demo.tiny_families)")


def run(args: argparse.Namespace) -> int:
    family = getattr(args, "family", "qwen2.5-vl")
    if family == "qwen2.5-vl":
        out = build_tiny_model(args.out, seed=args.seed)
    else:
        out = BUILDERS[family](args.out, seed=args.seed)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"tiny {family} written to {out} ({size / 1e6:.1f} MB, seed {args.seed})")
    return 0
