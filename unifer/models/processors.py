"""The one processor loader of inference, both trainers and the benchmarks.

transformers 5 picks an image processor's torchvision backend by default; the paper ran transformers 4.49, whose
Qwen2-VL image processor worked in numpy on PIL images. The two differ in about 70% of the pixel values of a
224×224 photo, each by one float32 rounding step. ``exact=True`` loads the PIL backend, whose pixel values equal
the paper's bit for bit: SFT and GRPO always train on it, and inference uses it wherever the paper's exact setting
is promised (float32; see ``exact_preprocessing``). Elsewhere (bfloat16 on a GPU) the faster torchvision backend
stays, since bfloat16 rounds both to the same values far more often than not and differences there are noise.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

#: The image-processor backend whose preprocessing is the paper's (transformers 4.49's numpy/PIL processors).
EXACT_BACKEND = "pil"


def exact_preprocessing(dtype) -> bool:
    """Whether inference computing in ``dtype`` (a torch dtype or its name) promises the paper's exact
    preprocessing: float32, the setting that reproduces the paper's loop bit for bit."""
    return str(dtype).replace("torch.", "") in ("float32", "fp32")


def load_processor(model_dir: str | os.PathLike, *, revision: str | None = None, trust_remote_code: bool = False,
                   exact: bool = False):
    """``AutoProcessor`` of ``model_dir``; ``exact``: with the PIL image processor (the paper's preprocessing)."""
    from transformers import AutoImageProcessor, AutoProcessor

    kwargs: dict = {"revision": revision} if revision else {}
    if trust_remote_code:  # only when the user passed the flag
        kwargs["trust_remote_code"] = True
    processor = AutoProcessor.from_pretrained(str(model_dir), **kwargs)
    if exact and hasattr(processor, "image_processor"):
        try:  # set as an attribute, not passed to from_pretrained: that would land in the saved processor config
            processor.image_processor = AutoImageProcessor.from_pretrained(str(model_dir), backend=EXACT_BACKEND,
                                                                           **kwargs)
        except (OSError, ValueError, ImportError) as e:  # a family without an image processor of its own
            log.warning("no %s image processor for %s (%s): using the processor's default", EXACT_BACKEND,
                        model_dir, e)
    return processor
