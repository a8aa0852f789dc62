"""GRPO (RLVR) on TRL's GRPOTrainer, with the paper's rewards and hyperparameters.

    python -m unifer.train.grpo --model_name_or_path SFT_MODEL --dataset_name rlvr.json --image_root /dataset/ \\
        --output_dir out [--use_vllm true --vllm_mode colocate|server] [any GRPOConfig / ModelConfig flag]
        [--config run.yaml]

Each record ``{image_path, problem, solution}`` becomes one user turn: the record's own 224×224 image, then
``problem`` (no system prompt: the paper defines one and never uses it). ``solution`` reaches the rewards.
Defaults are the paper's run mapped onto TRL 1.16 (``GRPOPaperConfig``; the table and every deliberate
difference are in ``train_unifer/GRPO_MAPPING.md``). Corrections over the paper's trainer:

- every prompt of a batch gets its own image (the paper gave all of them the first prompt's image), read from
  ``--image_root`` (the paper always read ``/dataset``);
- the image-pad guard: image/video placeholder tokens are banned from sampling (TRL's transformers path bans only
  the image token, its vLLM path nothing) and, should a backend emit one anyway, the completion is cut before it —
  one such token otherwise kills the step with "Image features and image tokens do not match";
- ``--max_prompt_length`` rejects an over-long prompt before training instead of cutting it (cutting from the
  left, as the paper did, drops image tokens).

``--trace_images FILE`` appends one JSON line per rollout and stage (generation, loss): the record's image_path,
the decoded prompt and a SHA-256 of the pixels that stage used — what a test needs to see each prompt's own image.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field

from ..data import PAPER_IMAGE_ROOT
from ..errors import DataError, UniferError, run_cli
from ..registry import REPO_ROOT
from ..rewards import DEFAULT_REWARD_FUNCS, resolve_reward_funcs
from .common import (
    check_training_inputs,
    is_main_process,
    lazy_image_dataset,
    load_processor,
    parse_trainer_args,
    peft_config_from,
    save_for_inference,
    setup_logging,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = REPO_ROOT / "model" / "Qwen2.5-VL-7B-FER-COT-SFT-230K"  # the SFT output
DEFAULT_DATA = REPO_ROOT / "data" / "UniFER_RLVR_360K.json"
DEFAULT_OUTPUT = REPO_ROOT / "model" / "Qwen2.5-VL-7B-FER-GRPO"
RLVR_FIELDS = ("image_path", "problem", "solution")
PAPER_MIN_PIXELS, PAPER_MAX_PIXELS = 3136, 501760
PAPER_MAX_PROMPT_LENGTH = 4096


def _base(name: str):
    import trl

    return getattr(trl, name)


@dataclass
class GRPOScriptArguments(_base("ScriptArguments")):
    """The paper's script flags (``--dataset_name``, ``--data_dir`` alias ``--image_root``, ``--reward_funcs``,
    ``--min_pixels``/``--max_pixels``) plus ours."""

    dataset_name: str | None = field(default=str(DEFAULT_DATA), metadata={"help": "RLVR file (JSON array or JSONL)"})
    image_root: str = field(
        default=PAPER_IMAGE_ROOT,
        metadata={"help": "directory the records' image_path values are relative to", "aliases": ["--data_dir"]},
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: list(DEFAULT_REWARD_FUNCS),
        metadata={"help": "rewards: accuracy, format, accuracy_strict, format_strict, or module:function"},
    )
    min_pixels: int = field(default=PAPER_MIN_PIXELS, metadata={"help": "image processor's minimum pixels"})
    max_pixels: int = field(default=PAPER_MAX_PIXELS, metadata={"help": "image processor's maximum pixels"})
    max_prompt_length: int | None = field(
        default=PAPER_MAX_PROMPT_LENGTH,
        metadata={"help": "reject (never cut) prompts longer than this many tokens, image tokens included"},
    )
    image_pad_guard: bool = field(
        default=True, metadata={"help": "ban image/video placeholder tokens from completions (see module doc)"}
    )
    trace_images: str | None = field(
        default=None, metadata={"help": "append per-rollout image fingerprints (JSONL) at generation and loss"}
    )
    max_samples: int | None = field(default=None, metadata={"help": "train on the first N records only"})


@dataclass
class GRPOPaperConfig(_base("GRPOConfig")):
    """GRPOConfig whose defaults are the paper's run (run_grpo_vllm.sh + its trainer), where TRL 1.16's differ.

    Batch: TRL counts COMPLETIONS per device, the paper counted PROMPTS (1 prompt × 8 generations): 8 here."""

    output_dir: str | None = field(default=str(DEFAULT_OUTPUT), metadata={"help": "where checkpoints go"})
    loss_type: str = field(default="grpo", metadata={"help": "'grpo': per-sequence token mean (the paper's)"})
    beta: float = field(default=0.04, metadata={"help": "KL coefficient (the paper's 0.04)"})
    max_completion_length: int | None = field(default=1024, metadata={"help": "max completion tokens"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "COMPLETIONS per device and step"})
    gradient_accumulation_steps: int = field(default=4, metadata={"help": "steps per optimizer update"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "learning-rate schedule"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    logging_steps: float = field(default=2, metadata={"help": "log every N steps"})
    save_steps: float = field(default=1000, metadata={"help": "checkpoint every N steps"})
    save_total_limit: int | None = field(default=3, metadata={"help": "checkpoints kept"})
    save_only_model: bool = field(default=True, metadata={"help": "checkpoints hold the model only"})
    max_grad_norm: float = field(default=5.0, metadata={"help": "gradient clipping"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "epochs"})
    vllm_importance_sampling_correction: bool = field(
        default=False, metadata={"help": "TRL's vLLM/trainer mismatch correction (the paper has none)"}
    )
    use_bias_correction_kl: bool = field(
        default=False, metadata={"help": "weight the KL term by the importance ratio (the paper does not)"}
    )


# ------------------------------------------------------------------------------------------------------ data
def build_prompt(problem: str) -> list[dict]:
    """One user turn; GRPOTrainer puts the row's image in front of the text, as the paper's conversation has it."""
    return [{"role": "user", "content": problem}]


def prompt_token_counts(problems: list[str], processor, image_size: int = 224) -> dict[str, int]:
    """Prompt length in tokens (chat scaffolding + image tokens + problem) for each distinct problem.

    Special tokens bound the problem on both sides, so its tokens do not depend on the rest of the prompt: the
    length is a constant (measured once, with an empty problem) plus the problem's own token count."""
    from PIL import Image

    text = processor.apply_chat_template([_with_image(build_prompt(""))], add_generation_prompt=True,
                                         tokenize=False)[0]
    blank = Image.new("RGB", (image_size, image_size))
    scaffold = len(processor(text=[text], images=[blank])["input_ids"][0])
    distinct = sorted(set(problems))
    counts = processor.tokenizer(distinct, add_special_tokens=False)["input_ids"]
    return {p: scaffold + len(ids) for p, ids in zip(distinct, counts)}


def _with_image(messages: list[dict]) -> list[dict]:
    return [{**messages[0], "content": [{"type": "image"}, {"type": "text", "text": messages[0]["content"]}]}]


def check_prompt_lengths(records: list[dict], processor, max_prompt_length: int | None, data_path) -> None:
    if not max_prompt_length:
        return
    lengths = prompt_token_counts([r["problem"] for r in records], processor)
    for i, r in enumerate(records):
        n = lengths[r["problem"]]
        if n > max_prompt_length:
            raise DataError(data_path, f"the prompt is {n} tokens (image included), over --max_prompt_length "
                                       f"{max_prompt_length}; TRL cannot cut prompts and cutting would drop image "
                                       "tokens: raise the limit or shorten the problem", index=i, field="problem")


def build_dataset(records: list[dict], image_root, data_path):
    rows = [{**{f: r[f] for f in RLVR_FIELDS}, "prompt": build_prompt(r["problem"])} for r in records]
    return lazy_image_dataset(rows, image_root, data_path, (*RLVR_FIELDS, "prompt"))


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
def pixel_digest(tensor) -> str:
    return hashlib.sha256(tensor.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


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
    from peft import PeftModel
    from trl import GRPOTrainer

    def is_peft_model(model) -> bool:
        return isinstance(model, PeftModel)

    class UniferGRPOTrainer(GRPOTrainer):
        """GRPOTrainer + the post-hoc half of the image-pad guard + the optional image trace."""

        def __init__(self, *args, image_pad_guard: bool = True, trace_images: str | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.banned_ids = set(placeholder_token_ids(self.processing_class)) if image_pad_guard else set()
            self.trace_path = trace_images
            self._trace_paths: list[str] = []

        def _generate_and_score_completions(self, inputs):
            self._trace_paths = [x.get("image_path") for x in inputs]
            output = super()._generate_and_score_completions(inputs)
            if self.trace_path:
                output["trace_image_path"] = list(self._trace_paths)
            return output

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
            if self.trace_path:
                pixels = None
                if multimodal_fields and "pixel_values" in multimodal_fields:
                    pixels = split_pixels(multimodal_fields["pixel_values"], multimodal_fields["image_grid_thw"],
                                          [len(i or []) for i in images])
                self._trace("generation", prompt_ids, self._trace_paths,
                            [[image_digest(i) for i in (imgs or [])] for imgs in images],
                            [pixel_digest(p) for p in pixels] if pixels is not None else None)
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs)
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

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # transformers' Trainer loads a checkpoint's raw state dict with strict=False; Qwen2.5-VL checkpoints
            # are saved under the original key names (model.layers.*, visual.*), so every key misses and resuming
            # silently keeps the initial weights. Load through from_pretrained, which converts the names.
            model = self.model if model is None else model
            if is_peft_model(model) or not os.path.isfile(os.path.join(resume_from_checkpoint, "config.json")):
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            restored = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype, device_map=None)
            model.load_state_dict(restored.state_dict(), strict=True)
            del restored
            if not os.path.isfile(os.path.join(resume_from_checkpoint, "optimizer.pt")):
                log.warning("%s holds the model only (--save_only_model true): the optimizer and the learning-rate "
                            "schedule start afresh", resume_from_checkpoint)

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


# ---------------------------------------------------------------------------------------------------- main
def resume_checkpoint(training_args) -> str | None:
    """``--resume_from_checkpoint`` PATH, or ``true``/``latest`` for the newest checkpoint-* in output_dir;
    checked before anything loads."""
    value = training_args.resume_from_checkpoint
    if value is None or str(value).lower() in ("", "false", "none"):
        return None
    target = value
    if str(value).lower() in ("true", "latest"):
        from transformers.trainer_utils import get_last_checkpoint

        out = training_args.output_dir
        target = get_last_checkpoint(out) if os.path.isdir(out) else None
        if target is None:
            raise UniferError(f"--resume_from_checkpoint {value}: no checkpoint-* directory in {out}")
    if not os.path.isfile(os.path.join(target, "trainer_state.json")):
        raise UniferError(f"not a training checkpoint (no trainer_state.json): {target}")
    if training_args.deepspeed and not any(n.startswith("global_step") for n in os.listdir(target)):
        raise UniferError(f"{target} was saved with --save_only_model true (the paper's setting) and holds no DeepSpeed "
                          "state to resume from: train on with MODEL_PATH set to it, or save with --save_only_model "
                          "false to make runs resumable")
    return target


def apply_settings(script_args, training_args, model_args, processor) -> None:
    """What the paper's trainer did implicitly, spelled out for GRPOTrainer."""
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = str(DEFAULT_MODEL)
    training_args.model_init_kwargs = {**(training_args.model_init_kwargs or {}), "dtype": model_args.dtype,
                                       "attn_implementation": model_args.attn_implementation}
    if training_args.gradient_checkpointing_kwargs is None:
        training_args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    if training_args.use_vllm and training_args.vllm_max_model_length is None and script_args.max_prompt_length:
        # the paper's max_model_len; without it vLLM reserves KV cache for the model's whole context
        training_args.vllm_max_model_length = script_args.max_prompt_length + training_args.max_completion_length
    if script_args.image_pad_guard:
        training_args.generation_kwargs = guarded_generation_kwargs(
            training_args.generation_kwargs, processor, training_args.use_vllm)
    if os.environ.get("DEBUG_MODE") == "true" and not os.environ.get("LOG_PATH"):
        raise UniferError("DEBUG_MODE=true needs LOG_PATH (the file rollouts are appended to)")


def main(argv: list[str] | None = None) -> int:
    from trl import ModelConfig

    setup_logging(is_main_process())
    script_args, training_args, model_args = parse_trainer_args(
        (GRPOScriptArguments, GRPOPaperConfig, ModelConfig), argv)
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = str(DEFAULT_MODEL)
    reward_funcs = resolve_reward_funcs(script_args.reward_funcs)
    records = check_training_inputs(model_args.model_name_or_path, script_args.dataset_name, "rlvr",
                                    script_args.image_root)
    if script_args.max_samples:
        records = records[: script_args.max_samples]
    processor = load_processor(model_args.model_name_or_path, revision=model_args.model_revision)
    processor.image_processor.size = {"shortest_edge": script_args.min_pixels, "longest_edge": script_args.max_pixels}
    processor.tokenizer.padding_side = "left"  # as GRPOTrainer loads its own
    check_prompt_lengths(records, processor, script_args.max_prompt_length, script_args.dataset_name)
    apply_settings(script_args, training_args, model_args, processor)
    resume = resume_checkpoint(training_args)
    log.info("%d RLVR records from %s, images under %s; rewards %s", len(records), script_args.dataset_name,
             script_args.image_root, ", ".join(script_args.reward_funcs))

    trainer = make_trainer_class()(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=build_dataset(records, script_args.image_root, script_args.dataset_name),
        processing_class=processor,
        peft_config=peft_config_from(model_args),
        image_pad_guard=script_args.image_pad_guard,
        trace_images=script_args.trace_images,
    )
    trainer.train(resume_from_checkpoint=resume)
    out = save_for_inference(trainer, processor, training_args.output_dir)
    if trainer.accelerator.is_main_process:
        log.info("model and processor saved to %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
