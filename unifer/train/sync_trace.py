"""The colocated vLLM's sync trace (``--trace_sync FILE``): the evidence that the engine follows the policy.

Once before the first weight push (both sides hold the initial weights) and after every push, the colocated vLLM
engine and the policy (transformers ``generate`` on the unwrapped training model, ``torch.no_grad``, eval mode
restored afterwards) answer the same fixed prompts — two short texts and one with a fixed 224×224 image, asked as a chat and as TRL's token ids — greedily,
``PROBE_TOKENS`` new tokens at most, no repetition penalty on either side, the image/video placeholder tokens banned
on both (``bad_words`` / ``suppress_tokens``), each stopping at the model's EOS. One JSON line per probe:

    {"step": global step, "push": "before" | "after", "rank": process index, "prompts": [...],
     "vllm": [[token ids] per prompt], "policy": [[token ids] per prompt], "policy_gaps": [[top-two logit gap]],
     "policy_dtype", "vllm_dtype": what each computes in,
     "weights": how the push loaded them, "caches_reset": the engine caches reset after the push}

The same prompts, image included, are asked before and after each push, so an engine whose prefix (KV) or
vision-encoder cache survived a push would answer from the old weights' states and differ from the policy.
"""
from __future__ import annotations

import json

PROBE_TEXTS = ("Which expression is shown?", "Name one emotion.")
PROBE_IMAGE_TEXT = "Which expression does this face show?"
PROBE_TOKENS = 6


def probe_image():
    """A fixed 224×224 RGB image (a colour gradient): the same bytes in every run."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:224, 0:224]
    rgb = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def probe_prompts(processor) -> list[dict]:
    """Each probe prompt: its text, the rendered chat, its image (or None), the processor's inputs (the policy's) and
    how vLLM is asked: ``"chat"``, the rendered chat and the image, whose image tokens vLLM expands itself (as the
    ``vllm`` engine of inference does), or ``"ids"``, token ids and the image, as the trainer's rollouts send them (the
    processor's ids through ``as_rollout`` in ``vllm_answers``). The image prompt is asked both ways."""
    image = probe_image()
    prompts = [(text, None, "chat") for text in PROBE_TEXTS] + [(PROBE_IMAGE_TEXT, image, "chat"),
                                                                 (PROBE_IMAGE_TEXT, image, "ids")]
    out = []
    for text, image, form in prompts:
        content = ([{"type": "image"}] if image is not None else []) + [{"type": "text", "text": text}]
        chat = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                             tokenize=False)
        inputs = processor(text=[chat], images=[image] if image is not None else None, return_tensors="pt")
        out.append({"text": text, "chat": chat, "image": image, "inputs": dict(inputs), "form": form})
    return out


def vllm_answers(llm, prompts: list[dict], banned_words: list[str], max_tokens: int, as_rollout=None) -> list[list[int]]:
    """vLLM's greedy token ids per prompt; an ``"ids"`` prompt is sent as ``as_rollout`` turns the processor's token
    ids into what the trainer's rollouts send (``unifer.train.grpo_trainer.rollout_prompt_ids``)."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, repetition_penalty=1.0,
                            bad_words=banned_words or None)
    requests = []
    for p in prompts:
        if p["form"] == "chat":
            row = {"prompt": p["chat"]}
        else:
            ids = [p["inputs"]["input_ids"][0].tolist()]
            row = {"prompt_token_ids": (as_rollout(ids) if as_rollout else ids)[0]}
        if p["image"] is not None:
            row["multi_modal_data"] = {"image": p["image"]}
        requests.append(row)
    outputs = llm.generate(requests, sampling_params=params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs]


def policy_answers(model, prompts: list[dict], banned_ids: list[int], max_tokens: int):
    """The policy's greedy token ids per prompt, and at each new token its top-two logit gap (a near-tie, where
    float32 kernels that differ in rounding may pick either token)."""
    import torch

    was_training = model.training
    model.eval()
    answers, gaps = [], []
    try:
        with torch.no_grad():
            for p in prompts:
                inputs = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in p["inputs"].items()}
                new = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=max_tokens,
                                     repetition_penalty=1.0, suppress_tokens=banned_ids or None, use_cache=True,
                                     temperature=None, top_p=None, top_k=None, output_scores=True,
                                     return_dict_in_generate=True)
                answers.append(new.sequences[0, inputs["input_ids"].shape[1]:].tolist())
                top2 = [torch.topk(s[0].float(), 2).values for s in new.scores]
                gaps.append([round(float(t[0] - t[1]), 6) for t in top2])
    finally:
        model.train(was_training)
    return answers, gaps


def trace_colocated_sync(trainer, path: str, banned_ids: list[int], as_rollout=None,
                         max_tokens: int = PROBE_TOKENS) -> None:
    """Wrap the colocated engine's ``sync_weights`` (already ``keep_colocated_vllm_in_sync``'s) with the probes."""
    from trl.models import unwrap_model_for_generation

    generation = trainer.vllm_generation
    processor = trainer.processing_class
    banned_words = [processor.tokenizer.convert_ids_to_tokens(i) for i in banned_ids]
    prompts = probe_prompts(processor)
    push = generation.sync_weights
    pushes = []

    def probe(when: str) -> None:
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                         gather_deepspeed3_params=trainer.args.ds3_gather_for_generation) as model:
            policy, gaps = policy_answers(model, prompts, banned_ids, max_tokens)
        row = {"step": trainer.state.global_step, "push": when, "rank": trainer.accelerator.process_index,
               "prompts": [p["text"] + (f" [image, {p['form']}]" if p["image"] is not None else "") for p in prompts],
               "vllm": vllm_answers(generation.llm, prompts, banned_words, max_tokens, as_rollout), "policy": policy,
               "policy_gaps": gaps, "policy_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
               "vllm_dtype": str(generation.llm.llm_engine.model_config.dtype).removeprefix("torch.")}
        if when == "after":
            row.update(getattr(generation, "last_push", {}))
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def traced_push():
        if not pushes:
            probe("before")
        push()
        pushes.append(trainer.state.global_step)
        probe("after")

    generation.sync_weights = traced_push
