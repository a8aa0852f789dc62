"""Loading Qwen2.5-VL checkpoints: checks that fail before anything heavy loads, device/dtype/attention choice.

Shared by inference and both trainers. torch and transformers are imported lazily, so ``check_model_dir`` is
cheap enough for argument validation.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

from unifer.errors import UniferError

log = logging.getLogger(__name__)

#: Checkpoints the pipeline accepts (Qwen2.5-VL; Qwen2-VL shares the processor and chat format).
VL_MODEL_TYPES = ("qwen2_5_vl", "qwen2_vl")


def check_model_dir(path: str | os.PathLike, what: str = "model") -> Path:
    """Return ``path`` if it holds a Qwen2.5-VL (or Qwen2-VL) checkpoint; else raise UniferError in one line."""
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
    mt = cfg.get("model_type") if isinstance(cfg, dict) else None
    if mt not in VL_MODEL_TYPES:
        kind = "a text-only model" if isinstance(cfg, dict) and "vision_config" not in cfg else "not a Qwen2.5-VL model"
        raise UniferError(
            f"{what} at {p} is {kind} (model_type {mt!r}); UniFER needs a Qwen2.5-VL (or Qwen2-VL) checkpoint"
        )
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise UniferError(f"{what} directory has a config but no weights (*.safetensors): {p}")
    return p


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pick_attn_implementation(requested: str | None = None, on_cuda: bool | None = None) -> str:
    """``flash_attention_2`` where asked for (or ``auto``) and usable; otherwise ``sdpa``, with one warning when
    flash attention was asked for explicitly but cannot run here."""
    on_cuda = cuda_available() if on_cuda is None else on_cuda
    req = (requested or "auto").lower()
    if req in ("auto", "flash_attention_2"):
        if on_cuda and flash_attn_available():
            return "flash_attention_2"
        if req == "flash_attention_2":
            why = "no CUDA device" if not on_cuda else "flash-attn is not installed"
            log.warning("flash_attention_2 requested but %s: using sdpa attention instead", why)
        return "sdpa"
    return req


def pick_dtype(name: str | None = "auto", on_cuda: bool | None = None):
    """``auto`` → bfloat16 on CUDA, float32 on CPU; else the named torch dtype."""
    import torch

    on_cuda = cuda_available() if on_cuda is None else on_cuda
    name = (name or "auto").lower()
    if name == "auto":
        return torch.bfloat16 if on_cuda else torch.float32
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
             "float32": torch.float32, "fp32": torch.float32}
    if name not in table:
        raise UniferError(f"unknown dtype {name!r}; choose one of: auto, bfloat16, float16, float32")
    return table[name]
