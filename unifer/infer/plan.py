"""The plan of an inference run, checked before anything heavy loads: which engine and model (a checkpoint path,
a preset, or a served name), the run's name and output, image size, decoding, and the engine's options.

``resolve_run(args, set_key)`` returns it; ``unifer.infer.runner`` carries it out. Everything here is cheap (no
torch, no transformers, except ``pick_dtype`` at the end for a local engine).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from unifer import __version__
from unifer.data.images import IMAGE_SIZE
from unifer.data.records import load_records
from unifer.data.sets import DEFAULT_MAX_NEW_TOKENS, DEFAULT_RUN_NAME, REPO_ROOT, get_set, resolve_path
from unifer.errors import UniferError
from unifer.infer.engines import ENGINES, GenerationSettings, default_batch_size, generation_settings, is_local
from unifer.infer.presets import default_run_name, find_preset, run_name
from unifer.infer.progress import parse_shard
from unifer.models.checkpoints import check_model_dir
from unifer.models.device import cuda_available

DEFAULT_MODEL = REPO_ROOT / "model" / "UniFER-7B"
#: Flags whose default is None so that a preset can fill them: the value when neither the flag nor a preset does.
FLAG_DEFAULTS = {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "tensor_parallel_size": 1, "gpu_memory_utilization": 0.9,
                 "max_model_len": 4096}
#: The runner's own flags: everything else in the arguments is offered to the engine (make_engine picks).
RUNNER_FLAGS = {"set", "model", "input", "output", "image_root", "engine", "batch_size", "limit", "overwrite", "shard",
                "merge", "run", "image_size", "presets", "command", "command_line"}


def sha256_file(path: Path) -> str:
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


def default_path(env: str, fallback: Path | str) -> str:
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
    if args.engine and not is_local(args.engine):  # --model is what the endpoint serves, or a preset of it
        if not args.model:
            raise UniferError(f"--engine {args.engine} needs --model NAME (the model the endpoint serves) and "
                              "--base-url URL")
        try:
            preset = find_preset(args.model, getattr(args, "presets", None))
        except UniferError:
            preset = None
        if preset is not None and is_local(preset.engine):
            preset = None  # a local preset's name used as a served model's name
        return args.engine, (preset.model if preset else args.model), preset
    if not args.model:
        model = resolve_path(default_path("UNIFER_MODEL", DEFAULT_MODEL))
        if not model.exists():
            raise UniferError(f"model path not found: {model} (pass --model PATH or set $UNIFER_MODEL)")
    else:
        model = resolve_path(args.model)
        if not model.exists() and "/" not in args.model.strip("./"):
            preset = find_preset(args.model, getattr(args, "presets", None))
    engine = args.engine or (preset.engine if preset else "hf")
    if engine not in ENGINES:
        raise UniferError(f"preset {preset.name!r} names engine {engine!r}, which is not installed here; "
                          f"choose one of: {', '.join(ENGINES)}")
    if not is_local(engine):
        served = preset.model if preset else args.model
        if not served:
            raise UniferError(f"--engine {engine} needs --model NAME (the model the endpoint serves) and --base-url URL")
        return engine, served, preset
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
    if not local and not options.get("base_url"):  # an endpoint engine: where the endpoint is
        raise UniferError(f"--engine {engine} needs --base-url URL and --model NAME (the endpoint's model name)")
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
    if args.batch_size is not None:
        batch_size = args.batch_size
    elif not local:  # an endpoint: a few rounds of --concurrency requests per call, so none waits long
        batch_size = 4 * max(int(options.get("concurrency") or 4), 1)
    else:
        batch_size = default_batch_size(engine)  # imports torch
    output = resolve_path(args.output) if args.output else ferset.default_results_path(name)
    image_root = args.image_root or default_path("UNIFER_IMAGE_ROOT", "/")
    dtype = None
    if local:
        from unifer.models.device import pick_dtype

        dtype = str(pick_dtype(options["dtype"], cuda_available())).replace("torch.", "")
    # What decides the answers: a progress file written under other values is refused, not mixed in. (Keys that
    # hold their default are left out, so progress files of earlier versions still resume.)
    run = {"model": str(model), "model_fingerprint": model_fingerprint(model) if local else None,
           "input": str(input_path), "input_sha256": sha256_file(input_path), "image_root": str(image_root),
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
    from unifer.models.families import read_config

    return read_config(model_dir).get("model_type")


