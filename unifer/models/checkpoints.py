"""Checkpoint checks that fail before anything heavy loads: a vision-language config, whole weights.

Shared by inference and both trainers. Reads config.json and safetensors headers only (no torch, no transformers),
so ``check_model_dir`` is cheap enough for argument validation.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from unifer.errors import UniferError

#: Checkpoints the trainers accept (Qwen2.5-VL; Qwen2-VL shares the processor and chat format).
VL_MODEL_TYPES = ("qwen2_5_vl", "qwen2_vl")

#: Models with a vision tower that write no text (dual encoders, detectors): FERBench cannot ask them anything.
NON_GENERATIVE_VISION_TYPES = ("clip", "siglip", "siglip2", "chinese_clip", "altclip", "owlvit", "owlv2", "x_clip",
                               "groupvit", "clipseg", "align", "metaclip_2")
_NON_GENERATIVE_HEADS = ("ForImageClassification", "ForZeroShotImageClassification", "ForObjectDetection",
                         "ForZeroShotObjectDetection", "ForSemanticSegmentation", "ForDepthEstimation",
                         "ForSequenceClassification", "ForTokenClassification", "ForMaskedLM", "VisionModel")
# Keys by which a config.json declares its vision tower (transformers' vision_config; original LLaVA's
# mm_vision_tower; remote-code checkpoints' own names).
_VISION_KEYS = ("vision_config", "vision_tower", "mm_vision_tower", "visual", "vit_config", "vision_encoder")


def _config_problem(cfg: dict) -> str | None:
    """Why ``cfg`` is not a usable config (None when it is)."""
    if not isinstance(cfg.get("model_type"), str):
        return "has no model_type"
    for key in ("vision_config", "text_config"):
        if key in cfg and not isinstance(cfg[key], (dict, type(None))):
            return f"has {key!r} as a {type(cfg[key]).__name__}, not an object"
    return None


def _weights_problem(p: Path) -> str | None:
    """Why the checkpoint's weights cannot load (None when they look whole): none at all, a shard named in the
    index but missing, or a safetensors file whose header is cut or not JSON. Reads headers only."""
    files = sorted(p.glob("*.safetensors"))
    if not files and not any(p.glob("*.bin")):
        return "has a config but no weights (*.safetensors)"
    index = p / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            return f"has an unreadable model.safetensors.index.json ({type(e).__name__})"
        missing = sorted(s for s in shards if not (p / s).is_file())
        if missing:
            return f"lacks weight shards named in model.safetensors.index.json: {', '.join(missing[:3])}"
    for f in files:
        try:
            with open(f, "rb") as fh:
                head = fh.read(8)
                size = int.from_bytes(head, "little") if len(head) == 8 else 0
                if not 2 <= size <= f.stat().st_size - 8:
                    raise ValueError("header length out of range")
                json.loads(fh.read(size))
        except (OSError, ValueError) as e:
            return f"has a broken weight file {f.name} (not safetensors: {e})"
    return None


def is_vision_language(cfg: dict) -> bool:
    """Whether a config.json describes a checkpoint with a vision tower that answers in text."""
    if cfg.get("model_type") in NON_GENERATIVE_VISION_TYPES:
        return False
    arch = [a for a in cfg.get("architectures") or [] if isinstance(a, str)]
    if arch and all(a.endswith(_NON_GENERATIVE_HEADS) for a in arch):
        return False
    return _has_vision_tower(cfg) or cfg.get("model_type") in VL_MODEL_TYPES


def _has_vision_tower(cfg: dict) -> bool:
    return any(cfg.get(k) not in (None, "", False) for k in _VISION_KEYS)  # {} too: a tower of default shape


def check_model_dir(path: str | os.PathLike, what: str = "model",
                    model_types: tuple[str, ...] | None = VL_MODEL_TYPES) -> Path:
    """Return ``path`` if it holds a checkpoint of ``model_types`` (default: Qwen2.5-VL or Qwen2-VL, what the
    trainers need; None: any vision-language checkpoint, what inference takes); else raise UniferError in one
    line. Reads config.json and the weights' headers only (no torch, no transformers)."""
    p = Path(path)
    if not p.exists():
        raise UniferError(f"{what} path not found: {p}")
    if not p.is_dir():
        raise UniferError(f"{what} path is not a directory: {p}")
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        raise UniferError(f"{what} directory has no config.json, so it is not a Hugging Face checkpoint: {p}")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UniferError(f"{what} config is unreadable ({e}): {cfg_file}") from None
    if not isinstance(cfg, dict):
        raise UniferError(f"{what} config is not a JSON object: {cfg_file}")
    mt = cfg.get("model_type")
    if model_types is not None and mt not in model_types:
        kind = "a text-only model" if "vision_config" not in cfg else "not a Qwen2.5-VL model"
        raise UniferError(
            f"{what} at {p} is {kind} (model_type {mt!r}); UniFER needs a Qwen2.5-VL (or Qwen2-VL) checkpoint"
        )
    if model_types is None:
        problem = _config_problem(cfg)
        if problem:
            raise UniferError(f"{what} config is broken (it {problem}): {cfg_file}")
        if not is_vision_language(cfg):
            kind = "a vision model that writes no text" if _has_vision_tower(cfg) else "a text-only model"
            raise UniferError(f"{what} at {p} is {kind} (model_type {mt!r}); FERBench needs a vision-language "
                              "checkpoint (an image and a question in, text out)")
        problem = _weights_problem(p)
        if problem:
            raise UniferError(f"{what} directory {problem}: {p}")
    elif not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise UniferError(f"{what} directory has a config but no weights (*.safetensors): {p}")
    return p
