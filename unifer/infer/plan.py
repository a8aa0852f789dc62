"""The plan of an inference run, checked before anything heavy loads: which engine and model (a checkpoint path,
a preset, or a served name), the run's name and output, image size, decoding, and the engine's options.

``resolve_run(flags, set_key)`` returns it as a frozen ``RunPlan``; ``unifer.infer.suite`` carries it out, and
nothing past the command module reads the command line. ``RunPlan.header()`` (what a progress file is written
under) and ``RunPlan.meta()`` (the results' sidecar) are views of it. Everything here is cheap (no torch, no
transformers, except ``pick_dtype`` for a local engine).
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from unifer import __version__
from unifer.data.images import IMAGE_SIZE
from unifer.data.records import load_records
from unifer.data.sets import DEFAULT_RUN_NAME, REPO_ROOT, FERSet, get_set, resolve_path
from unifer.errors import UniferError
from unifer.infer.engines import (
    ENGINES,
    GenerationSettings,
    default_batch_size,
    engine_options,
    generation_settings,
    is_local,
    option_fields,
)
from unifer.infer.engines.base import Decoding
from unifer.infer.presets import default_run_name, find_preset, run_name
from unifer.infer.progress import parse_shard
from unifer.models.checkpoints import check_model_dir
from unifer.models.device import cuda_available

DEFAULT_MODEL = REPO_ROOT / "model" / "UniFER-7B"
#: Decoding fields a flag or a preset may set (``--max-new-tokens``, ``--temperature``, ``--top-p``, ``--seed``).
DECODING_FLAGS = ("max_new_tokens", "temperature", "top_p", "seed")


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


def resolve_model(flags: Mapping) -> tuple[str, Path | str, object]:
    """(engine, model, preset or None) from --model / $UNIFER_MODEL / a preset, and --engine. A local engine's
    model is checked here (any vision-language checkpoint), in one line, before anything heavy loads."""
    preset = None
    engine_flag, model_flag, presets = flags.get("engine"), flags.get("model"), flags.get("presets")
    if engine_flag and not is_local(engine_flag):  # --model is what the endpoint serves, or a preset of it
        if not model_flag:
            raise UniferError(f"--engine {engine_flag} needs --model NAME (the model the endpoint serves)")
        try:
            preset = find_preset(model_flag, presets)
        except UniferError:
            preset = None
        if preset is not None and (is_local(preset.engine) or preset.engine != engine_flag):
            preset = None  # another engine's preset name used as a served model's name
        return engine_flag, (preset.model if preset else model_flag), preset
    if not model_flag:
        model = resolve_path(default_path("UNIFER_MODEL", DEFAULT_MODEL))
        if not model.exists():
            raise UniferError(f"model path not found: {model} (pass --model PATH or set $UNIFER_MODEL)")
    else:
        model = resolve_path(model_flag)
        if not model.exists() and "/" not in model_flag.strip("./"):
            preset = find_preset(model_flag, presets)
    engine = engine_flag or (preset.engine if preset else "hf")
    if engine not in ENGINES:
        raise UniferError(f"preset {preset.name!r} names engine {engine!r}, which is not installed here; "
                          f"choose one of: {', '.join(ENGINES)}")
    if not is_local(engine):
        served = preset.model if preset else model_flag
        if not served:
            raise UniferError(f"--engine {engine} needs --model NAME (the model the endpoint serves)")
        return engine, served, preset
    if preset is not None:
        model = preset.model_path()
        if not model.exists():
            hint = f"download {preset.hub_id} into it" if preset.hub_id else "put the checkpoint there"
            raise UniferError(f"model path not found: {model} (preset {preset.name}: {hint}, or pass --model PATH)")
    elif model_flag and not model.exists():
        raise UniferError(f"model path not found: {model} (nor a preset name: unifer presets lists them)")
    check_model_dir(model, model_types=None)
    return engine, model, preset


def options_for(engine: str, flags: Mapping, preset, **planned) -> dict:
    """The ``engine``'s options as given: each of its options dataclass's fields from its flag, else the preset,
    else (left out) the dataclass default; ``planned`` fills the fields the plan owns (image_size). A flag or a
    preset value the engine does not take is refused in one line."""
    own = option_fields(engine)
    every = {k: f.metadata.get("flag") or "--" + k.replace("_", "-")
             for e in ENGINES for k, f in option_fields(e).items() if not f.metadata.get("plan")}
    foreign = sorted(k for k in set(every) - set(own) if flags.get(k) not in (None, False))
    if foreign:
        raise UniferError(f"{every[foreign[0]]} is not an option of the {engine} engine (it takes: "
                          f"{', '.join(sorted(own))})")
    defaults = dict(preset.defaults) if preset else {}
    unknown = sorted(set(defaults) - set(own) - set(DECODING_FLAGS))
    if unknown:
        raise UniferError(f"preset {preset.name!r} sets {', '.join(unknown)}, which the {engine} engine does not take")
    options = {k: v for k, v in defaults.items() if k in own}
    options.update({k: flags[k] for k in own if flags.get(k) is not None})
    options.update({k: v for k, v in planned.items() if k in own})
    engine_options(engine, options)  # checked now (one line), before anything loads
    return options


def decoding_for(flags: Mapping, preset) -> Decoding:
    """The run's decoding: each field from its flag, else the preset's request, else the paper's (greedy, 1024)."""
    defaults = preset.defaults if preset else {}
    given = {k: flags.get(k) if flags.get(k) is not None else defaults.get(k) for k in DECODING_FLAGS}
    given = {k: v for k, v in given.items() if v is not None}
    for k in ("temperature", "top_p"):
        if k in given:
            given[k] = float(given[k])
    if given.get("max_new_tokens", 1) < 1:
        raise UniferError(f"--max-new-tokens must be at least 1, got {given['max_new_tokens']}")
    return Decoding(**given)


@dataclass(frozen=True)
class EnginePlan:
    """Which engine answers, on which model, with which options and decoding: what inference, ``unifer predict``
    and the app all make their engine from."""

    engine: str
    model: Path | str
    local: bool
    preset: object  # the Preset, or None
    options: dict  # the engine's options as given (flags, preset, plan); make_engine fills the defaults
    settings: GenerationSettings
    decoding: Decoding

    def open(self):
        """The engine, loaded (the heavy step)."""
        from unifer.infer.engines import make_engine

        return make_engine(self.engine, self.model, self.settings, self.options, self.decoding)

    def batch_size(self) -> int:
        return default_batch_size(self.engine, engine_options(self.engine, self.options))


def plan_engine(flags: Mapping, image_size: int | None = IMAGE_SIZE, resolved: tuple | None = None) -> EnginePlan:
    """The engine a command line names (``--model`` / a preset / ``--engine``, the engine flags, the decoding
    flags), every value checked in one line; nothing heavy loads. ``resolved``: ``resolve_model``'s answer, when
    the caller has it already."""
    engine, model, preset = resolved or resolve_model(flags)
    local = is_local(engine)
    options = options_for(engine, flags, preset, image_size=image_size)
    decoding = decoding_for(flags, preset)
    settings = (generation_settings(model, decoding.max_new_tokens) if local else
                GenerationSettings(decoding.max_new_tokens, 1.0, (), None))
    return EnginePlan(engine, model, local, preset, options, settings, decoding)


@dataclass(frozen=True)
class RunPlan:
    """One set's inference run, decided before anything heavy loads."""

    ferset: FERSet
    engine: str
    model: Path | str
    local: bool
    options: dict  # the engine's options as given (flags, preset, plan); make_engine fills the defaults
    settings: GenerationSettings
    decoding: Decoding
    records: list
    input_path: Path
    input_sha256: str
    output: Path
    image_root: str
    image_size: int | None
    shard: tuple[int, int] | None
    shard_text: str | None
    batch_size: int
    run_name: str
    display_name: str
    preset: str | None
    model_id: str
    model_type: str | None
    model_fingerprint: str | None
    dtype: str | None
    #: what this invocation does with earlier work (``--overwrite``, ``--retry-errors``, ``--merge``)
    overwrite: bool = False
    retry_errors: bool = False
    merge: bool = False
    recorded_temperature: float | None = field(default=None, repr=False)  # a preset's, as earlier headers hold it

    def with_output(self, output: Path) -> RunPlan:
        return replace(self, output=output)

    def header(self) -> dict:
        """What decides the answers: a progress file written under other values is refused, not mixed in. (Keys
        that hold their default are left out, so progress files of earlier versions still resume.)"""
        run = {"model": str(self.model), "model_fingerprint": self.model_fingerprint, "input": str(self.input_path),
               "input_sha256": self.input_sha256, "image_root": str(self.image_root), "engine": self.engine,
               "dtype": self.dtype, "max_new_tokens": self.decoding.max_new_tokens, "shard": self.shard_text}
        if self.image_size != IMAGE_SIZE:
            run["image_size"] = self.image_size or "native"
        if not self.local:
            if self.options.get("base_url") is not None:
                run["base_url"] = self.options["base_url"]
            if self.recorded_temperature is not None:
                run["temperature"] = self.recorded_temperature
            run.update({k: self.options[k] for k in ("image_format", "image_detail", "extra_body")
                        if self.options.get(k) is not None})
        sampling = {k: v for k, v in self.decoding.as_dict().items() if k not in ("greedy", "max_new_tokens")}
        if sampling:
            run["decoding"] = sampling
        return run

    def meta(self) -> dict:
        """The results' sidecar (``unifer.data.runmeta``): what produced them."""
        decoding = {**self.decoding.as_dict(), "repetition_penalty": self.settings.repetition_penalty,
                    "eos_token_ids": list(self.settings.eos_token_ids)}
        if self.options.get("extra_body"):
            decoding["extra_body"] = self.options["extra_body"]
        return {"set": self.ferset.key, "run": self.run_name, "display_name": self.display_name,
                "preset": self.preset, "engine": self.engine, "model": str(self.model), "model_id": self.model_id,
                "model_type": self.model_type, "model_fingerprint": self.model_fingerprint,
                "image_size": self.image_size or "native", "dtype": self.dtype, "decoding": decoding,
                "input": str(self.input_path), "input_sha256": self.input_sha256, "unifer_version": __version__}


def resolve_run(flags, set_key: str, input_path: Path | None = None, output: Path | None = None) -> RunPlan:
    """Check everything cheap before anything heavy: model, input, flags. ``flags``: the command line as a mapping
    (``vars(args)``; a Namespace is taken too). Returns the plan."""
    flags = flags if isinstance(flags, Mapping) else vars(flags)
    ferset = get_set(set_key)
    resolved = resolve_model(flags)  # in the order of the checks: the model, its options, the input, the rest
    options_for(resolved[0], flags, resolved[2])
    given_input = input_path or flags.get("input")
    input_path = resolve_path(given_input) if given_input else ferset.default_qa_path()
    records = load_records(input_path, "qa", hint="build it with python -m unifer ferbench build --image-root DIR")
    limit = flags.get("limit")
    if limit is not None:
        if limit < 1:
            raise UniferError(f"--limit must be at least 1, got {limit}")
        records = records[:limit]
    image_size = parse_image_size(flags.get("image_size"))
    chosen = plan_engine(flags, image_size, resolved)
    engine, model, preset, local, options = chosen.engine, chosen.model, chosen.preset, chosen.local, chosen.options
    decoding, settings = chosen.decoding, chosen.settings
    shard = parse_shard(flags.get("shard"))
    if shard and flags.get("merge"):
        raise UniferError("--merge combines the shards; run it without --shard")
    batch_size = flags.get("batch_size")
    if batch_size is not None and batch_size < 1:
        raise UniferError(f"--batch-size must be at least 1, got {batch_size}")
    name = flags.get("run") or (DEFAULT_RUN_NAME if not flags.get("model") else default_run_name(model, preset))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UniferError(f"--run must be letters, digits, '.', '_' or '-' (it names files), got {name!r}; "
                          f"for example {run_name(name)}")
    if batch_size is None:
        batch_size = chosen.batch_size()  # a local engine's imports torch
    given_output = output or flags.get("output")
    output = resolve_path(given_output) if given_output else ferset.default_results_path(name)
    dtype = None
    if local:
        from unifer.models.device import pick_dtype

        dtype = str(pick_dtype(engine_options(engine, options).dtype, cuda_available())).replace("torch.", "")
    recorded_temperature = None  # an endpoint run's header has always held the temperature asked for
    if not local:
        given = flags.get("temperature")
        recorded_temperature = given if given is not None else (preset.defaults if preset else {}).get("temperature")
    return RunPlan(
        ferset=ferset, engine=engine, model=model, local=local, options=options, settings=settings,
        decoding=decoding, records=records, input_path=input_path, input_sha256=sha256_file(input_path),
        output=output, image_root=str(flags.get("image_root") or default_path("UNIFER_IMAGE_ROOT", "/")),
        image_size=image_size, shard=shard, shard_text=flags.get("shard"), batch_size=batch_size, run_name=name,
        display_name=preset.display if preset else name, preset=preset.name if preset else None,
        model_id=(preset.hub_id or preset.model) if preset else (Path(model).name if local else str(model)),
        model_type=_model_type(model) if local else None,
        model_fingerprint=model_fingerprint(model) if local else None, dtype=dtype,
        overwrite=bool(flags.get("overwrite")), retry_errors=bool(flags.get("retry_errors")),
        merge=bool(flags.get("merge")), recorded_temperature=recorded_temperature)


def _model_type(model_dir: Path) -> str | None:
    from unifer.models.families import read_config

    return read_config(model_dir).get("model_type")
