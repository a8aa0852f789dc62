"""FERBench inference: answer every QA item of a set with a Qwen2.5-VL checkpoint, resumably, in batches.

    python eval_rafdb/code/infer_unifer.py [--model PATH] [--engine hf|vllm] [--batch-size N] ...
    unifer infer --set rafdb ...

The paper's run is reproduced by ``--batch-size 1 --dtype float32``: its loop, item for item, in float32 with sdpa
attention (the paper named no attention, which transformers 4.49 made sdpa; float32 always gets sdpa). The
defaults are faster and do not reproduce it on a GPU: bfloat16 there, and batches of 16; on a CPU the default
dtype is float32, and batched float32 gave the same answers on the tiny model (see ``unifer.infer.engines``).
Output: each input record plus ``model_response``, in
input order; an image that cannot be read becomes ``"model_response": "ERROR: <reason>", "error": true``, as the
paper's loop writes it, and the run goes on. Finished items go to a progress file beside the output as they
complete (``unifer.infer.progress``), so a killed run resumes where it stopped; ``--shard i/n`` splits a set across
processes or GPUs (``CUDA_VISIBLE_DEVICES=i ... --shard i/n``) and the shard that finishes last writes the
single results file (``--merge`` does it by hand).
"""
from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

from unifer.data.records import load_records
from unifer.infer.engines import ENGINES, default_batch_size
from unifer.errors import UniferError, run_cli
from unifer.infer.modeling import check_model_dir, cuda_available
from unifer.infer.progress import parse_shard
from unifer.data.sets import REPO_ROOT, SET_KEYS, get_set, resolve_path

DEFAULT_MODEL = REPO_ROOT / "model" / "UniFER-7B"
DEFAULT_MAX_NEW_TOKENS = 1024  # the paper's budget


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
    return f"Answer the FERBench QA items of {name} with a Qwen2.5-VL checkpoint (resumable, batched)."


def build_parser(set_key: str | None = None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=None if set_key else "unifer infer", description=describe(set_key))
    add_arguments(ap, set_key)
    return ap


def add_arguments(ap: argparse.ArgumentParser, set_key: str | None = None, paths: bool = True) -> None:
    """The flags of ``unifer infer`` (``--set`` chooses the set) and of ``eval_<set>/code/infer_unifer.py``
    (``paths=False``: without ``--input`` / ``--output``, for the four-set face)."""
    if set_key is None:
        ap.add_argument("--set", required=True, choices=SET_KEYS, help="which FERBench set")
    ap.add_argument("--model", default=None,
                    help="checkpoint directory (default: $UNIFER_MODEL, else model/UniFER-7B in the repository)")
    if paths:
        ap.add_argument("--input", default=None, help="QA file (default: eval_<set>/data/<set>_qa.json)")
        ap.add_argument("--output", default=None,
                        help="results file (default: eval_<set>/results/<set>_unifer_7b_results.json)")
    ap.add_argument("--image-root", default=None,
                    help="prefix of the QA image paths (default: $UNIFER_IMAGE_ROOT, else /)")
    ap.add_argument("--engine", choices=ENGINES, default="hf", help="transformers (hf, default) or vllm")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="items per generate call (default: hf 16 on GPU / 4 on CPU; vllm 256 / 16); "
                         "1 with --dtype float32 is the paper's loop")
    ap.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    ap.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float16", "float32"),
                    help="auto: bfloat16 on CUDA, float32 on CPU (the paper ran float32)")
    ap.add_argument("--attn-implementation", default="auto",
                    help="hf engine: auto (flash_attention_2 on GPU in bfloat16/float16 where installed, else "
                         "sdpa; float32 always sdpa), sdpa, eager")
    ap.add_argument("--limit", type=int, default=None, help="answer only the first N items")
    ap.add_argument("--overwrite", action="store_true", help="start fresh, discarding earlier progress")
    ap.add_argument("--retry-errors", action="store_true",
                    help="on resume, answer the error items of earlier runs again (default: keep them)")
    ap.add_argument("--shard", default=None, metavar="I/N", help="answer every N-th item from I (0 <= I < N)")
    ap.add_argument("--merge", action="store_true",
                    help="only merge finished shard progress files into the results file (same arguments, no --shard)")
    vl = ap.add_argument_group("vllm engine")
    vl.add_argument("--tensor-parallel-size", type=int, default=1)
    vl.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    vl.add_argument("--max-model-len", type=int, default=4096, help="prompt + answer tokens (about 250 + 1024)")
    from unifer.infer.openai_engine import add_engine_arguments

    add_engine_arguments(ap)  # the "openai engine" group


def _default_path(env: str, fallback: Path | str) -> str:
    return os.environ.get(env) or str(fallback)


def resolve_run(args, set_key: str) -> dict:
    """Check everything cheap before anything heavy: model, input, flags. Returns the plan."""
    ferset = get_set(set_key)
    api = args.engine == "openai"  # openai engine: --model names the endpoint's model, no directory to check
    if api:
        if not args.model or not args.base_url:
            raise UniferError("--engine openai needs --base-url URL and --model NAME (the endpoint's model name)")
        model = args.model
    else:
        model = resolve_path(args.model or _default_path("UNIFER_MODEL", DEFAULT_MODEL))
        if not args.model and not model.exists():
            raise UniferError(f"model path not found: {model} (pass --model PATH or set $UNIFER_MODEL)")
        check_model_dir(model)
    input_path = resolve_path(args.input) if args.input else ferset.default_qa_path()
    records = load_records(input_path, "qa", hint="build it with python -m unifer ferbench build --image-root DIR")
    if args.limit is not None:
        if args.limit < 1:
            raise UniferError(f"--limit must be at least 1, got {args.limit}")
        records = records[: args.limit]
    if args.max_new_tokens < 1:
        raise UniferError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    shard = parse_shard(args.shard)
    if shard and args.merge:
        raise UniferError("--merge combines the shards; run it without --shard")
    if args.batch_size is not None and args.batch_size < 1:
        raise UniferError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.batch_size is not None:
        batch_size = args.batch_size
    else:  # imports torch; the openai engine keeps 4 batches' worth of requests per call so none waits long
        batch_size = 4 * max(args.concurrency, 1) if api else default_batch_size(args.engine)
    output = resolve_path(args.output) if args.output else ferset.default_results_path()
    image_root = args.image_root or _default_path("UNIFER_IMAGE_ROOT", "/")
    # What decides the answers: a progress file written under other values is refused, not mixed in.
    if api:  # the endpoint's identity: base URL + model name + request settings (never the key)
        from unifer.infer.openai_engine import request_identity

        run = {"model": model, "endpoint": request_identity(args), "input": str(input_path),
               "input_sha256": _sha256_file(input_path), "image_root": str(image_root), "engine": args.engine,
               "max_new_tokens": args.max_new_tokens, "shard": args.shard}
    else:
        from unifer.infer.modeling import pick_dtype

        dtype = str(pick_dtype(args.dtype, cuda_available())).replace("torch.", "")
        run = {"model": str(model), "model_fingerprint": model_fingerprint(model), "input": str(input_path),
               "input_sha256": _sha256_file(input_path), "image_root": str(image_root), "engine": args.engine,
               "dtype": dtype, "max_new_tokens": args.max_new_tokens, "shard": args.shard}
    return dict(ferset=ferset, model=model, records=records, output=output, image_root=image_root, shard=shard,
                batch_size=batch_size, run=run)


def main(argv: list[str] | None = None, set_key: str | None = None) -> int:
    return run(build_parser(set_key).parse_args(argv), set_key)


def run(args: argparse.Namespace, set_key: str | None = None) -> int:
    set_key = set_key or args.set
    from unifer.infer.suite import answer_sets

    return answer_sets(args, {set_key: resolve_run(args, set_key)})


def cli(set_key: str | None = None, argv: list[str] | None = None) -> int:
    """Entry point of ``eval_<set>/code/infer_unifer.py``: one-line errors, exit status 2."""
    return run_cli(lambda a: main(a, set_key), argv)

