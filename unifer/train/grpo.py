"""GRPO (RLVR) on TRL's GRPOTrainer, with the paper's rewards and hyperparameters.

    python -m unifer.train.grpo --model_name_or_path SFT_MODEL --dataset_name rlvr.json --image_root /dataset/ \\
        --output_dir out [--use_vllm true --vllm_mode colocate|server] [any GRPOConfig / ModelConfig flag]
        [--config run.yaml]

Each record ``{image_path, problem, solution}`` becomes one user turn: the record's own 224×224 image, then
``problem`` (no system prompt: the paper defines one and never uses it). ``solution`` reaches the rewards.
Defaults are the paper's run mapped onto TRL 1.16, the recipe ``train_unifer/recipes/grpo_paper.yaml`` (the table
and every deliberate difference are in ``train_unifer/GRPO_MAPPING.md``). Corrections over the paper's trainer:

- every prompt of a batch gets its own image, read from ``--image_root`` (the paper always read ``/dataset`` and
  processed only the first prompt's image, so at more than one prompt per device the processor's image-token
  expansion raised an IndexError: one prompt per device is the only batch it ran);
- the image-pad guard (``--image_pad_guard``, on): a vision placeholder token in a completion otherwise kills the
  step with "Image features and image tokens do not match" (see ``grpo_trainer``);
- ``--max_prompt_length`` rejects an over-long prompt before training instead of cutting it (cutting from the
  left, as the paper did, drops image tokens);
- resuming restores the weights (transformers' Trainer silently does not for Qwen2.5-VL), and a colocated vLLM
  follows the policy on CPU too (see ``grpo_trainer``).

``--trace_images FILE`` appends one JSON line per rollout and stage (generation, loss): the record's image_path,
the decoded prompt and SHA-256s of the pixels that stage used — what a test needs to see each prompt's own image.
``--trace_sync FILE`` (colocated vLLM only) appends one JSON line before the first weight push and after each: the
engine's and the policy's (transformers) greedy token ids for the same fixed prompts, one with an image, and the
caches the push reset — what a test needs to see the engine follow the policy (see ``sync_trace``).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

from unifer.data.images import IMAGE_SIZE
from unifer.data.records import PAPER_IMAGE_ROOT
from unifer.data.sets import REPO_ROOT
from unifer.errors import DataError, UniferError, run_cli
from unifer.models.processors import load_processor
from unifer.rewards import DEFAULT_REWARD_FUNCS, resolve_reward_funcs
from unifer.train.common import (
    is_main_process,
    parse_trainer_args,
    peft_config_from,
    resume_checkpoint,
    save_for_inference,
    setup_logging,
)
from unifer.train.grpo_trainer import guarded_generation_kwargs, make_trainer_class
from unifer.train.preflight import training_records, with_lazy_images
from unifer.train.recipes import GRPO_RECIPE

log = logging.getLogger(__name__)

DEFAULT_MODEL = REPO_ROOT / "model" / "Qwen2.5-VL-7B-FER-COT-SFT-230K"  # the SFT output
DEFAULT_DATA = REPO_ROOT / "data" / "UniFER_RLVR_360K.json"
DEFAULT_OUTPUT = REPO_ROOT / "model" / "Qwen2.5-VL-7B-FER-GRPO"
RLVR_FIELDS = ("image_path", "problem", "solution")


def _base(name: str):
    import trl

    return getattr(trl, name)


@dataclass
class GRPOScriptArguments(_base("ScriptArguments")):
    """The paper's script flags (``--dataset_name``, ``--data_dir`` alias ``--image_root``, ``--reward_funcs``,
    ``--min_pixels``/``--max_pixels``) plus ours. The paper's values are the recipe's, not these defaults."""

    recipe: str = field(
        default=str(GRPO_RECIPE),
        metadata={"help": "YAML recipe whose settings are the defaults (the paper's run); 'none': TRL's defaults"},
    )
    dataset_name: str | None = field(default=str(DEFAULT_DATA), metadata={"help": "RLVR file (JSON array or JSONL)"})
    image_root: str = field(
        default=PAPER_IMAGE_ROOT,
        metadata={"help": "directory the records' image_path values are relative to", "aliases": ["--data_dir"]},
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: list(DEFAULT_REWARD_FUNCS),
        metadata={"help": "rewards: accuracy, format, accuracy_strict, format_strict, or module:function"},
    )
    min_pixels: int | None = field(default=None, metadata={"help": "image processor's minimum pixels"})
    max_pixels: int | None = field(default=None, metadata={"help": "image processor's maximum pixels"})
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "reject (never cut) prompts longer than this many tokens, image tokens included"},
    )
    image_pad_guard: bool = field(
        default=True, metadata={"help": "ban image/video placeholder tokens from completions (see module doc)"}
    )
    trace_images: str | None = field(
        default=None, metadata={"help": "append per-rollout image fingerprints (JSONL) at generation and loss"}
    )
    trace_sync: str | None = field(
        default=None,
        metadata={"help": "colocated vLLM: append the engine's and the policy's greedy answers to fixed prompts "
                          "(JSONL) before the first weight push and after each"},
    )


@dataclass
class GRPOPaperConfig(_base("GRPOConfig")):
    """GRPOConfig with checkpoints going into the repository by default. The paper's hyperparameters are not
    restated here: they are ``train_unifer/recipes/grpo_paper.yaml``, which the parser applies as defaults."""

    output_dir: str | None = field(default=str(DEFAULT_OUTPUT), metadata={"help": "where checkpoints go"})


# ------------------------------------------------------------------------------------------------------ data
def load_grpo_processor(model_path, revision, min_pixels: int, max_pixels: int):
    """The checkpoint's processor with the recipe's pixel bounds (the paper's are no-ops for 224×224 images, kept
    for fidelity); None keeps the processor's own bound. The PIL image processor: the paper's exact preprocessing."""
    processor = load_processor(model_path, revision=revision, exact=True)
    size = dict(processor.image_processor.size or {})
    if min_pixels is not None:
        size["shortest_edge"] = min_pixels
    if max_pixels is not None:
        size["longest_edge"] = max_pixels
    processor.image_processor.size = size
    processor.tokenizer.padding_side = "left"  # as GRPOTrainer's own loading does
    return processor


def build_prompt(problem: str) -> list[dict]:
    """One user turn; GRPOTrainer puts the row's image in front of the text, as the paper's conversation has it."""
    return [{"role": "user", "content": problem}]


def prompt_token_counts(problems: list[str], processor, image_size: int = IMAGE_SIZE) -> dict[str, int]:
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


def build_dataset(records, image_root, data_path):
    """The checked records (a Dataset, ``unifer.train.preflight.training_records``) with each row's prompt and
    its own image added when read."""
    return with_lazy_images(records, image_root, data_path,
                            extra=lambda batch: {"prompt": [build_prompt(p) for p in batch["problem"]]})


# ---------------------------------------------------------------------------------------------------- main
def apply_settings(script_args, training_args, model_args, processor) -> None:
    """What the paper's trainer did implicitly, spelled out for GRPOTrainer."""
    training_args.model_init_kwargs = {**(training_args.model_init_kwargs or {}), "dtype": model_args.dtype,
                                       "attn_implementation": model_args.attn_implementation}
    if training_args.gradient_checkpointing_kwargs is None:
        training_args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    deepspeed_config = getattr(training_args, "hf_deepspeed_config", None)
    if deepspeed_config is not None:
        # zero.Init checks train_batch_size against micro-batch x accumulation x ITS world size while the model
        # loads, which is 1 where DeepSpeed's communicator is not up yet (CPU runs): let DeepSpeed derive it.
        deepspeed_config.config.pop("train_batch_size", None)
    if training_args.use_vllm and training_args.vllm_max_model_length is None and script_args.max_prompt_length:
        # the paper's max_model_len; without it vLLM reserves KV cache for the model's whole context
        training_args.vllm_max_model_length = script_args.max_prompt_length + training_args.max_completion_length
    if script_args.image_pad_guard:
        training_args.generation_kwargs = guarded_generation_kwargs(
            training_args.generation_kwargs, processor, training_args.use_vllm)
    if script_args.trace_sync and not (training_args.use_vllm and training_args.vllm_mode == "colocate"
                                       and not training_args.vllm_enable_sleep_mode):
        raise UniferError("--trace_sync needs a colocated vLLM (--use_vllm true --vllm_mode colocate) "
                          "without --vllm_enable_sleep_mode")
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
    records = training_records(model_args.model_name_or_path, script_args.dataset_name, "rlvr",
                               script_args.image_root)
    processor = load_grpo_processor(model_args.model_name_or_path, model_args.model_revision,
                                    script_args.min_pixels, script_args.max_pixels)
    check_prompt_lengths([{"problem": p} for p in records["problem"]], processor, script_args.max_prompt_length,
                         script_args.dataset_name)
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
        trace_sync=script_args.trace_sync,
    )
    trainer.train(resume_from_checkpoint=resume)
    out = save_for_inference(trainer, processor, training_args.output_dir)
    if trainer.accelerator.is_main_process:
        log.info("model and processor saved to %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
