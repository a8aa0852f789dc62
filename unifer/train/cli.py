"""``unifer train sft|grpo [flags]``: the trainers' own parsers (TRL's ``TrlParser``) take every flag after the stage.

The same modules are what torchrun starts on every rank (``python -m unifer.train.sft``); the shell scripts
``run_sft_fer.sh`` and ``run_grpo_vllm.sh`` launch them with the paper's settings.
"""
from __future__ import annotations

import argparse
import importlib

STAGES = {"sft": "unifer.train.sft", "grpo": "unifer.train.grpo"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=tuple(STAGES), help="sft (stage 1, cold start) or grpo (stage 2, RLVR)")
    parser.add_argument("trainer_args", nargs=argparse.REMAINDER,
                        help="the trainer's flags (unifer train sft --help lists them; --config recipe.yaml)")


def run(args: argparse.Namespace) -> int:
    return importlib.import_module(STAGES[args.stage]).main(args.trainer_args)
