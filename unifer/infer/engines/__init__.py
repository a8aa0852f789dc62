"""Generation engines for FERBench inference, as registry entries: transformers (``hf``), vLLM (``vllm``), and
whatever a new module registers (an OpenAI-compatible client, ...).

Every engine answers a batch of (image, prompt) pairs with the request the paper's loop sends
(``eval_*/code/infer_unifer.py`` in zfkarl/UniFER): one user turn holding the image then the prompt, rendered by
the checkpoint's own chat template (no system message of ours: Qwen2.5-VL's template adds its default "You are a
helpful assistant."), greedy decoding, at most ``max_new_tokens`` new tokens, decoded with
``skip_special_tokens=True, clean_up_tokenization_spaces=False``. The contract is ``unifer.infer.engines.base``;
the engines live in ``hf``, ``vllm``, ``openai`` and ``fake`` beside it; this module holds what they share, the
registry, and the engines' command-line flags, generated from their options dataclasses.

The paper calls ``model.generate(do_sample=False, max_new_tokens=1024, use_cache=True)``, so everything else
comes from the checkpoint's ``generation_config.json``: its eos tokens and its ``repetition_penalty`` (1.05 in
Qwen2.5-VL-Instruct and in checkpoints trained from it, applied over prompt + generated tokens). Both local engines
apply exactly these; the checkpoint's sampling fields (temperature, top_p, top_k) are moot under greedy decoding and
dropped; a sampling ``Decoding`` sets its own.
In bfloat16 (the GPU default) rounding depends on kernels and batch shapes, so the engines, and batch sizes, can
part at near-tied logits; ``--dtype float32 --batch-size 1`` is the exact reproduction.

Failures: an item that fails on its own (a prompt longer than the model allows, an image its processor rejects, a
request an API refuses) comes back as ``Answer(error=reason)`` or raises an ordinary exception, and becomes an error
item; only ``is_engine_failure`` errors (out of memory, a dead engine) stop the run, resumably.
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

from unifer.errors import UniferError
from unifer.infer.engines.base import (
    GREEDY,
    Answer,
    Decoding,
    Engine,
    EngineDeadError,
    StreamingEngine,
    build_options,
    option_default,
    user_turn,
)
from unifer.models.device import cuda_available

__all__ = ["GREEDY", "Answer", "Decoding", "Engine", "EngineDeadError", "StreamingEngine", "user_turn"]

#: The engines as registry entries: name → "module:class". A new backend is a new module and one line here; its
#: class takes ``(model, settings, options, decoding)`` — ``options`` an instance of its ``Options`` dataclass,
#: built by ``make_engine`` from a dict (an unknown key is refused) — and offers the ``Engine`` protocol of
#: ``unifer.infer.engines.base``. ``local = False`` on a class: ``model`` is a name an endpoint serves, not a
#: checkpoint directory (no model check, no generation_config). Modules are imported only when their engine is
#: made or its flags are listed (both cheap: the heavy imports happen inside the class).
ENGINE_CLASSES: dict[str, str] = {
    "hf": "unifer.infer.engines.hf:HFEngine",
    "vllm": "unifer.infer.engines.vllm:VLLMEngine",
    "openai": "unifer.infer.engines.openai:OpenAIEngine",
    "fake": "unifer.infer.engines.fake:FakeEngine",
}
ENGINES = tuple(ENGINE_CLASSES)


CPU_KV_CACHE_GIB = 4  # vLLM on CPU, unless VLLM_CPU_KVCACHE_SPACE says otherwise: ~35K tokens of a 7B in float32


@dataclass(frozen=True)
class GenerationSettings:
    """What decides an answer besides the request: greedy, a token budget, the checkpoint's penalty and eos ids."""

    max_new_tokens: int
    repetition_penalty: float
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None


# generation_config.json fields that transformers would apply and vLLM cannot: a checkpoint setting one of them
# is answered differently by the two engines, so the vllm engine says so.
HF_ONLY_FIELDS = ("no_repeat_ngram_size", "min_new_tokens", "min_length", "bad_words_ids", "suppress_tokens",
                   "begin_suppress_tokens", "sequence_bias", "encoder_repetition_penalty")


def _as_ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def read_generation_config(model_dir: str | os.PathLike) -> dict:
    """The checkpoint's generation_config.json (empty when absent)."""
    f = Path(model_dir) / "generation_config.json"
    if not f.is_file():
        return {}
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UniferError(f"model generation config is unreadable ({e}): {f}") from None
    return cfg if isinstance(cfg, dict) else {}


def generation_settings(model_dir: str | os.PathLike, max_new_tokens: int) -> GenerationSettings:
    """The paper's decoding for this checkpoint: greedy + generation_config's repetition penalty and eos ids."""
    gen = read_generation_config(model_dir)
    eos = _as_ids(gen.get("eos_token_id"))
    pad = gen.get("pad_token_id")
    if not eos or pad is None:  # fall back on config.json (top level or text_config), as transformers does
        cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
        for section in (cfg, cfg.get("text_config") or {}):
            eos = eos or _as_ids(section.get("eos_token_id"))
            pad = section.get("pad_token_id") if pad is None else pad
    penalty = float(gen.get("repetition_penalty") or 1.0)
    return GenerationSettings(max_new_tokens, penalty, tuple(eos), None if pad is None else int(pad))


def chat_prompt(processor, prompt: str) -> str:
    """The paper's request as text: one user turn, the image then the prompt, the template's default system."""
    return processor.apply_chat_template([user_turn(prompt)], tokenize=False, add_generation_prompt=True)


def count_until_eos(token_ids, eos_ids) -> int:
    """Generated tokens up to and including the first eos (batch rows are padded after it)."""
    for n, t in enumerate(token_ids, 1):
        if t in eos_ids:
            return n
    return len(token_ids)


def default_batch_size(engine: str, options=None) -> int:
    """Items per generate call: what fits a 7B model on one GPU; small on CPU, where batching gains little. An
    engine class may set its own (``default_batch_size = N``, or a function of its options)."""
    cls = engine_class(engine)
    own = getattr(cls, "default_batch_size", None)
    if isinstance(own, int):
        return own
    if callable(own):
        return own(options if options is not None else engine_options(engine))
    on_cuda = cuda_available()
    if engine == "vllm":
        return 256 if on_cuda else 16
    return 16 if on_cuda else 4


def engine_class(engine: str):
    """The class registered for ``engine`` (its module imported now)."""
    if engine not in ENGINE_CLASSES:
        raise UniferError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    module, _, name = ENGINE_CLASSES[engine].partition(":")
    return getattr(importlib.import_module(module), name)


def engine_options(engine: str, values: dict | None = None):
    """The ``engine``'s options dataclass built from ``values`` (one line refusing a key it does not take)."""
    return build_options(engine_class(engine).Options, values, engine)


def make_engine(engine: str, model, settings: GenerationSettings, options=None, decoding: Decoding | None = None):
    """Make the ``engine`` registered in ENGINE_CLASSES for ``model``: ``options`` a dict (or the engine's own
    options dataclass), ``decoding`` what ``generate`` does when not told (default: greedy, the settings' budget)."""
    cls = engine_class(engine)
    if not isinstance(options, cls.Options):
        options = engine_options(engine, options)
    decoding = decoding or Decoding(max_new_tokens=settings.max_new_tokens)
    return cls(model, settings, options, decoding)


def option_fields(engine: str) -> dict:
    """The engine's options as dataclass fields, by name."""
    return {f.name: f for f in fields(engine_class(engine).Options)}


def add_option_arguments(ap, engines=None) -> None:
    """Every engine's options as flags, generated from the options dataclasses: ``--field-name`` (or the field's
    ``flag``), default None (a preset, then the dataclass, fills what no flag gives), the dataclass default in the
    help. An option several engines take (``dtype``, ``trust_remote_code``) is one flag. Fields marked
    ``plan=True`` are filled by the run plan (``--image-size``), not by a flag of their own."""
    seen: dict[str, str] = {}
    groups = {}
    for name in engines or ENGINES:
        for f in fields(engine_class(name).Options):
            meta = dict(f.metadata)
            if meta.pop("plan", False) or f.name in seen:
                continue
            takers = [e for e in (engines or ENGINES) if f.name in option_fields(e)]
            title = f"{name} engine" if len(takers) == 1 else f"{', '.join(takers)} engines"
            if title not in groups:
                groups[title] = ap.add_argument_group(title)
            seen[f.name] = name
            flag = meta.pop("flag", None) or "--" + f.name.replace("_", "-")
            default = option_default(f)
            help_text = meta.pop("help") + ("" if default in (None, False, {}, ()) else f" (default {default})")
            if isinstance(default, bool):
                meta.setdefault("action", "store_true")
            elif "type" not in meta and isinstance(default, (int, float)) and "choices" not in meta:
                meta["type"] = type(default)
            groups[title].add_argument(flag, dest=f.name, default=None, help=help_text, **meta)


def is_local(engine: str) -> bool:
    """Whether ``engine`` runs a checkpoint directory here (hf, vllm) rather than asking an endpoint for a name."""
    return bool(getattr(engine_class(engine), "local", True))


#: Exceptions that mean the engine itself failed: the run stops (resumably) instead of writing error items.
ENGINE_FAILURE_TYPES = ("OutOfMemoryError", "EngineDeadError", "EngineGenerateError", "DeadWorkerError")
_ENGINE_FAILURE_TEXT = ("out of memory", "CUDA error", "NCCL error", "EngineCore", "engine core")


def is_engine_failure(error: BaseException) -> bool:
    """True for a failure of the engine (out of memory, a dead worker or engine process, a CUDA error) — one that
    would fail every later item too; False for an item's own failure (a bad prompt, a rejected image)."""
    if isinstance(error, (MemoryError, UniferError, KeyboardInterrupt, SystemExit)):
        return True
    names = {t.__name__ for t in type(error).__mro__}
    if names & set(ENGINE_FAILURE_TYPES):
        return True
    return isinstance(error, RuntimeError) and any(t in str(error) for t in _ENGINE_FAILURE_TEXT)


def describe_error(error: BaseException, limit: int = 300) -> str:
    """One line for an error item: ``Type: message``, whitespace folded, cut at ``limit`` characters."""
    text = " ".join(str(error).split()) or "(no message)"
    text = f"{type(error).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def add_decoding_arguments(ap) -> None:
    """How the engine decodes (``base.Decoding``): greedy unless ``--temperature`` says otherwise."""
    g = ap.add_argument_group("decoding", "greedy (the paper's) unless --temperature > 0; a preset may set these")
    g.add_argument("--max-new-tokens", type=int, default=None,
                   help=f"new-token budget (default {Decoding.max_new_tokens}, the paper's)")
    g.add_argument("--temperature", type=float, default=None, help="0 (default): greedy; above 0: sampling")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling's share (default 1: off)")
    g.add_argument("--seed", type=int, default=None,
                   help="sampling seed of every request (default: the engine's own); moot when greedy")
