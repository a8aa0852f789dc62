"""The ``hf`` engine: transformers ``generate`` on any checkpoint ``AutoModelForImageTextToText`` and
``AutoProcessor`` load, in left-padded batches (one item at a time for families whose processor cannot batch).

The request is the processor's own chat template over one user turn (the image, then the FERBench prompt), then
the processor's own image handling; greedy, with the checkpoint's generation config (see ``unifer.infer.engines``).
For Qwen2.5-VL this is, call for call, the request this repository has always sent (the tests prove the paper's
loop = batch 1 = batch 4).

transformers' own repetition penalty also penalises the left-padding tokens of a batch (``<|endoftext|>``, an eos
token), so a padded item could end differently than alone. ``PenaltyIgnoringLeftPadding`` applies the same
penalty, with the same arithmetic, to the real tokens only; at batch size 1 it equals transformers' processor.
Measured on the tiny Qwen2.5-VL in float32 with penalty 1.05: hf at batch 8 (mixed prompt lengths) and vLLM 0.32
on CPU give identical answers for 63 of 63 real photos at 64 new tokens.
"""
from __future__ import annotations

from unifer.infer.engines import Answer, GenerationSettings, chat_prompt, count_until_eos
from unifer.models.device import cuda_available, pick_attn_implementation, pick_dtype
from unifer.models.families import family_of, max_positions
from unifer.models.processors import exact_preprocessing, load_processor


class PenaltyIgnoringLeftPadding:
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
    local = True

    def __init__(self, model_dir, settings: GenerationSettings, dtype: str = "auto", attn: str = "auto",
                 trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForImageTextToText, GenerationConfig, LogitsProcessor

        on_cuda = cuda_available()
        self.settings = settings
        self.family = family_of(model_dir)
        self.max_positions = max_positions(model_dir)
        self.dtype = pick_dtype(dtype, on_cuda)
        # float32 promises the paper's preprocessing: the PIL image processor (unifer.models.processors).
        self.processor = load_processor(model_dir, trust_remote_code=trust_remote_code,
                                        exact=exact_preprocessing(self.dtype))
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # only pads a batch; the attention mask hides it
        # A template that writes the bos token itself (Gemma, Llama) must not get a second one from the tokenizer.
        self.bos_token = tokenizer.bos_token if getattr(tokenizer, "add_bos_token", True) else None
        remote = {"trust_remote_code": True} if trust_remote_code else {}
        self.model = AutoModelForImageTextToText.from_pretrained(
            str(model_dir), dtype=self.dtype, attn_implementation=pick_attn_implementation(attn, on_cuda, dtype=self.dtype),
            device_map="auto" if on_cuda else None, **remote,
        ).eval()
        # The checkpoint's config with the paper's overrides; the penalty moves to PenaltyIgnoringLeftPadding.
        # (1.0, not None: generate() refills None fields from the checkpoint, which would apply the penalty twice.)
        gen = GenerationConfig.from_dict(self.model.generation_config.to_dict())
        gen.update(do_sample=False, repetition_penalty=1.0, max_new_tokens=settings.max_new_tokens, use_cache=True,
                   eos_token_id=list(settings.eos_token_ids), pad_token_id=settings.pad_token_id)
        self.generation_config = gen
        # transformers wants LogitsProcessor instances; subclass lazily so this module imports without torch.
        self._penalty_cls = type("PenaltyIgnoringLeftPadding", (PenaltyIgnoringLeftPadding, LogitsProcessor), {})
        self._torch = torch

    def _inputs(self, texts, images):
        kwargs = dict(text=texts, images=list(images), padding=True, return_tensors="pt")
        if self.bos_token and all(t.startswith(self.bos_token) for t in texts):
            kwargs["add_special_tokens"] = False
        return self.processor(**kwargs)

    def generate(self, images, prompts) -> list[Answer]:
        images, prompts = list(images), list(prompts)
        if not self.family.hf_batches and len(prompts) > 1:
            return [a for img, p in zip(images, prompts) for a in self.generate([img], [p])]
        texts = [chat_prompt(self.processor, p) for p in prompts]
        inputs = self._inputs(texts, images)
        if self.max_positions is not None:
            lengths = inputs["attention_mask"].sum(dim=1).tolist()
            too_long = [n for n, length in enumerate(lengths) if length > self.max_positions]
            if too_long:  # those items fail alone; the others are answered without them
                rest = [n for n in range(len(prompts)) if n not in too_long]
                answered = iter(self.generate([images[n] for n in rest], [prompts[n] for n in rest]) if rest else [])
                return [Answer("", 0, error=f"the prompt is {lengths[n]} tokens, longer than the model's "
                                            f"{self.max_positions} positions") if n in too_long else next(answered)
                        for n in range(len(prompts))]
        return self._generate(inputs)

    def _generate(self, inputs) -> list[Answer]:
        torch = self._torch
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
