"""Cold-start SFT on chain-of-thought records (UniFER-CoT-230K) with TRL's SFTTrainer.

    python -m unifer.train.sft --model_name_or_path M --dataset_name data.json --image_root /dataset/ \\
        --output_dir out [any SFTConfig / ModelConfig flag] [--config run.yaml]

Each record ``{image_path, question, response}`` becomes one conversation, as in the paper: a system turn with
empty text, a user turn with the 224×224 image then the question, an assistant turn with the response.

Loss mask. Faithful (default): the whole conversation is trained except pad and image-pad tokens, which is what
the paper's collator does (system and user text, the vision start/end markers and the chat scaffolding all carry
loss). Opt-in ``--assistant_only_loss``: only the assistant's response and its closing ``<|im_end|>`` carry loss.

Loss weighting. Faithful (default, ``--loss_weighting sample``): each sample's loss is the mean over its own
trained tokens, a micro-batch's loss the mean over its samples, and gradient accumulation averages the
micro-batches — what the paper's run optimised (transformers 4.49: Qwen2.5-VL's forward took no loss kwargs, so
the Trainer divided each micro-batch's token mean by the accumulation steps; at its batch 1 a micro-batch is one
sample). Opt-in ``--loss_weighting token``: the sum over every trained token of the accumulated global batch
(all ranks) divided by their count, TRL 1.16's ``num_items_in_batch`` normalisation, so a long response weighs
more. Stock TRL 1.16 applies that only to models that accept loss kwargs; transformers 5.19 marks Qwen2.5-VL as not
accepting them (``accepts_loss_kwargs = False``), so unmodified SFTTrainer averages each micro-batch's tokens,
then the micro-batches: the same as ``sample`` at the paper's per-device batch 1, in between the two at larger ones.

Corrections over the paper's script: every example's image reaches the processor (the paper's collator kept one
image per batch, so at more than one example per device the processor's image-token expansion raised an
IndexError: its batch size of 1 is the only one it ran), and images load per batch through the shared loader
instead of being resolved by string concatenation at start-up. Defaults are the recipe
``train_unifer/recipes/sft_paper.yaml`` (the paper's run; ``train_unifer/SFT_MAPPING.md``).
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

import torch

from unifer.data.records import PAPER_IMAGE_ROOT
from unifer.data.sets import REPO_ROOT
from unifer.errors import UniferError, run_cli
from unifer.models.chat import user_turn
from unifer.models.processors import load_processor
from unifer.train.common import (
    CheckpointWeightsMixin,
    is_main_process,
    load_vl_model,
    parse_trainer_args,
    peft_config_from,
    resume_checkpoint,
    save_for_inference,
    score_only_labelled_positions,
    setup_logging,
)
from unifer.train.preflight import training_records, with_lazy_images
from unifer.train.recipes import SFT_RECIPE

log = logging.getLogger(__name__)

DEFAULT_MODEL = REPO_ROOT / "model" / "Qwen2.5-VL-7B-Instruct"
DEFAULT_DATA = REPO_ROOT / "data" / "UniFER_CoT_230K.json"
DEFAULT_OUTPUT = REPO_ROOT / "model" / "Qwen2.5-VL-7B-FER-COT-SFT-230K"
COT_FIELDS = ("image_path", "question", "response")
IGNORE_INDEX = -100  # labels the loss skips
SYSTEM_TEXT = ""  # the paper's system turn is present but empty
LOSS_WEIGHTINGS = ("sample", "token")


def _script_arguments_base():
    from trl import ScriptArguments

    return ScriptArguments


@dataclass
class SFTScriptArguments(_script_arguments_base()):
    """The paper's flags: ``--dataset_name`` is the CoT file, ``--image_root`` (alias ``--data_dir``) its images.
    The paper's hyperparameters are ``train_unifer/recipes/sft_paper.yaml``, which the parser applies as defaults."""

    recipe: str = field(
        default=str(SFT_RECIPE),
        metadata={"help": "YAML recipe whose settings are the defaults (the paper's run); 'none': TRL's defaults"},
    )
    dataset_name: str | None = field(
        default=str(DEFAULT_DATA), metadata={"help": "CoT training file (JSON array or JSONL)"}
    )
    image_root: str = field(
        default=PAPER_IMAGE_ROOT,
        metadata={"help": "directory the records' image_path values are relative to", "aliases": ["--data_dir"]},
    )
    loss_weighting: str = field(
        default="sample",
        metadata={"help": "sample (the paper's): mean over each sample's tokens, then over the samples; token "
                          "(TRL's num_items_in_batch): mean over every token of the global batch, so long "
                          "responses weigh more",
                  "choices": list(LOSS_WEIGHTINGS)},
    )


def build_messages(question: str, response: str | None, image) -> list[dict]:
    """One record as the paper's conversation (system with empty text, user image + question, assistant)."""
    messages = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_TEXT}]},
        user_turn(question, image),
    ]
    if response is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": response}]})
    return messages


class CoTCollator:
    """Rows ``{question, response, image}`` → a padded batch with ``labels`` (see the module doc for the masks)."""

    def __init__(self, processor, assistant_only_loss: bool = False):
        self.processor = processor
        self.assistant_only_loss = assistant_only_loss
        tokenizer = processor.tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.image_pad_id = tokenizer.convert_tokens_to_ids(processor.image_token)
        self.turn_start_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
        self.turn_end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.assistant_header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)

    def __call__(self, rows: list[dict]) -> dict:
        texts = [
            self.processor.apply_chat_template(build_messages(r["question"], r["response"], r["image"]),
                                               tokenize=False)
            for r in rows
        ]
        batch = self.processor(text=texts, images=[r["image"] for r in rows], return_tensors="pt", padding=True)
        input_ids = batch["input_ids"]
        if self.assistant_only_loss:
            labels = torch.full_like(input_ids, IGNORE_INDEX)
            for row, (start, end) in enumerate(self.assistant_spans(input_ids)):
                labels[row, start:end] = input_ids[row, start:end]
        else:
            labels = input_ids.clone()
            labels[input_ids == self.pad_id] = IGNORE_INDEX
            labels[input_ids == self.image_pad_id] = IGNORE_INDEX
        batch["labels"] = labels
        return batch

    def assistant_spans(self, input_ids: torch.Tensor) -> list[tuple[int, int]]:
        """Per row, [start, end) of the assistant's response through its closing ``<|im_end|>``."""
        header = torch.tensor(self.assistant_header)
        spans = []
        for row in input_ids:
            starts = (row == self.turn_start_id).nonzero().flatten().tolist()
            opening = next((i for i in reversed(starts) if torch.equal(row[i:i + len(header)], header)), None)
            if opening is None:
                raise RuntimeError("no '<|im_start|>assistant' turn in a training sequence: chat template mismatch")
            start = opening + len(header)
            ends = (row[start:] == self.turn_end_id).nonzero().flatten().tolist()
            if not ends:
                raise RuntimeError("the assistant turn has no closing <|im_end|>: chat template mismatch")
            spans.append((start, start + ends[0] + 1))
        return spans


def sample_mean_loss(per_token_loss: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
    """Mean over samples of each sample's mean token loss (rows: samples; ``per_token_loss`` zero where masked).
    A sample without trained tokens is left out; a batch of only such samples gives a zero tied to the graph."""
    counts = label_mask.sum(dim=1)
    per_sample = per_token_loss.sum(dim=1) / counts.clamp(min=1)
    trained = counts > 0
    if not bool(trained.any()):
        return per_token_loss.sum() * 0.0
    return per_sample[trained].mean()


class LossWeightingMixin:
    """``--loss_weighting`` on top of SFTTrainer (see the module doc). ``sample`` lets SFTTrainer run its forward
    (its fused LM head, its metrics), keeps the per-token losses that forward returns, and replaces the loss by
    their per-sample mean; the Trainer then divides by the accumulation steps, as transformers 4.49 did. ``token``
    is SFTTrainer's own loss, given the global batch's token count that the Trainer only computes for models that
    accept loss kwargs."""

    def __init__(self, *args, loss_weighting: str = "sample", **kwargs):
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise UniferError(f"--loss_weighting must be one of {', '.join(LOSS_WEIGHTINGS)}, got {loss_weighting!r}")
        self.loss_weighting = loss_weighting
        # Trainer.training_step: False divides the returned loss by the accumulation steps; None decides from
        # num_items_in_batch, which is right for TRL's token-normalised loss.
        self.loss_is_scaled_for_ga = False if loss_weighting == "sample" else None
        super().__init__(*args, **kwargs)
        if loss_weighting == "token":
            # Qwen2.5-VL says accepts_loss_kwargs = False; SFTTrainer computes the loss itself from the per-token
            # log-probabilities, so counting the tokens (num_items_in_batch) is all the Trainer has to do.
            self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.loss_weighting == "token":
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        first = []  # the first forward of this call is the one the loss comes from

        def keep_first(module, args, output):
            if not first:
                first.append(output)

        handle = model.register_forward_hook(keep_first)
        try:
            result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=None)
        finally:
            handle.remove()
        outputs = first[0] if first else None
        if getattr(outputs, "log_probs", None) is None or getattr(outputs, "label_mask", None) is None:
            raise UniferError("--loss_weighting sample needs SFTTrainer's default loss (per-token log-probabilities "
                              "from its fused LM head); with --loss_type dft, label smoothing or sequence "
                              "parallelism use --loss_weighting token")
        loss = sample_mean_loss(-outputs.log_probs, outputs.label_mask)
        return (loss, result[1]) if return_outputs else loss


def make_trainer_class():
    """SFTTrainer with the loss weighting and the checkpoint-weights fix; on CPU its fused LM head scores only the
    labelled positions (``score_only_labelled_positions``)."""
    from trl import SFTTrainer

    score_only_labelled_positions()
    return type("UniferSFTTrainer", (LossWeightingMixin, CheckpointWeightsMixin, SFTTrainer), {})


def apply_paper_settings(script_args, training_args, model_args) -> None:
    """Defaults for paths left unset, and the settings a VLM with our own collator needs on SFTTrainer."""
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = str(DEFAULT_MODEL)
    if training_args.output_dir is None:
        training_args.output_dir = str(DEFAULT_OUTPUT)
    if training_args.gradient_checkpointing_kwargs is None:
        training_args.gradient_checkpointing_kwargs = {"use_reentrant": False}  # as the paper
    training_args.remove_unused_columns = False  # the collator needs question/response/image
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    training_args.max_length = None  # the paper never truncates; the collator does not either


def main(argv: list[str] | None = None) -> int:
    from trl import ModelConfig, SFTConfig

    setup_logging(is_main_process())
    script_args, training_args, model_args = parse_trainer_args((SFTScriptArguments, SFTConfig, ModelConfig), argv)
    apply_paper_settings(script_args, training_args, model_args)
    if script_args.dataset_name is None:
        raise UniferError("--dataset_name (the CoT training file) is required")
    records = training_records(model_args.model_name_or_path, script_args.dataset_name, "cot",
                               script_args.image_root)
    log.info("%d CoT records from %s, images under %s", len(records), script_args.dataset_name,
             script_args.image_root)
    dataset = with_lazy_images(records, script_args.image_root, script_args.dataset_name)

    # The PIL image processor: the paper's exact preprocessing (unifer.models.processors).
    processor = load_processor(model_args.model_name_or_path, revision=model_args.model_revision, exact=True)
    model = load_vl_model(model_args, training_args=training_args)
    collator = CoTCollator(processor, assistant_only_loss=training_args.assistant_only_loss)
    # Our collator applies the mask. TRL reads the flag only while constructing the trainer (to swap in its own
    # training chat template), so it is off for that moment and restored for the saved training arguments.
    training_args.assistant_only_loss = False

    resume = resume_checkpoint(training_args)
    trainer = make_trainer_class()(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        peft_config=peft_config_from(model_args),
        loss_weighting=script_args.loss_weighting,
    )
    training_args.assistant_only_loss = collator.assistant_only_loss
    trainer.train(resume_from_checkpoint=resume)
    out = save_for_inference(trainer, processor, training_args.output_dir)
    if trainer.accelerator.is_main_process:
        log.info("model and processor saved to %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
