"""Generation engines for FERBench inference, as registry entries: transformers (``hf``), vLLM (``vllm``), and
whatever a new module registers (an OpenAI-compatible client, ...).

Every engine answers a batch of (image, prompt) pairs with the request the paper's loop sends
(``eval_*/code/infer_unifer.py`` in zfkarl/UniFER): one user turn holding the image then the prompt, rendered by
the checkpoint's own chat template (no system message of ours: Qwen2.5-VL's template adds its default "You are a
helpful assistant."), greedy decoding, at most ``max_new_tokens`` new tokens, decoded with
``skip_special_tokens=True, clean_up_tokenization_spaces=False``. The engines live in ``unifer.infer.hf_engine``
and ``unifer.infer.vllm_engine``; this module holds what they share and the registry.

The paper calls ``model.generate(do_sample=False, max_new_tokens=1024, use_cache=True)``, so everything else
comes from the checkpoint's ``generation_config.json``: its eos tokens and its ``repetition_penalty`` (1.05 in
Qwen2.5-VL-Instruct and in checkpoints trained from it, applied over prompt + generated tokens). Both local engines
apply exactly these; sampling fields (temperature, top_p, top_k) are moot under greedy decoding and dropped.
In bfloat16 (the GPU default) rounding depends on kernels and batch shapes, so the engines, and batch sizes, can
part at near-tied logits; ``--dtype float32 --batch-size 1`` is the exact reproduction.

Failures: an item that fails on its own (a prompt longer than the model allows, an image its processor rejects, a
request an API refuses) comes back as ``Answer(error=reason)`` or raises an ordinary exception, and becomes an error
item; only ``is_engine_failure`` errors (out of memory, a dead engine) stop the run, resumably.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path

from unifer.errors import UniferError
from unifer.infer.engines.base import GREEDY, Answer, Decoding, Engine, EngineDeadError, StreamingEngine
from unifer.models.device import cuda_available

__all__ = ["GREEDY", "Answer", "Decoding", "Engine", "EngineDeadError", "StreamingEngine"]

#: The engines as registry entries: name → "module:class". A new backend is a new module and one line here; its
#: class takes ``(model, settings, **options)`` — keyword options it names in its signature, picked by
#: ``make_engine`` from everything the runner knows — and offers ``generate(images, prompts) -> list[Answer]``,
#: ``close()`` and a ``name``. ``local = False`` on a class: ``model`` is a name an endpoint serves, not a
#: checkpoint directory (no model check, no generation_config). Modules are imported only when their engine is made.
ENGINE_CLASSES: dict[str, str] = {
    "hf": "unifer.infer.hf_engine:HFEngine",
    "vllm": "unifer.infer.vllm_engine:VLLMEngine",
    "openai": "unifer.infer.openai_engine:OpenAIEngine",
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
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def count_until_eos(token_ids, eos_ids) -> int:
    """Generated tokens up to and including the first eos (batch rows are padded after it)."""
    for n, t in enumerate(token_ids, 1):
        if t in eos_ids:
            return n
    return len(token_ids)


def default_batch_size(engine: str) -> int:
    """Items per generate call: what fits a 7B model on one GPU; small on CPU, where batching gains little. An
    engine class may set its own (``default_batch_size = N``)."""
    own = getattr(engine_class(engine), "default_batch_size", None)
    if isinstance(own, int):
        return own
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


def make_engine(engine: str, model, settings: GenerationSettings, **options):
    """Make the ``engine`` registered in ENGINE_CLASSES for ``model``. ``options`` may hold every engine's keyword
    options (the runner passes all it has: dtype, attn, tensor_parallel_size, image_size, base_url, ...): each class
    receives the ones its ``__init__`` names (all of them if it takes ``**kwargs``). So a new engine plugs in with
    its own options and no edit here."""
    cls = engine_class(engine)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k in params and k not in ("self", "model", "settings")}
    return cls(model, settings, **options)


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
