"""Everything checked before training starts, once per run: the checkpoint, every record of the data file, every
image (decoded, or at least present), and the hand-over of the checked records to the training processes.

The launcher (``unifer.train.launch``, behind the shell scripts) runs the pre-flight once per node and writes the
checked records as a memory-mapped Arrow dataset into a temporary directory, named in ``UNIFER_PREFLIGHT_CACHE``
for the torchrun workers. A worker whose ``--dataset_name`` / ``--image_root`` / record kind are those the cache
was made from (same file, same size and modification time) opens the cache instead of reading and checking the
file again, so 8 ranks neither parse 230K records eight more times nor stat every image eight more times, and they
share one copy of the records through the page cache. Anything else (``python -m unifer.train.sft`` started by
hand, a ``--dataset_name`` flag that overrides DATA_PATH, a file edited since) reads and checks the file itself.

``unifer train preflight --kind cot|rlvr --model M --data D --image_root R [--images decode|exist]`` runs
the pre-flight alone (no torch: it answers in seconds).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from unifer.data.images import ImageLoadError, join_image_path, load_image
from unifer.errors import DataError, UniferError
from unifer.models.checkpoints import check_model_dir

log = logging.getLogger(__name__)

#: Column added to every training dataset row: the record's position in the data file, for error messages.
RECORD_INDEX = "record_index"
#: Environment variable naming the launcher's cache of checked records (set for the torchrun workers).
PREFLIGHT_CACHE_ENV = "UNIFER_PREFLIGHT_CACHE"
FIELDS = {"cot": ("image_path", "question", "response"), "rlvr": ("image_path", "problem", "solution")}
MANIFEST = "manifest.json"


# --------------------------------------------------------------------------------------------------- checks
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


def preflight(kind: str, model: str | os.PathLike, data: str | os.PathLike, image_root: str | os.PathLike,
              images: str = "decode", progress: bool | None = None) -> list[dict]:
    """The whole pre-flight; prints one ``pre-flight ok`` line and returns the checked records."""
    records = check_training_inputs(model, data, kind, image_root)
    if images == "decode":
        rate = check_images_decode(records, image_root, data,
                                   progress=sys.stderr.isatty() if progress is None else progress)
        checked = f"every image decodes ({rate:.0f} img/s)"
    else:
        checked = "every image present"
    print(f"pre-flight ok: {len(records)} {kind} records, {checked} under {image_root}", flush=True)
    return records


# ------------------------------------------------------------------------------------- checked-records cache
def _fingerprint(kind: str, data: str | os.PathLike, image_root: str | os.PathLike) -> dict:
    st = os.stat(data)
    return {"kind": kind, "data": os.path.realpath(data), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "image_root": os.path.realpath(image_root)}


def records_dataset(records: Sequence[dict], fields: Sequence[str]):
    """A ``datasets.Dataset`` of ``fields`` + ``record_index`` (no images)."""
    from datasets import Dataset

    columns = {f: [r[f] for r in records] for f in fields}
    columns[RECORD_INDEX] = list(range(len(records)))
    return Dataset.from_dict(columns)


def write_cache(cache_dir: str | os.PathLike, records: Sequence[dict], kind: str, data: str | os.PathLike,
                image_root: str | os.PathLike) -> Path:
    """Save the checked records for the workers (see the module doc); returns ``cache_dir``."""
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar

    out = Path(cache_dir)
    disable_progress_bar()  # a bar for a cache of a few seconds is noise in the run's log
    try:
        records_dataset(records, FIELDS[kind]).save_to_disk(str(out / "records"))
    finally:
        enable_progress_bar()
    manifest = {**_fingerprint(kind, data, image_root), "records": len(records)}
    (out / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return out


def read_cache(kind: str, data: str | os.PathLike, image_root: str | os.PathLike, environ=os.environ):
    """The launcher's checked records as a Dataset when ``UNIFER_PREFLIGHT_CACHE`` holds them for exactly this
    file, kind and image root; else None."""
    cache = environ.get(PREFLIGHT_CACHE_ENV)
    if not cache:
        return None
    try:
        manifest = json.loads((Path(cache) / MANIFEST).read_text(encoding="utf-8"))
        if {k: manifest.get(k) for k in ("kind", "data", "size", "mtime_ns", "image_root")} \
                != _fingerprint(kind, data, image_root):
            return None
    except (OSError, ValueError):
        return None
    from datasets import Dataset

    return Dataset.load_from_disk(str(Path(cache) / "records"))


def training_records(model: str | os.PathLike, data: str | os.PathLike, kind: str, image_root: str | os.PathLike):
    """What a trainer trains on: the checked records as a Dataset (``FIELDS[kind]`` + ``record_index``), from the
    launcher's cache when it has them (see the module doc), else read and checked here."""
    check_model_dir(model)
    cached = read_cache(kind, data, image_root)
    if cached is not None:
        log.info("%d %s records from the launcher's pre-flight (%s), not read again", len(cached), kind, data)
        return cached
    return records_dataset(check_training_inputs(model, data, kind, image_root), FIELDS[kind])


def with_lazy_images(dataset, image_root: str | os.PathLike, data_path: str | os.PathLike,
                     image_column: str = "image", image_field: str = "image_path", extra=None):
    """``dataset`` whose rows, when read, also carry ``image_column``: the decoded 224×224 RGB image (PIL), and the
    columns ``extra(batch)`` returns. A file that fails to decode raises DataError naming the record."""
    root = Path(image_root)

    def add_images(batch: dict) -> dict:
        images = []
        for index, image_path in zip(batch[RECORD_INDEX], batch[image_field]):
            try:
                images.append(load_image(join_image_path(root, image_path)))
            except ImageLoadError as e:
                raise DataError(data_path, str(e), index=index, field=image_field) from None
        return {**batch, **(extra(batch) if extra else {}), image_column: images}

    return dataset.with_transform(add_images)


# -------------------------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", required=True, choices=("cot", "rlvr"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--image_root", required=True)
    parser.add_argument("--images", choices=("decode", "exist"), default="decode",
                        help="decode every image (default: a broken one stops the run now, not hours into "
                             "training) or only check that each exists (faster, e.g. when resuming)")


def run(args: argparse.Namespace) -> int:
    preflight(args.kind, args.model, args.data, args.image_root, args.images)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Pre-flight alone: ``unifer train preflight --kind cot --model M --data D --image_root R``."""
    parser = argparse.ArgumentParser(prog="unifer train preflight", description=main.__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
