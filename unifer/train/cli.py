"""``unifer train sft|grpo [flags]``: the trainers' own parsers (TRL's ``TrlParser``) take every flag after the stage.
``unifer train launch sft|grpo [flags]``: the paper's run as the shell scripts start it (environment settings,
pre-flight, torchrun, the vLLM server in GRPO server mode; ``unifer.train.launch``).
``unifer train preflight --kind cot|rlvr --model M --data D --image_root R``: the launcher's data checks alone.

The trainer modules are what torchrun starts on every rank (``python -m unifer.train.sft``); their defaults are
the recipes in ``train_unifer/recipes`` (the paper's runs).
"""
from __future__ import annotations

import argparse
import importlib

STAGES = {"sft": "unifer.train.sft", "grpo": "unifer.train.grpo", "launch": "unifer.train.launch",
          "preflight": "unifer.train.preflight"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=tuple(STAGES),
                        help="sft (stage 1, cold start), grpo (stage 2, RLVR), or launch sft|grpo (the paper's run "
                             "on this node's GPUs, as run_sft_fer.sh / run_grpo_vllm.sh start it), or preflight (the "
                             "launcher's checks of model, data and images alone)")
    parser.add_argument("trainer_args", nargs=argparse.REMAINDER,
                        help="the trainer's flags (unifer train sft --help lists them; --config run.yaml; "
                             "--recipe none for TRL's defaults)")


def run(args: argparse.Namespace) -> int:
    return importlib.import_module(STAGES[args.stage]).main(args.trainer_args)
