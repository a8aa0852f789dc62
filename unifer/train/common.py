"""What the SFT and GRPO trainers share: argument parsing over the recipe that adapts to the machine, a
dataset that decodes images lazily, model/processor loading, and saving a checkpoint ready for inference.

The trainers are TRL entry points (``TrlParser`` over script args + the trainer's config + ``ModelConfig``); this
module only holds the pieces that make the same command line run on a GPU cluster and on a laptop CPU:

- ``TrainerArgParser`` fixes the parsed flags *before* the config dataclasses are built, because transformers
  rejects ``bf16=True`` on a CPU-only machine already while constructing ``TrainingArguments``.
- the data checks before training are ``unifer.train.preflight``'s (read and checked once per run);
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from unifer.errors import UniferError
from unifer.models.checkpoints import check_model_dir
from unifer.models.device import cuda_available, pick_attn_implementation, pick_dtype

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------- arguments
def _trl_parser_class():
    from trl import TrlParser

    return TrlParser


def adapt_namespace_to_device(ns, on_cuda: bool | None = None) -> list[str]:
    """Make parsed trainer flags runnable here; returns one note per change.

    Without CUDA: ``use_cpu``, no bf16/fp16 (the paper's ``--bf16 True`` would abort), sdpa attention. The
    attention follows ``pick_attn_implementation`` for the dtype the forward computes in (``compute_dtype``):
    flash-attention 2 needs CUDA, flash-attn and bf16/fp16, else sdpa (one warning where it was asked for).
    """
    on_cuda = cuda_available() if on_cuda is None else on_cuda
    notes = []
    if not on_cuda:
        if hasattr(ns, "use_cpu") and not ns.use_cpu:
            ns.use_cpu = True
            notes.append("no CUDA device: training on CPU (use_cpu=True)")
        for flag in ("bf16", "fp16"):
            if getattr(ns, flag, None):
                setattr(ns, flag, False)
                notes.append(f"no CUDA device: {flag} mixed precision turned off")
    if hasattr(ns, "attn_implementation"):
        # pick_attn_implementation itself warns once when flash_attention_2 cannot run here.
        ns.attn_implementation = pick_attn_implementation(ns.attn_implementation, on_cuda=on_cuda,
                                                          dtype=compute_dtype(ns, getattr(ns, "dtype", None)))
    if getattr(ns, "deepspeed", None):
        notes += ensure_distributed_env()
    return notes


def compute_dtype(training_args, model_dtype) -> str:
    """The dtype a training forward computes in: bf16/fp16 mixed precision where on (autocast, or DeepSpeed casting
    the weights), else the weights' own (``--dtype``; TRL's default float32). An unset ``bf16`` (None, TRL's
    default before its configs' ``__post_init__``) means bf16 unless fp16 is on, as TRL resolves it."""
    fp16 = bool(getattr(training_args, "fp16", False))
    bf16 = getattr(training_args, "bf16", False)
    if bf16 or (bf16 is None and not fp16):
        return "bfloat16"
    if fp16:
        return "float16"
    return model_dtype or "float32"


def ensure_distributed_env() -> list[str]:
    """DeepSpeed outside torchrun looks for MPI (``No module named 'mpi4py'``); a plain ``python -m`` run gets the
    environment of a one-process torchrun instead."""
    if "LOCAL_RANK" in os.environ or "WORLD_SIZE" in os.environ:
        return []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return [f"DeepSpeed without torchrun: running as a single process (MASTER_PORT={port})"]


def make_parser(dataclass_types: Sequence[type]):
    """A ``TrlParser`` over ``dataclass_types`` whose parsed flags go through ``adapt_namespace_to_device``."""
    base = _trl_parser_class()

    class TrainerArgParser(base):
        adaptation_notes: list[str] = []

        def parse_known_args(self, args=None, namespace=None):
            ns, rest = super().parse_known_args(args, namespace)
            self.adaptation_notes = adapt_namespace_to_device(ns)
            return ns, rest

    return TrainerArgParser(tuple(dataclass_types))


def default_recipe(dataclass_types: Sequence[type]) -> str | None:
    """The ``recipe`` field's default of the first dataclass that has one (the script arguments)."""
    import dataclasses

    for t in dataclass_types:
        for f in dataclasses.fields(t):
            if f.name == "recipe":
                return f.default
    return None


def parse_trainer_args(dataclass_types: Sequence[type], argv: list[str] | None = None):
    """Parse flags over the recipe's defaults (``--recipe``, see ``unifer.train.recipes``) and an optional YAML
    ``--config``; bad flags, recipes and config errors end in one line (exit 2)."""
    import sys

    from unifer.train.recipes import recipe_in_argv, trainer_settings

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser(dataclass_types)
    recipe = recipe_in_argv(argv, default_recipe(dataclass_types))
    unknown = parser.set_defaults_with_config(**trainer_settings(recipe))
    if unknown:
        names = ", ".join(a[2:] for a in unknown[::2])
        raise UniferError(f"recipe {recipe}: settings no trainer flag takes: {names}")
    try:
        parsed = parser.parse_args_and_config(argv)
    except (ValueError, OSError) as e:  # YAML/config and TrainingArguments validation errors
        raise UniferError(f"invalid trainer arguments: {e}") from None
    for note in parser.adaptation_notes:
        log.warning(note)
    return parsed


# ---------------------------------------------------------------------------------------------- fused LM head
#: The line of TRL's ``add_fused_lm_head`` that ``score_only_labelled_positions`` relies on.
TRL_COMPACT_LINE = "compact = _use_triton(hidden_states.device)"


def score_only_labelled_positions() -> bool:
    """Make TRL's fused LM head score only the positions that carry a label on CPU too, as it does on CUDA.

    SFT's and GRPO's per-token log-probabilities come from TRL's ``add_fused_lm_head``, which folds the vocabulary
    in chunks. Where Triton runs (CUDA, XPU, the paper's GPUs) it scores only the labelled positions (``compact``);
    elsewhere it scores every position, prompt and image tokens included, so that a compiled backend (Neuron) sees
    one tile shape per batch. Eager CPU compiles nothing, so there it is only cost: on the tiny model (151,646-token
    vocabulary) most of a GRPO step went into log-probabilities of prompt positions that are masked out afterwards.
    Each position's log-softmax is its own and an unlabelled position's gradient is zero, so the labelled positions
    get the same log-probabilities and the model the same gradients. Returns whether the patch is in place (False,
    with a warning, if TRL's code no longer has the line it relies on)."""
    import inspect

    import trl.trainer.utils as trl_utils

    decide = trl_utils._use_triton
    if getattr(decide, "unifer_compact_on_cpu", False):
        return True
    if TRL_COMPACT_LINE not in inspect.getsource(trl_utils.add_fused_lm_head):
        log.warning("TRL's fused LM head changed (no %r): CPU training scores every position", TRL_COMPACT_LINE)
        return False

    def compact(device) -> bool:
        return device.type == "cpu" or decide(device)

    compact.unifer_compact_on_cpu, compact.__wrapped__ = True, decide
    trl_utils._use_triton = compact
    return True


# ------------------------------------------------------------------------------------------------------ models
def load_vl_model(model_args, on_cuda: bool | None = None, training_args=None):
    """Qwen2.5-VL / Qwen2-VL through the Auto classes, in ``model_args.dtype`` (TRL's default float32, which is
    what the paper's run loaded before DeepSpeed's bf16 took over), with the attention for the dtype training
    computes in (``training_args``' bf16/fp16; without them, the weights' dtype)."""
    from transformers import AutoModelForImageTextToText

    path = check_model_dir(model_args.model_name_or_path)
    return AutoModelForImageTextToText.from_pretrained(
        str(path),
        revision=model_args.model_revision,
        dtype=pick_dtype(model_args.dtype, on_cuda=on_cuda),
        attn_implementation=pick_attn_implementation(model_args.attn_implementation, on_cuda=on_cuda,
                                                     dtype=compute_dtype(training_args, model_args.dtype)),
    )


def peft_config_from(model_args):
    """TRL's LoRA config from ``--use_peft`` / ``--lora_*`` flags (None without ``--use_peft``)."""
    from trl import get_peft_config

    return get_peft_config(model_args)


def save_for_inference(trainer, processor, output_dir: str | os.PathLike) -> Path:
    """Save model (all ranks take part: ZeRO-3 gathers) and, on the main process, the processor, a config with
    ``use_cache=True`` restored (gradient checkpointing turned it off during training) and ``trainer_state.json``
    (the logged losses and rewards, for curves)."""
    out = Path(output_dir)
    trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(str(out))
        config = trainer.model.config
        config.use_cache = True
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else None
        if text_config is not None:
            text_config.use_cache = True
        config.save_pretrained(str(out))
        trainer.state.save_to_json(str(out / "trainer_state.json"))
    trainer.accelerator.wait_for_everyone()
    return out


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


class CheckpointWeightsMixin:
    """Correct resumption for both trainers. transformers' Trainer loads a checkpoint's raw state dict with
    ``strict=False``; Qwen2.5-VL checkpoints are saved under the original key names (model.layers.*, visual.*), so
    every key misses and a resumed run silently keeps the initial weights. Load through ``from_pretrained``,
    which converts the names, and require every key."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from peft import PeftModel

        model = self.model if model is None else model
        if isinstance(model, PeftModel) or not os.path.isfile(os.path.join(resume_from_checkpoint, "config.json")):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        restored = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype, device_map=None)
        model.load_state_dict(restored.state_dict(), strict=True)
        del restored
        if not os.path.isfile(os.path.join(resume_from_checkpoint, "optimizer.pt")):
            log.warning("%s holds the model only (--save_only_model true): the optimizer and the learning-rate "
                        "schedule start afresh", resume_from_checkpoint)


def setup_logging(main_process: bool = True) -> None:
    logging.basicConfig(level=logging.INFO if main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"
