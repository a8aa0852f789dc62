"""``unifer judge``: a judge model rates every response of a run on the rubric (``unifer/judge/rubric.yaml``).

    unifer judge --set rafdb --run qwen3_vl_8b --engine openai --base-url http://127.0.0.1:8000/v1 --model M
    unifer judge --set rafdb --run qwen3_vl_8b --model gpt-4o --with-image        # a preset names the judge

Any engine of the registry works (``--engine``, its flags, or a preset); ``--with-image`` sends the face too
(otherwise the judge reads the text alone). Ratings go to ``<set>_<run>_judge.jsonl`` beside the results
(``unifer.judge.run``: cache, resume, strict parsing); ``unifer leaderboard`` and ``unifer report`` show them.
"""
from __future__ import annotations

import argparse

from unifer.data.sets import DEFAULT_RUN_NAME, SET_KEYS, get_set, resolve_path
from unifer.errors import UniferError
from unifer.infer.engines import ENGINES, add_decoding_arguments, add_option_arguments

STRUCTURED = ("auto", "json", "regex", "none")
#: The engines that constrain their output (``auto`` gives them the JSON schema).
CONSTRAINING = ("openai", "vllm")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--set", required=True, choices=SET_KEYS, help="which FERBench set")
    ap.add_argument("--run", default=DEFAULT_RUN_NAME,
                    help=f"the run judged: eval_<set>/results/<set>_<run>_results.json (default {DEFAULT_RUN_NAME})")
    ap.add_argument("--results", default=None, help="the results file (default: the run's)")
    ap.add_argument("--output", default=None, help="the judge file (default: <set>_<run>_judge.jsonl beside the "
                                                   "results)")
    ap.add_argument("--model", required=True,
                    help="the judge: the model an endpoint serves, a preset (unifer presets), or a checkpoint")
    ap.add_argument("--presets", default=None, metavar="FILE", help="a presets file of your own")
    ap.add_argument("--engine", choices=ENGINES, default=None, help="the judge's engine (a preset names its own)")
    ap.add_argument("--with-image", action="store_true", help="send the face with each response")
    ap.add_argument("--image-root", default=None,
                    help="prefix of the image paths (default: $UNIFER_IMAGE_ROOT, else /)")
    ap.add_argument("--image-size", default=None, metavar="N|native", help="images sent at N×N (default 224)")
    ap.add_argument("--structured", choices=STRUCTURED, default="auto",
                    help="constrain each rating: json (a JSON schema), regex, none; auto (default): json on the "
                         f"{' and '.join(CONSTRAINING)} engines, none elsewhere (parsed strictly everywhere)")
    ap.add_argument("--rubric", default=None, metavar="FILE", help="a rubric file (default unifer/judge/rubric.yaml)")
    ap.add_argument("--parse-retries", type=int, default=2,
                    help="times an unparseable rating is asked again before it becomes an error line (default 2)")
    ap.add_argument("--batch-size", type=int, default=None, help="ratings per engine call (default: the engine's)")
    ap.add_argument("--limit", type=int, default=None, help="judge only the first N answered items")
    ap.add_argument("--retry-errors", action="store_true", help="rate the error lines of earlier runs again")
    ap.add_argument("--overwrite", action="store_true", help="discard every cached rating first")
    add_decoding_arguments(ap)
    add_option_arguments(ap)


def plan(args: argparse.Namespace):
    """The judging run the flags name, every value checked before an engine is made."""
    from unifer.infer.plan import default_path, parse_image_size, plan_engine
    from unifer.judge.rubric import load_rubric
    from unifer.judge.run import JudgeConfig, JudgeRun
    from unifer.scoring.aggregate import is_error, load_results
    from unifer.scoring.reasoning_report import judge_path

    s = get_set(args.set)
    rubric = load_rubric(args.rubric)
    results = resolve_path(args.results) if args.results else s.default_results_path(args.run)
    records = [r for r in load_results(results, s) if not is_error(r)]
    if args.limit is not None:
        if args.limit < 1:
            raise UniferError(f"--limit must be at least 1, got {args.limit}")
        records = records[: args.limit]
    if args.parse_retries < 0 or (args.batch_size is not None and args.batch_size < 1):
        raise UniferError("--parse-retries must be >= 0 and --batch-size >= 1")
    flags = dict(vars(args))
    flags["max_new_tokens"] = args.max_new_tokens or rubric.max_new_tokens
    image_size = parse_image_size(args.image_size)
    chosen = plan_engine(flags, image_size)
    if chosen.local and not args.with_image:
        raise UniferError(f"--engine {chosen.engine} runs a checkpoint here and needs an image per request: add "
                          "--with-image (judging the text alone needs an endpoint: --engine openai)")
    structured = args.structured
    if structured == "auto":
        structured = "json" if chosen.engine in CONSTRAINING else "none"
    decoding = chosen.decoding
    if structured == "json":
        decoding = decoding.with_(json_schema=rubric.json_schema())
    elif structured == "regex":
        decoding = decoding.with_(regex=rubric.regex())
    config = JudgeConfig(chosen.engine, str(chosen.model), dict(chosen.options), chosen.settings, decoding, rubric,
                         bool(args.with_image), image_size)
    output = resolve_path(args.output) if args.output else judge_path(results)
    root = str(args.image_root or default_path("UNIFER_IMAGE_ROOT", "/"))
    return JudgeRun(s, records, output, config, image_root=root,
                    batch_size=args.batch_size or chosen.batch_size(), parse_retries=args.parse_retries,
                    retry_errors=args.retry_errors, overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    from unifer.judge.run import judge
    from unifer.scoring.aggregate import relative
    from unifer.scoring.reasoning_report import judge_summary, read_judge_lines

    job = plan(args)
    stats = judge(job)
    summary = judge_summary(read_judge_lines(job.output))
    means = "  ".join(f"{k.replace('_', ' ')} {summary[k]['mean']:.2f}" for k in ("visual_grounding", "consistency",
                                                                                 "specificity")
                      if summary[k]["mean"] is not None)
    print(f"{job.ferset.name} · judge {job.config.tag}: {stats['rated']} rated, {stats['errors']} errors, "
          f"{stats['cached']} cached, {stats['pending']} pending" + (f" (stopped: {stats['stopped']})"
                                                                     if stats["stopped"] else ""))
    if summary["rated"]:
        print(f"{means}  hallucinating {100 * summary['hallucination']['rate']:.1f}% of {summary['rated']}")
    print(f"wrote {relative(job.output)}")
    return 0
