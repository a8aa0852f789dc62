"""The ``hf`` engine: transformers ``generate`` on any checkpoint ``AutoModelForImageTextToText`` and
``AutoProcessor`` load, in left-padded batches (one item at a time for families whose processor cannot batch).

The request is the processor's own chat template over one user turn (the image, then the FERBench prompt), then
the processor's own image handling; greedy, with the checkpoint's generation config (see ``unifer.infer.engines``).
For Qwen2.5-VL this is, call for call, the request this repository has always sent (the tests prove the paper's
loop = batch 1 = batch 4). A sampling ``Decoding`` (temperature, top_p, n, seed) is answered one request at a time,
``torch.manual_seed(seed)`` before each, so a request's samples depend on its seed only, not on its batch.
Structured output is refused (transformers has no constrained decoding of its own).

transformers' own repetition penalty also penalises the left-padding tokens of a batch (``<|endoftext|>``, an eos
token), so a padded item could end differently than alone. ``PenaltyIgnoringLeftPadding`` applies the same
penalty, with the same arithmetic, to the real tokens only; at batch size 1 it equals transformers' processor.
Measured on the tiny Qwen2.5-VL in float32 with penalty 1.05: hf at batch 8 (mixed prompt lengths) and vLLM 0.32
on CPU give identical answers for 63 of 63 real photos at 64 new tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

from unifer.infer.engines import Answer, GenerationSettings, chat_prompt, count_until_eos
from unifer.infer.engines.base import Decoding, check_decoding, one_each, option, seeds_for
from unifer.models.device import cuda_available, pick_attn_implementation, pick_dtype
from unifer.models.families import family_of, max_positions
from unifer.models.processors import exact_preprocessing, load_processor

DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass(frozen=True)
class HFOptions:
    dtype: str = option("auto", "auto: bfloat16 on CUDA, float32 on CPU (the paper ran float32)", choices=DTYPES)
    attn: str = option("auto", "hf engine: auto (flash_attention_2 on GPU in bfloat16/float16 where installed, else "
                       "sdpa; float32 always sdpa), sdpa, eager", flag="--attn-implementation")
    trust_remote_code: bool = option(False, "let a checkpoint run its own Python code (MiniCPM-V ...); off unless "
                                     "given: read it first")


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
    prefers_length_sorted = True  # padded batches: similar lengths pad little
    Options = HFOptions

    def __init__(self, model_dir, settings: GenerationSettings, options: HFOptions | None = None,
                 decoding: Decoding | None = None):
        import torch
        from transformers import AutoModelForImageTextToText, GenerationConfig, LogitsProcessor

        options = options or HFOptions()
        dtype, attn, trust_remote_code = options.dtype, options.attn, options.trust_remote_code
        on_cuda = cuda_available()
        self.settings, self.options = settings, options
        self.decoding = decoding or Decoding(max_new_tokens=settings.max_new_tokens)
        check_decoding(self.name, self.decoding, structured=False, extra=False)
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

    def generate(self, images, prompts, decoding: Decoding | None = None, seeds=None) -> list[Answer]:
        decoding = decoding or self.decoding
        one_each(self.name, decoding)
        return [a[0] for a in self.sample(images, prompts, decoding, seeds)]

    def sample(self, images, prompts, decoding: Decoding, seeds=None) -> list[list[Answer]]:
        check_decoding(self.name, decoding, structured=False, extra=False)
        images, prompts = list(images), list(prompts)
        seeds = seeds_for(seeds, len(prompts), decoding)
        if not decoding.greedy:  # one request at a time, seeded: its samples depend on nothing else
            return [self._answer_batch([img], [p], decoding, seed)[0]
                    for img, p, seed in zip(images, prompts, seeds)]
        if not self.family.hf_batches and len(prompts) > 1:
            return [self._answer_batch([img], [p], decoding)[0] for img, p in zip(images, prompts)]
        return self._answer_batch(images, prompts, decoding)

    def _answer_batch(self, images, prompts, decoding: Decoding, seed: int | None = None) -> list[list[Answer]]:
        texts = [chat_prompt(self.processor, p) for p in prompts]
        inputs = self._inputs(texts, images)
        if self.max_positions is not None:
            lengths = inputs["attention_mask"].sum(dim=1).tolist()
            too_long = [n for n, length in enumerate(lengths) if length > self.max_positions]
            if too_long:  # those items fail alone; the others are answered without them
                rest = [n for n in range(len(prompts)) if n not in too_long]
                answered = iter(self._answer_batch([images[n] for n in rest], [prompts[n] for n in rest], decoding,
                                                   seed) if rest else [])
                failed = Answer("", 0, error="the prompt is {} tokens, longer than the model's "
                                             f"{self.max_positions} positions")
                return [[failed._replace(error=failed.error.format(lengths[n]))] * decoding.n if n in too_long
                        else next(answered) for n in range(len(prompts))]
        return self._generate(inputs, decoding, seed)

    def _config(self, decoding: Decoding):
        if decoding.greedy and decoding.max_new_tokens == self.generation_config.max_new_tokens:
            return self.generation_config  # the paper's decoding, exactly as configured at load
        gen = self.generation_config.__class__.from_dict(self.generation_config.to_dict())
        gen.update(max_new_tokens=decoding.max_new_tokens)
        if not decoding.greedy:  # top_k 0: off (None would be refilled from the checkpoint's config)
            gen.update(do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p, top_k=0,
                       num_return_sequences=decoding.n)
        return gen

    def _generate(self, inputs, decoding: Decoding, seed: int | None = None) -> list[list[Answer]]:
        torch = self._torch
        inputs = inputs.to(self.model.device)
        processors = []
        n = 1 if decoding.greedy else decoding.n
        if self.settings.repetition_penalty != 1.0:
            pad_lengths = (inputs["attention_mask"] == 0).sum(dim=1).repeat_interleave(n)
            processors.append(self._penalty_cls(self.settings.repetition_penalty, pad_lengths))
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=self._config(decoding),
                                      logits_processor=processors or None)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        texts = self.processor.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        eos = set(self.settings.eos_token_ids)
        answers = [Answer(a, k, stop_reason="stop" if k < len(ids) or (ids and ids[-1] in eos) else "length")
                   for a, ids in zip(texts, new) for k in [count_until_eos(ids, eos)]]
        if decoding.greedy and decoding.n > 1:  # greedy samples are all the same answer
            return [[a] * decoding.n for a in answers]
        return [answers[i:i + n] for i in range(0, len(answers), n)]

    def close(self) -> None:
        pass
