"""Thumbnails of the faces, copied into the report folder (the page opens offline, so it cannot point elsewhere).

Images are read with the loader inference uses (``unifer.data.images.open_image``: EXIF orientation, odd modes to
RGB), shrunk to fit ``size`` pixels (never enlarged: FERPlus' 48×48 faces stay 48×48) and saved as JPEG. An image
that is missing or cannot be decoded gets no thumbnail; the page shows a placeholder in its place.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from unifer.data.images import ImageLoadError, join_image_path, open_image

DEFAULT_SIZE = 96
JPEG_QUALITY = 75


def write_thumbnail(source: Path, target: Path, size: int) -> bool:
    """``source`` shrunk into ``target`` (JPEG); False when the image is missing or unreadable."""
    try:
        img = open_image(source)
    except ImageLoadError:
        return False
    img.thumbnail((size, size))
    try:
        img.save(target, "JPEG", quality=JPEG_QUALITY, optimize=True)
    except OSError:
        return False
    return True


def write_thumbnails(image_paths: list[str], image_root: str | os.PathLike, folder: Path, size: int,
                     workers: int | None = None) -> list[str | None]:
    """One thumbnail per distinct image path, named by position: ``folder/00000.jpg`` …; for each path the file
    name relative to the report folder's ``thumbs/``, or None (placeholder)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [join_image_path(image_root, p) for p in image_paths]
    names: list[str | None] = [None] * len(sources)
    jobs = [i for i, src in enumerate(sources) if src.is_file()]

    def one(i: int) -> None:
        name = f"{i:05d}.jpg"
        if write_thumbnail(sources[i], folder / name, size):
            names[i] = name

    if jobs:
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(one, jobs))
    return names
