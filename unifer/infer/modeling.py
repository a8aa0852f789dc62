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


#: dtypes flash-attention 2 has kernels for (it has none for float32).
FLASH_ATTN_DTYPES = ("bfloat16", "float16")


def pick_attn_implementation(requested: str | None = None, on_cuda: bool | None = None, *, dtype) -> str:
    """The attention a model computing in ``dtype`` gets: the one rule of inference and both trainers.

    ``auto`` → ``flash_attention_2`` on CUDA with flash-attn installed and ``dtype`` bfloat16 or float16; otherwise
    ``sdpa`` (so float32, the paper's exact setting, always gets sdpa). An explicit ``flash_attention_2`` that cannot
    run here (no CUDA, no flash-attn, or float32, for which flash-attn has no kernels) falls back to ``sdpa`` with
    one warning, so one command line runs on every machine. ``dtype``: a torch dtype or a name ``pick_dtype``
    accepts (``auto`` included); for training, the dtype the forward computes in (bf16/fp16 mixed precision,
    else the weights' dtype). Any other name (``sdpa``, ``eager``) is returned as is.
    """
    on_cuda = cuda_available() if on_cuda is None else on_cuda
    req = (requested or "auto").lower()
    if req not in ("auto", "flash_attention_2"):
        return req
    if isinstance(dtype, str):
        dtype = pick_dtype(dtype, on_cuda)
    dtype_name = str(dtype).replace("torch.", "")
    why = None
    if not on_cuda:
        why = "no CUDA device"
    elif not flash_attn_available():
        why = "flash-attn is not installed"
    elif dtype_name not in FLASH_ATTN_DTYPES:
        why = f"flash-attn has no {dtype_name} kernels"
    if why is None:
        return "flash_attention_2"
    if req == "flash_attention_2":
        log.warning("flash_attention_2 requested but %s: using sdpa attention instead", why)
    return "sdpa"


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
