"""What the engines need to know about a model family, read from ``config.json`` (nothing heavy imported).

A family is a checkpoint's ``model_type``. Most families need nothing special: the processor's chat template, the
processor's own image handling, batches left-padded. The table lists only what differs; an unknown family gets the
defaults (and a remote-code checkpoint, one with ``auto_map``, is answered one item at a time, since its processor
may not batch).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Family:
    model_type: str
    #: vLLM: send the hf processor's rendered prompt string (``LLM.generate``) instead of ``LLM.chat``. Exact for
    #: Qwen2-VL/2.5-VL (the path every earlier answer of this repository came from, kept so none changes).
    vllm_prompt_string: bool = False
    #: The image processor takes ``max_pixels`` (Qwen-VL families): vLLM's start-up profiling is capped to it.
    max_pixels_kwarg: bool = False
    #: transformers: one generate call may hold several items (left-padded).
    hf_batches: bool = True


FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("qwen2_vl", vllm_prompt_string=True, max_pixels_kwarg=True),
    Family("qwen2_5_vl", vllm_prompt_string=True, max_pixels_kwarg=True),
    Family("qwen3_vl"),
    Family("qwen3_vl_moe"),
    Family("llava_onevision"),
    Family("internvl"),
    Family("gemma3"),
    Family("minicpmv", hf_batches=False),  # remote code; its processor takes one conversation per call
)}


def read_config(model_dir: str | os.PathLike) -> dict:
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def family_of(model_dir: str | os.PathLike) -> Family:
    cfg = read_config(model_dir)
    model_type = str(cfg.get("model_type") or "unknown")
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    return Family(model_type, hf_batches="auto_map" not in cfg)


def max_positions(model_dir: str | os.PathLike) -> int | None:
    """The language model's position limit (``max_position_embeddings``, top level or in ``text_config``)."""
    cfg = read_config(model_dir)
    for section in (cfg.get("text_config") or {}, cfg, cfg.get("llm_config") or {}):
        value = section.get("max_position_embeddings") if isinstance(section, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return None
