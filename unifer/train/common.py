"""What the SFT and GRPO trainers share: argument parsing that adapts to the machine, up-front data checks, a
dataset that decodes images lazily, model/processor loading, and saving a checkpoint ready for inference.

The trainers are TRL entry points (``TrlParser`` over script args + the trainer's config + ``ModelConfig``); this
module only holds the pieces that make the same command line run on a GPU cluster and on a laptop CPU:

- ``TrainerArgParser`` fixes the parsed flags *before* the config dataclasses are built, because transformers
  rejects ``bf16=True`` on a CPU-only machine already while constructing ``TrainingArguments``.
- ``check_images_exist`` stats every image before training starts (230K stats take seconds; a missing image
  found after hours of training costs the run); the shell faces' pre-flight also decodes every image
  (``check_images_decode``), so an empty, truncated or non-image file stops the run before it starts.
- ``lazy_image_dataset`` is a ``datasets.Dataset`` (GRPOTrainer accepts nothing else) whose rows carry the
  record's fields plus a decoded 224×224 image, read through ``unifer.data.images.load_image`` only when a batch asks.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from unifer.errors import DataError, UniferError
from unifer.data.images import ImageLoadError, join_image_path, load_image
from unifer.infer.modeling import check_model_dir, cuda_available, pick_attn_implementation, pick_dtype

log = logging.getLogger(__name__)

#: Column added to every lazy dataset row: the record's position in the data file, for error messages.
RECORD_INDEX = "record_index"


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


def parse_trainer_args(dataclass_types: Sequence[type], argv: list[str] | None = None):
    """Parse flags and an optional YAML ``--config``; bad flags and config errors end in one line (exit 2)."""
    parser = make_parser(dataclass_types)
    try:
        parsed = parser.parse_args_and_config(argv)
    except (ValueError, OSError) as e:  # YAML/config and TrainingArguments validation errors
        raise UniferError(f"invalid trainer arguments: {e}") from None
    for note in parser.adaptation_notes:
        log.warning(note)
    return parsed


# -------------------------------------------------------------------------------------------------------- data
def check_image_root(image_root: str | os.PathLike) -> Path:
    root = Path(image_root)
    if not root.is_dir():
        raise UniferError(f"image root not found (set --image_root / IMAGE_ROOT): {root}")
    return root


def check_images_exist(records: Sequence[dict], image_root: str | os.PathLike, data_path: str | os.PathLike) -> None:
    """Raise DataError naming the first record whose image file is missing (``unifer.data.records.require_images``),
    after a training-specific message for a missing root."""
    from unifer.data.records import require_images

    require_images(data_path, records, check_image_root(image_root))


def check_images_decode(records: Sequence[dict], image_root: str | os.PathLike, data_path: str | os.PathLike,
                        field: str = "image_path", progress: bool = True) -> float:
    """Decode every distinct image once (threads, as ``data check`` does); raise DataError naming the first record
    whose image is empty, truncated, not an image or too large. Returns images per second."""
    import time

    from unifer.data.check import decode_images

    root = Path(image_root)
    first: dict[str, int] = {}
    for i, r in enumerate(records):
        first.setdefault(r[field], i)
    paths = list(first)
    start = time.perf_counter()
    failures = decode_images([join_image_path(root, p) for p in paths], progress=progress,
                             desc="pre-flight: decoding images")
    if failures:
        k = min(failures)  # paths are in order of first use: the lowest k is the earliest record
        more = f" ({len(failures) - 1} more images do not decode)" if len(failures) > 1 else ""
        raise DataError(data_path, failures[k] + more, index=first[paths[k]], field=field)
    return len(paths) / max(time.perf_counter() - start, 1e-9)


def check_training_inputs(model_path: str | os.PathLike, data_path: str | os.PathLike, kind: str,
                          image_root: str | os.PathLike) -> list[dict]:
    """Everything that can be checked before training: the checkpoint, every record of the data file (``kind``:
    cot | rlvr) and the existence of every image. Returns the records."""
    from unifer.data.records import load_records

    check_model_dir(model_path)
    records = load_records(data_path, kind)
    if not records:
        raise DataError(data_path, "no records to train on")
    check_images_exist(records, image_root, data_path)
    return records


def lazy_image_dataset(records: Sequence[dict], image_root: str | os.PathLike, data_path: str | os.PathLike,
                       fields: Sequence[str], image_column: str = "image", image_field: str = "image_path"):
    """A ``datasets.Dataset`` of ``fields`` + ``record_index``; reading a row adds ``image_column``: the decoded
    224×224 RGB image (PIL). A file that fails to decode raises DataError naming the record."""
    from datasets import Dataset

    root = Path(image_root)
    columns = {f: [r[f] for r in records] for f in fields}
    columns[RECORD_INDEX] = list(range(len(records)))
    dataset = Dataset.from_dict(columns)

    def add_images(batch: dict) -> dict:
        images = []
        for index, image_path in zip(batch[RECORD_INDEX], batch[image_field]):
            try:
                images.append(load_image(join_image_path(root, image_path)))
            except ImageLoadError as e:
                raise DataError(data_path, str(e), index=index, field=image_field) from None
        return {**batch, image_column: images}

    return dataset.with_transform(add_images)


# ------------------------------------------------------------------------------------------------------ models
def load_processor(model_path: str | os.PathLike, revision: str | None = None):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(model_path), revision=revision)


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


def main(argv: list[str] | None = None) -> int:
    """Pre-flight for the shell faces: ``python -m unifer.train.common --kind cot --model M --data D --image_root R``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m unifer.train.common", description=main.__doc__)
    ap.add_argument("--kind", required=True, choices=("cot", "rlvr"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--image_root", required=True)
    ap.add_argument("--images", choices=("decode", "exist"), default="decode",
                    help="decode every image (default: a broken one stops the run now, not hours into training) "
                         "or only check that each exists (faster, e.g. when resuming)")
    args = ap.parse_args(argv)
    records = check_training_inputs(args.model, args.data, args.kind, args.image_root)
    if args.images == "decode":
        import sys

        rate = check_images_decode(records, args.image_root, args.data, progress=sys.stderr.isatty())
        checked = f"every image decodes ({rate:.0f} img/s)"
    else:
        checked = "every image present"
    print(f"pre-flight ok: {len(records)} {args.kind} records, {checked} under {args.image_root}")
    return 0


if __name__ == "__main__":
    import sys

    from unifer.errors import run_cli

    sys.exit(run_cli(main))
