"""The one image loader used by SFT, GRPO and inference: decode, normalise the mode, resize to 224×224.

The paper resizes every image to 224×224 through qwen-vl-utils (``resized_height``/``resized_width``), which
rounds to a multiple of 28 (224 already is), converts RGBA onto white, everything else with ``convert("RGB")``,
and resizes with Pillow's default (bicubic). We do the same without importing qwen-vl-utils (which imports
torchvision), plus two corrections for inputs the paper's path mishandles, both no-ops on ordinary 8-bit RGB
photos: EXIF orientation is applied, and 16/32-bit grayscale is scaled to 8 bits instead of being clipped.
"""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageOps

IMAGE_SIZE = 224
PATCH_FACTOR = 28  # Qwen2.5-VL: 14-pixel patches, 2×2 merge

# Pillow raises DecompressionBombError above twice this many pixels; keep its default and report it cleanly.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS


class ImageLoadError(Exception):
    """An image that cannot be used: missing, empty, truncated, not an image, or absurdly large."""


def round_to_factor(n: int, factor: int = PATCH_FACTOR) -> int:
    return max(factor, round(n / factor) * factor)


def target_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """(width, height) after qwen-vl-utils' rounding of ``resized_width``/``resized_height``."""
    if size is None:
        return None
    w, h = (size, size) if isinstance(size, int) else size
    return round_to_factor(w), round_to_factor(h)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB (RGBA and LA/PA onto white, as qwen-vl-utils does for RGBA)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np

        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(((a - lo) * scale).round().astype("uint8"), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "PA"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.split()[3])
        return background
    return img.convert("RGB")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` fully into an RGB image, or raise ImageLoadError with a one-line reason."""
    p = Path(path)
    try:
        if not p.is_file():
            raise ImageLoadError(f"image not found: {p}")
        if p.stat().st_size == 0:
            raise ImageLoadError(f"image file is empty (0 bytes): {p}")
        with Image.open(p) as im:
            im.load()
            im = ImageOps.exif_transpose(im) or im
            return to_rgb(im)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"image too large to decode safely ({e}): {p}") from None
    except (OSError, SyntaxError, ValueError) as e:
        # Pillow: UnidentifiedImageError (not an image), "image file is truncated", broken chunks ...
        reason = str(e).replace(f"'{p}'", "").replace(str(p), "").strip() or type(e).__name__
        raise ImageLoadError(f"cannot decode image {p}: {reason}") from None


def resize(img: Image.Image, size: int | tuple[int, int] | None = IMAGE_SIZE) -> Image.Image:
    wh = target_size(size)
    if wh is None or img.size == wh:
        return img
    return img.resize(wh, Image.Resampling.BICUBIC)


def load_image(path: str | os.PathLike, size: int | tuple[int, int] | None = IMAGE_SIZE) -> Image.Image:
    """Open, normalise to RGB and resize (224×224 by default; None keeps the native size)."""
    return resize(open_image(path), size)


def join_image_path(image_root: str | os.PathLike, image_path: str) -> Path:
    """``image_root`` + a record's ``image_path``. The FERBench paths begin with '/', and the paper joins them
    by string concatenation (``/dataset`` + ``/RAF-DB/...``); a leading '/' therefore never discards the root."""
    rel = str(image_path).lstrip("/")
    return Path(image_root) / rel


def verify_image(path: str | os.PathLike) -> str | None:
    """None when ``path`` decodes; else the reason (used by the ``check`` commands)."""
    try:
        open_image(path)
        return None
    except ImageLoadError as e:
        return str(e)

