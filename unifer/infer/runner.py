"""FERBench inference: answer every QA item of a set with a vision-language model, resumably, in batches.

    python eval_rafdb/code/infer_unifer.py [--model PATH|PRESET] [--engine hf|vllm|...] [--batch-size N] ...
    unifer infer --set rafdb --model qwen3-vl-8b --run qwen3_vl_8b

The defaults reproduce the paper's run (``--batch-size 1 --dtype float32`` is its loop, item for item; larger
batches give the same answers, see ``unifer.infer.engines``). Output: each input record plus ``model_response``, in
input order; an image that cannot be read becomes ``"model_response": "ERROR: <reason>", "error": true``, as the
paper's loop writes it, and the run goes on; so does any other failure of one item (a prompt longer than the model
allows, an image its processor rejects, a refused request): a batch that raises is retried item by item, and
only the culprit becomes an error item. Only a failure of the engine itself (out of memory, a dead worker) stops
the run, resumably. Results are named by run (``--run``, default: the preset's, else the checkpoint folder's:
``model/UniFER-7B`` → ``unifer_7b``), and ``<results>.meta.json`` beside them records engine, model, image size
and decoding (``unifer.data.runmeta``). Finished items go to a progress file beside the output as they
complete (``unifer.infer.progress``), so a killed run resumes where it stopped; ``--shard i/n`` splits a set across
processes or GPUs (``CUDA_VISIBLE_DEVICES=i ... --shard i/n``) and the shard that finishes last writes the
single results file (``--merge`` does it by hand).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from unifer import __version__
from unifer.data.images import IMAGE_SIZE, ImageLoadError, join_image_path, load_image
from unifer.data.jsonio import write_json_atomic
from unifer.data.records import load_records
from unifer.data.runmeta import write_meta
from unifer.data.sets import DEFAULT_RUN_NAME, REPO_ROOT, SET_KEYS, get_set, resolve_path
from unifer.errors import UniferError, run_cli
from unifer.infer.engines import (ENGINES, Answer, GenerationSettings, default_batch_size, describe_error,
                                  generation_settings, is_engine_failure, is_local, make_engine)
from unifer.infer.modeling import check_model_dir, cuda_available
from unifer.infer.presets import default_run_name, find_preset, run_name
from unifer.infer.progress import ProgressFile, merge_shards, parse_shard, progress_path, results_in_order, shard_indices

DEFAULT_MODEL = REPO_ROOT / "model" / "UniFER-7B"
DEFAULT_MAX_NEW_TOKENS = 1024  # the paper's budget
#: Flags whose default is None so that a preset can fill them: the value when neither the flag nor a preset does.
FLAG_DEFAULTS = {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "tensor_parallel_size": 1, "gpu_memory_utilization": 0.9,
                 "max_model_len": 4096}
#: The runner's own flags: everything else in the arguments is offered to the engine (make_engine picks).
RUNNER_FLAGS = {"set", "model", "input", "output", "image_root", "engine", "batch_size", "limit", "overwrite", "shard",
                "merge", "run", "image_size", "command", "command_line"}
#: The first items that all fail on their own in the engine, with no answer yet, stop the run (a broken model
#: or engine, not broken items).
ALL_FAILED_STOP = 16


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_fingerprint(model_dir: Path) -> str:
    """The configs' bytes and the weight files' names and sizes: cheap for a 16 GB checkpoint, and it changes
    when the checkpoint is replaced."""
    h = hashlib.sha256()
    for name in ("config.json", "generation_config.json"):
        f = model_dir / name
        h.update(name.encode() + b"\0" + (f.read_bytes() if f.is_file() else b"") + b"\0")
    for f in sorted(list(model_dir.glob("*.safetensors")) + list(model_dir.glob("*.bin"))):
        h.update(f"{f.name}\0{f.stat().st_size}\0".encode())
    return h.hexdigest()[:16]


def describe(set_key: str | None = None) -> str:
    name = get_set(set_key).name if set_key else "a FERBench set"
    return f"Answer the FERBench QA items of {name} with a vision-language model (resumable, batched)."


def build_parser(set_key: str | None = None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=None if set_key else "unifer infer", description=describe(set_key))
    add_arguments(ap, set_key)
    return ap


def add_arguments(ap: argparse.ArgumentParser, set_key: str | None = None) -> None:
    """The flags of ``unifer infer`` (``--set`` chooses the set) and of ``eval_<set>/code/infer_unifer.py``."""
    if set_key is None:
        ap.add_argument("--set", required=True, choices=SET_KEYS, help="which FERBench set")
    ap.add_argument("--model", default=None,
                    help="checkpoint directory, or a preset name (unifer presets lists them), or the model an "
                         "endpoint serves (default: $UNIFER_MODEL, else model/UniFER-7B in the repository)")
    ap.add_argument("--run", default=None,
                    help="run name: eval_<set>/results/<set>_<run>_results.json (default: the preset's, else the "
                         f"checkpoint folder's name; without --model {DEFAULT_RUN_NAME})")
    ap.add_argument("--input", default=None, help="QA file (default: eval_<set>/data/<set>_qa.json)")
    ap.add_argument("--output", default=None,
                    help="results file (default: eval_<set>/results/<set>_<run>_results.json)")
    ap.add_argument("--image-root", default=None,
                    help="prefix of the QA image paths (default: $UNIFER_IMAGE_ROOT, else /)")
    ap.add_argument("--engine", choices=ENGINES, default=None,
                    help="transformers (hf, the default), vllm, ...; a preset names its own")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="items per generate call (default: hf 16 on GPU / 4 on CPU; vllm 256 / 16); "
                         "1 with --dtype float32 is the paper's loop")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help=f"new-token budget (default {DEFAULT_MAX_NEW_TOKENS}, the paper's; a preset may set another)")
    ap.add_argument("--image-size", default=None, metavar="N|native",
                    help=f"images resized to N×N ({IMAGE_SIZE}, the paper's, is the default for every model, so runs "
                         "compare), or native: as decoded (the processor then sizes them its own way)")
    ap.add_argument("--trust-remote-code", action="store_true",
                    help="let a checkpoint run its own Python code (MiniCPM-V ...); off unless given: read it first")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float16", "float32"),
                    help="auto: bfloat16 on CUDA, float32 on CPU (the paper ran float32)")
    ap.add_argument("--attn-implementation", default="auto",
                    help="hf engine: auto (flash_attention_2 where installed on GPU, else sdpa), sdpa, eager")
    ap.add_argument("--limit", type=int, default=None, help="answer only the first N items")
    ap.add_argument("--overwrite", action="store_true", help="start fresh, discarding earlier progress")
    ap.add_argument("--shard", default=None, metavar="I/N", help="answer every N-th item from I (0 <= I < N)")
    ap.add_argument("--merge", action="store_true",
                    help="only merge finished shard progress files into the results file (same arguments, no --shard)")
    vl = ap.add_argument_group("vllm engine")
    vl.add_argument("--tensor-parallel-size", type=int, default=None, help="(default 1)")
    vl.add_argument("--gpu-memory-utilization", type=float, default=None, help="(default 0.9)")
    vl.add_argument("--max-model-len", type=int, default=None,
                    help="prompt + answer tokens (default 4096; about 250 + 1024 are needed)")


def _default_path(env: str, fallback: Path | str) -> str:
    return os.environ.get(env) or str(fallback)


def parse_image_size(text) -> int | None:
    """``--image-size``: None/"224" → 224, "native" → None (as decoded), "N" → N."""
    if text is None:
        return IMAGE_SIZE
    if str(text).lower() == "native":
        return None
    try:
        n = int(text)
    except ValueError:
        raise UniferError(f"--image-size must be a number of pixels or 'native', got {text!r}") from None
    if not 28 <= n <= 4096:
        raise UniferError(f"--image-size must be between 28 and 4096 pixels (or 'native'), got {n}")
    return n


def resolve_model(args) -> tuple[str, Path | str, object]:
    """(engine, model, preset or None) from --model / $UNIFER_MODEL / a preset, and --engine. A local engine's
    model is checked here (any vision-language checkpoint), in one line, before anything heavy loads."""
    preset = None
    if not args.model:
        model = resolve_path(_default_path("UNIFER_MODEL", DEFAULT_MODEL))
        if not model.exists():
            raise UniferError(f"model path not found: {model} (pass --model PATH or set $UNIFER_MODEL)")
    else:
        model = resolve_path(args.model)
        if not model.exists() and "/" not in args.model.strip("./"):
            preset = find_preset(args.model)
    engine = args.engine or (preset.engine if preset else "hf")
    if engine not in ENGINES:
        raise UniferError(f"preset {preset.name!r} names engine {engine!r}, which is not installed here; "
                          f"choose one of: {', '.join(ENGINES)}")
    if not is_local(engine):
        return engine, (preset.model if preset else args.model), preset
    if preset is not None:
        model = preset.model_path()
        if not model.exists():
            hint = f"download {preset.hub_id} into it" if preset.hub_id else "put the checkpoint there"
            raise UniferError(f"model path not found: {model} (preset {preset.name}: {hint}, or pass --model PATH)")
    elif args.model and not model.exists():
        raise UniferError(f"model path not found: {model} (nor a preset name: unifer presets lists them)")
    check_model_dir(model, model_types=None)
    return engine, model, preset


def engine_options(args, preset) -> dict:
    """Every option an engine may take: the flags given, else the preset's defaults, else FLAG_DEFAULTS."""
    given = {k: v for k, v in vars(args).items() if k not in RUNNER_FLAGS}
    given["attn"] = given.pop("attn_implementation", "auto")
    defaults = preset.defaults if preset else {}
    options = {k: v for k, v in defaults.items() if given.get(k) is None}
    options.update({k: v for k, v in given.items() if v is not None or k not in options})
    for k, v in FLAG_DEFAULTS.items():
        if options.get(k) is None:
            options[k] = v
    return options


def resolve_run(args, set_key: str) -> dict:
    """Check everything cheap before anything heavy: model, input, flags. Returns the plan."""
    ferset = get_set(set_key)
    engine, model, preset = resolve_model(args)
    local = is_local(engine)
    options = engine_options(args, preset)
    input_path = resolve_path(args.input) if args.input else ferset.default_qa_path()
    records = load_records(input_path, "qa", hint="build it with python -m unifer ferbench build --image-root DIR")
    if args.limit is not None:
        if args.limit < 1:
            raise UniferError(f"--limit must be at least 1, got {args.limit}")
        records = records[: args.limit]
    max_new_tokens = options["max_new_tokens"]
    if max_new_tokens < 1:
        raise UniferError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    image_size = parse_image_size(args.image_size)
    options["image_size"] = image_size
    shard = parse_shard(args.shard)
    if shard and args.merge:
        raise UniferError("--merge combines the shards; run it without --shard")
    if args.batch_size is not None and args.batch_size < 1:
        raise UniferError(f"--batch-size must be at least 1, got {args.batch_size}")
    name = args.run or (DEFAULT_RUN_NAME if not args.model else default_run_name(model, preset))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UniferError(f"--run must be letters, digits, '.', '_' or '-' (it names files), got {name!r}; "
                          f"for example {run_name(name)}")
    batch_size = default_batch_size(engine) if args.batch_size is None else args.batch_size  # imports torch
    output = resolve_path(args.output) if args.output else ferset.default_results_path(name)
    image_root = args.image_root or _default_path("UNIFER_IMAGE_ROOT", "/")
    dtype = None
    if local:
        from unifer.infer.modeling import pick_dtype

        dtype = str(pick_dtype(options["dtype"], cuda_available())).replace("torch.", "")
    # What decides the answers: a progress file written under other values is refused, not mixed in. (Keys that
    # hold their default are left out, so progress files of earlier versions still resume.)
    run = {"model": str(model), "model_fingerprint": model_fingerprint(model) if local else None,
           "input": str(input_path), "input_sha256": _sha256_file(input_path), "image_root": str(image_root),
           "engine": engine, "dtype": dtype, "max_new_tokens": max_new_tokens, "shard": args.shard}
    if image_size != IMAGE_SIZE:
        run["image_size"] = image_size or "native"
    if not local:
        run.update({k: options[k] for k in ("base_url", "temperature", "image_format", "image_detail", "extra_body")
                    if options.get(k) is not None})
    settings = (generation_settings(model, max_new_tokens) if local else
                GenerationSettings(max_new_tokens, 1.0, (), None))
    meta = {"set": ferset.key, "run": name, "display_name": preset.display if preset else name,
            "preset": preset.name if preset else None, "engine": engine, "model": str(model),
            "model_id": (preset.hub_id or preset.model) if preset else (Path(model).name if local else str(model)),
            "model_type": _model_type(model) if local else None, "model_fingerprint": run["model_fingerprint"],
            "image_size": image_size or "native", "dtype": dtype,
            "decoding": {"greedy": True, "max_new_tokens": max_new_tokens,
                         "repetition_penalty": settings.repetition_penalty,
                         "eos_token_ids": list(settings.eos_token_ids),
                         **{k: options[k] for k in ("temperature", "extra_body") if options.get(k) is not None}},
            "input": str(input_path), "input_sha256": run["input_sha256"], "unifer_version": __version__}
    return dict(ferset=ferset, model=model, engine=engine, options=options, settings=settings, records=records,
                output=output, image_root=image_root, image_size=image_size, shard=shard, batch_size=batch_size,
                run=run, meta=meta)


def _model_type(model_dir: Path) -> str | None:
    from unifer.infer.families import read_config

    return read_config(model_dir).get("model_type")


def load_batch(records: list[dict], indices: list[int], image_root,
               image_size: int | None = IMAGE_SIZE) -> tuple[list, list[tuple[int, dict]]]:
    """Decode a batch's images: (answerable [(index, image)], error items [(index, result)])."""
    ok, failed = [], []
    for i in indices:
        try:
            ok.append((i, load_image(join_image_path(image_root, records[i]["image_path"]), image_size)))
        except ImageLoadError as e:
            failed.append((i, error_item(records[i], str(e))))
    return ok, failed


def error_item(record: dict, reason: str) -> dict:
    """The paper's error item: the record, ``"model_response": "ERROR: <reason>"``, ``"error": true``."""
    return {**record, "model_response": f"ERROR: {reason}", "error": True}


def generate_isolating(engine, images: list, prompts: list[str]) -> tuple[list[Answer], list[int]]:
    """``engine.generate``, with an item's own failure kept to that item: a batch that raises anything but an
    engine failure is answered again one item at a time, and an item that raises alone gets its reason as an
    ``Answer.error``. Returns (answers, positions of the items that raised). (In float32 the other items' answers
    do not depend on the batch; in bfloat16 they may round differently alone.)"""
    try:
        answers = engine.generate(images, prompts)
    except Exception as e:
        if is_engine_failure(e):
            raise
        if len(prompts) == 1:
            return [Answer("", 0, error=describe_error(e))], [0]
        print(f"a batch of {len(prompts)} failed ({describe_error(e, 160)}); answering its items one at a time",
              file=sys.stderr, flush=True)
        answers, raised = [], []
        for n, (img, p) in enumerate(zip(images, prompts)):
            (answer,), alone = generate_isolating(engine, [img], [p])
            answers.append(answer)
            raised += [n] if alone else []
        return answers, raised
    if len(answers) != len(prompts):
        raise RuntimeError(f"{engine.name} engine returned {len(answers)} answers for {len(prompts)} requests")
    return answers, []


def answer_all(engine, records, pending: list[int], image_root, batch_size: int, progress: ProgressFile, bar,
               image_size: int | None = IMAGE_SIZE, usage: dict | None = None) -> tuple[int, float]:
    """Answer ``pending`` in batches, recording each batch as it finishes. Images of the next batch are decoded
    in a thread while the current one generates. Returns (generated tokens, seconds); API usage is summed into
    ``usage``."""
    batches = [pending[k:k + batch_size] for k in range(0, len(pending), batch_size)]
    tokens, started = 0, time.perf_counter()
    answered, failed_alone = 0, []  # items the engine answered; reasons of items that raised on their own
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(load_batch, records, batches[0], image_root, image_size) if batches else None
        for n, batch in enumerate(batches):
            ok, finished = ahead.result()
            ahead = (pool.submit(load_batch, records, batches[n + 1], image_root, image_size)
                     if n + 1 < len(batches) else None)
            if ok:
                try:
                    answers, raised = generate_isolating(engine, [img for _, img in ok],
                                                         [records[i]["prompt"] for i, _ in ok])
                except Exception as e:
                    if type(e).__name__ == "OutOfMemoryError":
                        raise UniferError(f"out of memory at batch size {batch_size}; finished items are saved "
                                          f"in {progress.path}: rerun with a smaller --batch-size") from None
                    e.add_note(f"finished items are saved in {progress.path}; rerun to resume")
                    raise
                failed_alone += [answers[n].error for n in raised]
                for (i, _), answer in zip(ok, answers):
                    if answer.error is not None:  # this item alone failed: an error item, the run goes on
                        finished.append((i, error_item(records[i], answer.error)))
                    else:
                        finished.append((i, {**records[i], "model_response": answer.text}))
                        answered += 1
                    for k, v in (answer.usage or {}).items():
                        if usage is not None and isinstance(v, (int, float)):
                            usage[k] = usage.get(k, 0) + v
                tokens += sum(answer.tokens for answer in answers)
            if answered == 0 and len(failed_alone) >= ALL_FAILED_STOP:
                raise UniferError(f"the first {len(failed_alone)} items all failed in the {engine.name} engine "
                                  f"(first: {failed_alone[0]}); that is the model or the engine, not the items: "
                                  f"stopping (nothing written to {progress.path} for this batch)")
            progress.append(sorted(finished))
            bar.update(len(finished))
            bar.set_postfix_str(f"{tokens / max(time.perf_counter() - started, 1e-9):.1f} tokens/s", refresh=False)
    return tokens, time.perf_counter() - started


def main(argv: list[str] | None = None, set_key: str | None = None) -> int:
    return run(build_parser(set_key).parse_args(argv), set_key)


def run(args: argparse.Namespace, set_key: str | None = None) -> int:
    set_key = set_key or args.set
    plan = resolve_run(args, set_key)
    ferset, output, run, records = plan["ferset"], plan["output"], plan["run"], plan["records"]
    if args.merge:
        merged, message = merge_shards(output, {**run, "shard": None}, len(records))
        if not merged:
            raise UniferError(f"cannot merge into {output} yet: {message}")
        _write_meta(output, plan, {})
        print(f"{ferset.name}: {message} -> {output}")
        return 0

    ppath = progress_path(output, plan["shard"])
    if output.exists() and not ppath.exists() and not args.overwrite:
        raise UniferError(f"{output} already exists; pass --overwrite to answer again, or choose another --output")
    indices = shard_indices(len(records), plan["shard"])
    started = time.perf_counter()
    with ProgressFile(ppath, run, overwrite=args.overwrite,
                      wait_message=f"another run is writing {ppath}; let it finish or choose another --output") as progress:
        pending = [i for i in indices if i not in progress.done]
        tokens, seconds, usage = 0, 0.0, {}
        if pending:
            from tqdm import tqdm

            where = f"resuming: {len(indices) - len(pending)} of {len(indices)} items already done, " if len(
                pending) < len(indices) else ""
            print(f"{ferset.name}: {where}loading {plan['model']} ({plan['engine']})", file=sys.stderr, flush=True)
            engine = make_engine(plan["engine"], plan["model"], plan["settings"], **plan["options"])
            try:
                with tqdm(total=len(indices), initial=len(indices) - len(pending), unit="item", desc=ferset.name,
                          dynamic_ncols=True) as bar:
                    tokens, seconds = answer_all(engine, records, pending, plan["image_root"], plan["batch_size"],
                                                 progress, bar, plan["image_size"], usage)
            finally:
                engine.close()
        results = results_in_order(progress.done, indices)
        wall = time.perf_counter() - started
        errors = sum(1 for r in results if r.get("error") is True)
        rate = (f"{len(pending)} done now in {seconds:.1f}s: {len(pending) / max(seconds, 1e-9):.2f} items/s, "
                f"{tokens / max(seconds, 1e-9):.1f} tokens/s" if pending else "nothing left to do")
        summary = f"{ferset.name}: {len(results)} items, {errors} errors ({rate}; wall time {wall:.1f}s)"
        if plan["shard"] is None:
            try:
                write_json_atomic(output, results)
            except OSError as e:
                raise UniferError(f"{e}; every answer is kept in {progress.path}: free space and rerun to write "
                                  "the results") from None
            _write_meta(output, plan, usage)
            progress.remove()
            print(f"{summary} -> {output}")
            return 0
    # This shard is complete and unlocked: merge if every shard is.
    merged, message = merge_shards(output, {**run, "shard": None}, len(records), shards=plan["shard"][1])
    if merged:
        _write_meta(output, plan, usage)
    i, n = plan["shard"]
    print(f"{summary}; shard {i}/{n} done, " + (f"{message} -> {output}" if merged else
          f"not merged yet ({message}); the last shard to finish merges, or rerun with --merge"))
    return 0


def _write_meta(output: Path, plan: dict, usage: dict) -> None:
    """The sidecar beside the results (unifer.data.runmeta): what produced them. Counted from the file written."""
    import json

    results = json.loads(output.read_text(encoding="utf-8"))
    meta = {**plan["meta"], "items": len(results), "errors": sum(1 for r in results if r.get("error") is True),
            "shard": None}
    if usage:
        meta["usage_this_process"] = usage  # API token usage of the items answered by this process
    try:
        write_meta(output, meta)
    except OSError as e:
        raise UniferError(f"{e}; the results are written ({output}), only their description is missing: "
                          "free space and rerun") from None


def cli(set_key: str | None = None, argv: list[str] | None = None) -> int:
    """Entry point of ``eval_<set>/code/infer_unifer.py``: one-line errors, exit status 2."""
    return run_cli(lambda a: main(a, set_key), argv)

