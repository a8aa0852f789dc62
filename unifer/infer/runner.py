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
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from unifer.data.images import IMAGE_SIZE, ImageLoadError, join_image_path, load_image
from unifer.data.jsonio import write_json_atomic
from unifer.data.runmeta import write_meta
from unifer.data.sets import DEFAULT_RUN_NAME, SET_KEYS, get_set
from unifer.errors import UniferError, run_cli
from unifer.infer.engines import ENGINES, Answer, describe_error, is_engine_failure, make_engine
from unifer.infer.plan import DEFAULT_MAX_NEW_TOKENS, resolve_run
from unifer.infer.progress import ProgressFile, merge_shards, progress_path, results_in_order, shard_indices

#: The first items that all fail on their own in the engine, with no answer yet, stop the run (a broken model
#: or engine, not broken items).
ALL_FAILED_STOP = 16


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
    ap.add_argument("--presets", default=None, metavar="FILE",
                    help="a presets file of your own (default: unifer/infer/presets.yaml; unifer presets lists it)")
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

