"""The ``unifer`` command: one subcommand per thing the package does.

Each subcommand lives in its module as a parser-adder, ``add_arguments(parser)``, and ``run(args)`` (as TRL's
``trl`` command and lm-eval's ``lm_eval`` are built). Only the chosen subcommand's module is imported, so
``unifer --help`` and every flag check stay fast (torch is imported only once work starts). Errors are one line,
``error: …``, exit status 2 (``unifer.errors.run_cli``).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from unifer import __version__
from unifer.errors import run_cli

#: name → (module, one-line help). Modules offer ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "ferbench": ("unifer.pipeline.ferbench", "build or check the FERBench QA files, write RLVR records; run: answer and score all four sets"),
    "data": ("unifer.data.check", "check a CoT / RLVR / QA / results file: records, labels, duplicates, images"),
    "infer": ("unifer.infer.runner", "answer a FERBench set with a model (resumable, batched, sharded)"),
    "import": ("unifer.data.import_cli", "another tool's FERBench run (lmms-eval samples, VLMEvalKit predictions) "
               "as results files + .meta.json"),
    "distill": ("unifer.distill.cli", "ask a teacher K times per labelled face, keep what the rewards accept: CoT "
                "(SFT) and RLVR (GRPO) data, locally or on Ray"),
    "eval": ("unifer.scoring.cli", "score one set's results (--set S) or the four together (--total)"),
    "compare": ("unifer.scoring.compare_cli", "two runs on the same items: McNemar's test, paired intervals per set"),
    "judge": ("unifer.judge.cli", "a judge model rates each response's reasoning on a rubric (any engine; cached, "
              "resumable)"),
    "leaderboard": ("unifer.scoring.leaderboard", "every scored run in one table (Markdown, CSV) and two figures"),
    "presets": ("unifer.infer.presets", "list the known models (presets): engine, model, run, what was run here"),
    "report": ("unifer.report.cli", "an offline HTML report of a run: tables, confusion matrices, every response"),
    "train": ("unifer.train.cli", "cold-start SFT or GRPO: unifer train sft|grpo|launch|preflight [trainer flags]"),
    "predict": ("unifer.predict.cli", "the faces of your own photographs: detect, ask each the FERBench question"),
    "app": ("unifer.predict.app", "a browser demo on localhost: upload or take a photo, see its faces answered"),
    "bench": ("unifer.bench.cli", "measure: unifer bench cpu|gpu|gpu-train|detectors (bench/README.md)"),
    "demo": ("unifer.demo.cli", "the whole pipeline on a CPU with a tiny model and real photos"),
    "tiny": ("unifer.demo.tiny_cli", "write a tiny random checkpoint (Qwen2.5-VL; --family qwen3-vl|llava-onevision)"),
}


def build_parser(chosen: str | None = None) -> tuple[argparse.ArgumentParser, object | None]:
    """The top-level parser; the chosen subcommand's module fills in its own flags."""
    top = argparse.ArgumentParser(
        prog="unifer", description="UniFER: FERBench, cold-start SFT and GRPO for facial expression recognition.",
        epilog="Run 'unifer COMMAND --help' for a command's flags.")
    top.add_argument("--version", action="version", version=f"unifer {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
    return top, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser, module = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    args.command_line = argv
    return module.run(args)


def console_main() -> None:
    """The ``unifer`` console script (pyproject's ``[project.scripts]``)."""
    sys.exit(run_cli(main))
