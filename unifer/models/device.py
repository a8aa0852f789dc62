"""Device, dtype and attention: the one rule inference and both trainers follow.

torch is imported lazily (only ``pick_dtype`` needs it), so these are cheap enough for argument validation.
"""
from __future__ import annotations

import importlib.util
import logging

from unifer.errors import UniferError

log = logging.getLogger(__name__)


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
