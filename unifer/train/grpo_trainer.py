"""GRPOTrainer, adapted: the image-pad guard, an optional per-rollout image trace, correct resumption, and a
colocated vLLM that really follows the policy.

- Image-pad guard. A completion holding an image/video placeholder token makes the next forward pass fail with
  "Image features and image tokens do not match" (R1-V#91, trl#3847). ``guarded_generation_kwargs`` bans the
  placeholders at sampling time (vLLM ``bad_words``; transformers ``suppress_tokens``, of which TRL sets only the
  image token); should a backend emit one anyway, ``cut_at_placeholders`` ends the completion before it.
- Image trace (``--trace_images``): per rollout, at generation and at the loss, the record's image_path, the decoded
  prompt and SHA-256s of the image and of the pixel patches used: the evidence that each prompt gets its own image.
- Resumption. transformers' Trainer loads a checkpoint's raw state dict with ``strict=False``; Qwen2.5-VL is saved
  under its original key names, so every key misses and a resumed run silently restarts from the initial weights.
  We load through ``from_pretrained``, which maps the names.
- Colocated vLLM. TRL pushes the new weights into vLLM parameter by parameter. vLLM's CPU backend repacks linear
  weights and drops the originals, so that push fails; on CPU we use vLLM's layer-wise reload (and repack the LM
  head, which shares the embedding weight). Everywhere, vLLM's vision-encoder cache is cleared after each push:
  features it cached for an image under the old weights would otherwise be reused.
- Colocated vLLM's dtype. TRL builds the colocated engine without a dtype, and vLLM's ``auto`` computes a float32
  checkpoint in bfloat16: on CPU, where the policy trains in float32, rollouts were sampled from a bfloat16 copy
  of it (next-token log-probabilities off by up to 0.07 on the tiny model, enough to flip greedy tokens). The
  engine now computes in the policy's own dtype (``compute_dtype``: bfloat16 under ``--bf16``, the paper's GPU
  setting and vLLM's choice there too; else the weights' dtype).
- Rollout prompts. TRL sends vLLM the trainer's token ids, whose image placeholders the processor has already
  expanded (one ``<|image_pad|>`` per feature); vLLM 0.32 expands placeholders itself and does not detect ones
  already expanded, so the first pad became the image's features and the other N-1 stayed in the prompt as text
  tokens: every rollout answered a different, longer prompt than the one the loss is computed on. We send each run
  of placeholder tokens as one (``rollout_prompt_ids``), the prompt as the chat template renders it.
- Sync trace (``--trace_sync``, ``unifer.train.sync_trace``): the colocated engine's and the policy's greedy answers
  to fixed prompts before the first push and after each, with the caches each push reset.
- Server-mode vLLM. TRL resets only the server's prefix cache after a push; we also reset its encoder and
  multimodal caches (``unifer.train.vllm_server.reset_vision_caches``), as the colocated path does in-process.
"""
from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager, nullcontext

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- image-pad guard
def placeholder_token_ids(processor) -> list[int]:
    """The image and video placeholder ids: the model swaps them for vision features, so one in a completion
    makes the token count disagree with the features."""
    tok = processor.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>")]
    return [i for i in ids if i is not None and i != tok.unk_token_id]


def guarded_generation_kwargs(user_kwargs: dict | None, processor, use_vllm: bool) -> dict:
    """The user's generation kwargs plus a ban on placeholder tokens (vLLM ``bad_words``; transformers
    ``suppress_tokens``, which replaces TRL's image-token-only default), merged with what the user asked."""
    kwargs = dict(user_kwargs or {})
    ids = placeholder_token_ids(processor)
    if use_vllm:
        words = [processor.tokenizer.convert_ids_to_tokens(i) for i in ids]
        kwargs["bad_words"] = list(dict.fromkeys([*(kwargs.get("bad_words") or []), *words]))
    else:
        kwargs["suppress_tokens"] = sorted({*(kwargs.get("suppress_tokens") or []), *ids})
    return kwargs


def rollout_prompt_ids(prompt_ids: list, placeholder_ids) -> list[list[int]]:
    """Each prompt with every run of one placeholder token cut to a single token (see the module doc)."""
    placeholders = set(placeholder_ids)
    out = []
    for ids in prompt_ids:
        ids = list(ids)
        out.append([t for j, t in enumerate(ids) if not (t in placeholders and j > 0 and ids[j - 1] == t)])
    return out


def cut_at_placeholders(completion_ids: list, logprobs: list | None, banned: set[int], fallback_id: int):
    """Each completion up to (not including) its first banned token; a completion that starts with one becomes
    ``[fallback_id]`` (the EOS: an empty answer), with an unknown (None) sampling logprob. Returns the new lists
    and how many completions were cut."""
    new_ids, new_logprobs, cut = [], [] if logprobs is not None else None, 0
    for k, ids in enumerate(completion_ids):
        ids = list(ids)
        first = next((j for j, t in enumerate(ids) if t in banned), None)
        lp = list(logprobs[k]) if logprobs is not None else None
        if first is not None:
            cut += 1
            ids = ids[:first] or [fallback_id]
            if lp is not None:
                lp = lp[:first] or [None]
        new_ids.append(ids)
        if new_logprobs is not None:
            new_logprobs.append(lp)
    return new_ids, new_logprobs, cut


# ------------------------------------------------------------------------------------------------- trainer
def keep_colocated_vllm_in_sync(generation) -> None:
    """Replace TRL's ``sync_weights`` of a colocated vLLM (see the module doc)."""
    from vllm.platforms import current_platform

    llm, trl_sync = generation.llm, generation.sync_weights

    def sync_weights():
        if current_platform.is_cpu():
            loaded = "reload_weights"
            runner = llm.llm_engine.model_executor.driver_worker.model_runner
            runner.reload_weights(weights_iterator=generation._iter_named_params(), is_checkpoint_format=True)
            for name, module in runner.model.named_modules():
                if name.endswith("lm_head") and hasattr(module, "quant_method"):
                    module.quant_method.process_weights_after_loading(module)
        else:
            loaded = "trl"
            trl_sync()
        llm.llm_engine.reset_encoder_cache()
        llm.reset_mm_cache()
        prefix = llm.reset_prefix_cache()
        # what the push did, for --trace_sync (unifer.train.sync_trace)
        generation.last_push = {"weights": loaded, "caches_reset": ["encoder", "mm"] + (["prefix"] if prefix else [])}

    generation.sync_weights = sync_weights


def policy_dtype(args, model) -> str:
    """The dtype the policy's forward computes in: mixed precision where on, else the weights' own."""
    from unifer.train.common import compute_dtype

    weights = (args.model_init_kwargs or {}).get("dtype") if isinstance(model, str) else \
        str(next(model.parameters()).dtype).removeprefix("torch.")
    return compute_dtype(args, None if weights in (None, "auto") else weights)


@contextmanager
def colocated_vllm_dtype(dtype: str):
    """While TRL builds its colocated ``vllm.LLM``, give it ``dtype`` (TRL passes none; see the module doc)."""
    from trl.generation import vllm_generation

    original = vllm_generation.LLM

    def llm_in_policy_dtype(*args, **kwargs):
        kwargs.setdefault("dtype", dtype)
        log.info("colocated vLLM computes in %s, as the policy", kwargs["dtype"])
        return original(*args, **kwargs)

    vllm_generation.LLM = llm_in_policy_dtype
    try:
        yield
    finally:
        vllm_generation.LLM = original


def pixel_digest(tensor) -> str:
    return hashlib.sha256(tensor.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def as_tensors(fields: dict) -> dict:
    """The processor's multimodal fields as torch tensors. The PIL image processor (the paper's preprocessing,
    ``unifer.models.processors``) returns numpy arrays where TRL's tokenization asks for no tensor type, and TRL's
    generation passes only tensors on to ``generate`` (a numpy ``pixel_values`` would silently drop the image)."""
    import numpy as np
    import torch

    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in fields.items()}


def image_digest(image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def split_pixels(pixel_values, image_grid_thw, images_per_sample: list[int]) -> list:
    """Qwen2.5-VL's flat pixel patches → one tensor per sample."""
    rows = image_grid_thw.prod(-1).tolist()
    out, image, start = [], 0, 0
    for n in images_per_sample:
        length = int(sum(rows[image:image + n]))
        out.append(pixel_values[start:start + length])
        image, start = image + n, start + length
    return out


def make_trainer_class():
    from trl import GRPOTrainer

    from unifer.train.common import CheckpointWeightsMixin, score_only_labelled_positions
    from unifer.train.sync_trace import trace_colocated_sync
    from unifer.train.vllm_server import keep_server_vllm_in_sync

    score_only_labelled_positions()

    class UniferGRPOTrainer(CheckpointWeightsMixin, GRPOTrainer):
        """GRPOTrainer + the image-pad cut + the image trace + correct resumption + colocated vLLM sync."""

        def __init__(self, *args, image_pad_guard: bool = True, trace_images: str | None = None,
                     trace_sync: str | None = None, **kwargs):
            train_args = kwargs.get("args") if "args" in kwargs else (args[2] if len(args) > 2 else None)
            model = kwargs.get("model", args[0] if args else None)
            colocated = bool(train_args is not None and train_args.use_vllm and train_args.vllm_mode == "colocate")
            with colocated_vllm_dtype(policy_dtype(train_args, model)) if colocated else nullcontext():
                super().__init__(*args, **kwargs)
            if self.use_vllm and self.args.vllm_mode == "colocate":
                keep_colocated_vllm_in_sync(self.vllm_generation)
                if trace_sync:
                    trace_colocated_sync(self, trace_sync, placeholder_token_ids(self.processing_class),
                                         lambda ids: rollout_prompt_ids(ids, placeholder_token_ids(self.processing_class)))
            elif self.use_vllm and self.args.vllm_mode == "server":
                keep_server_vllm_in_sync(self.vllm_generation, self.accelerator.is_main_process)
            self.placeholder_ids = placeholder_token_ids(self.processing_class)
            self.banned_ids = set(self.placeholder_ids) if image_pad_guard else set()
            self.trace_path = trace_images
            self._trace_paths: list[str] = []

        def _tokenize_prompts(self, prompts):
            prompt_ids, images, fields = super()._tokenize_prompts(prompts)
            return prompt_ids, images, as_tensors(fields)

        def _generate_and_score_completions(self, inputs):
            self._trace_paths = [x.get("image_path") for x in inputs]
            output = super()._generate_and_score_completions(inputs)
            if self.trace_path:
                output["trace_image_path"] = list(self._trace_paths)
            return output

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
            if self.trace_path:
                per_sample = images or [None] * len(prompt_ids)
                pixels = None
                if multimodal_fields and "pixel_values" in multimodal_fields:
                    pixels = split_pixels(multimodal_fields["pixel_values"], multimodal_fields["image_grid_thw"],
                                          [len(i or []) for i in per_sample])
                self._trace("generation", prompt_ids, self._trace_paths,
                            [[image_digest(i) for i in (imgs or [])] for imgs in per_sample],
                            [pixel_digest(p) for p in pixels] if pixels is not None else None)
            sent = rollout_prompt_ids(prompt_ids, self.placeholder_ids) if self.use_vllm else prompt_ids
            completion_ids, logprobs = super()._generate_single_turn(
                sent, images, multimodal_fields, num_generations, *args, **kwargs)
            if self.banned_ids:
                completion_ids, logprobs, cut = cut_at_placeholders(
                    completion_ids, logprobs, self.banned_ids, self.eos_token_ids[0])
                if cut:
                    log.warning("image-pad guard: %d completion(s) cut before a vision placeholder token", cut)
            return completion_ids, logprobs

        def _compute_loss(self, model, inputs):
            if self.trace_path and "trace_image_path" in inputs:
                prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["prompt_ids"],
                                                                               inputs["prompt_mask"])]
                pixels = split_pixels(inputs["pixel_values"], inputs["image_grid_thw"], inputs["num_images"])
                self._trace("loss", prompt_ids, inputs["trace_image_path"], None, [pixel_digest(p) for p in pixels])
            return super()._compute_loss(model, inputs)

        def _trace(self, stage, prompt_ids, image_paths, image_shas, pixel_shas):
            texts = self.processing_class.batch_decode(prompt_ids, skip_special_tokens=True)
            with open(self.trace_path, "a", encoding="utf-8") as f:
                for k, text in enumerate(texts):
                    row = {"stage": stage, "rank": self.accelerator.process_index, "step": self.state.global_step,
                           "image_path": image_paths[k], "prompt": text}
                    if image_shas is not None:
                        row["image_sha"] = image_shas[k]
                    if pixel_shas is not None:
                        row["pixel_sha"] = pixel_shas[k]
                    f.write(json.dumps(row) + "\n")

    return UniferGRPOTrainer
