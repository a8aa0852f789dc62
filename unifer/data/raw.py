"""The four datasets' raw layouts on disk, read into (image path, label) pairs without decoding a single image.

Layouts (under an image root; the image paths in every QA/RLVR record are relative to it, with a leading '/'):

- RAF-DB     ``RAF-DB/EmoLabel/list_patition_label.txt`` (the official name, misspelt): ``test_0001.jpg 5``,
             ids 1–7 = surprise, fear, disgust, happiness, sadness, anger, neutral;
             image ``RAF-DB/aligned/test_0001_aligned.jpg``. Splits: ``test``, ``train`` (line prefixes).
- FERPlus    ``FERPlus/<split>/<label>/<file>``, label = folder name. Splits: the folders (``test``, ``train`` …).
- AffectNet  official CSV (header with ``subDirectory_filePath`` and ``expression``; the official file without a
             header is read by column position), expressions 0–7 = neutral, happiness, sadness, surprise, fear,
             disgust, anger, contempt; 8–10 (none, uncertain, non-face) are dropped;
             image ``AffectNet/Manually_Annotated/<split>/<subDirectory_filePath>``.
             Splits: ``validation`` (``AffectNet/validation.csv``), ``train`` (``AffectNet/training.csv``).
- SFEW 2.0   ``SFEW-2.0/<Split>/<Split>_Aligned_Faces/<Class>/<file>``, label = folder name lower-cased.
             Splits: ``val``, ``train``.
- folder     any ``<dir>/<label>/<file>`` tree under the root (labels mapped into a set's vocabulary).

Every problem (missing folder or label file, a listed image not on disk, an unknown class or label id, a label
file line that does not parse, an empty split) raises DataError naming the path and, for label files, the line.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from unifer.data.sets import FERSet, get_set
from unifer.errors import DataError, UniferError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

RAFDB_LABEL_FILE = "RAF-DB/EmoLabel/list_patition_label.txt"
RAFDB_IDS = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")  # ids 1..7
AFFECTNET_EXPRESSIONS = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
AFFECTNET_DROPPED = (8, 9, 10)  # none, uncertain, non-face
AFFECTNET_CSV = {"validation": "validation.csv", "train": "training.csv"}
AFFECTNET_HEADERLESS_COLUMNS = (0, 6)  # official column order: subDirectory_filePath, …, expression (7th)

#: The dataset folders under the image root, and the split FERBench is built from.
DATASET_FOLDERS = {"rafdb": "RAF-DB", "ferplus": "FERPlus", "affectnet": "AffectNet", "sfew_2.0": "SFEW-2.0"}
BENCHMARK_SPLITS = {"rafdb": "test", "ferplus": "test", "affectnet": "validation", "sfew_2.0": "val"}
LAYOUTS = (*DATASET_FOLDERS, "folder")


@dataclass
class Scan:
    """What a layout holds: image path (relative to the root, leading '/') → label in the dataset's spelling."""

    labels: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, image_path: str, label: str, source, where: str) -> None:
        old = self.labels.get(image_path)
        if old is not None and old != label:
            raise DataError(source, f"{where}: {image_path} is labeled both {old!r} and {label!r}")
        if old is not None:
            self.notes.append(f"{source}: {where}: {image_path} is listed twice (same label; kept once)")
        self.labels[image_path] = label


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def normalise_split(dataset: str, split: str) -> str:
    """The layout's own split name; ``test`` means the split FERBench uses where a dataset calls it otherwise."""
    s = split.strip()
    if dataset == "affectnet" and s.lower() in ("test", "val", "valid", "validation"):
        return "validation"
    if dataset == "sfew_2.0" and s.lower() in ("test", "val", "valid", "validation"):
        return "val"
    return s


def scan_dataset(dataset: str, root: Path, split: str, affectnet_csv: Path | None = None,
                 folder: Path | None = None, vocabulary: FERSet | None = None) -> Scan:
    """Read one layout's split. ``folder`` and ``vocabulary`` are for the generic ``folder`` layout."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "image root is not a directory")
    split = normalise_split(dataset, split)
    if dataset == "rafdb":
        scan = scan_rafdb(root, split)
    elif dataset == "ferplus":
        scan = scan_class_folders(root, Path("FERPlus") / split, get_set("ferplus"))
    elif dataset == "affectnet":
        scan = scan_affectnet(root, split, affectnet_csv)
    elif dataset == "sfew_2.0":
        cap = split[:1].upper() + split[1:].lower()
        scan = scan_class_folders(root, Path("SFEW-2.0") / cap / f"{cap}_Aligned_Faces", get_set("sfew_2.0"))
    elif dataset == "folder":
        if folder is None or vocabulary is None:
            raise UniferError("the folder layout needs --folder DIR and --set KEY (whose labels the folders name)")
        folder = Path(folder).resolve()
        try:
            rel = folder.relative_to(root.resolve())
        except ValueError:
            raise DataError(folder, f"folder is not inside the image root {root}") from None
        scan = scan_class_folders(root, rel, vocabulary)
    else:
        raise UniferError(f"unknown dataset layout {dataset!r}; choose one of: {', '.join(LAYOUTS)}")
    return scan


def scan_rafdb(root: Path, split: str) -> Scan:
    label_file = root / RAFDB_LABEL_FILE
    if not label_file.is_file():
        raise DataError(label_file, "RAF-DB label file not found (the official name is list_patition_label.txt)")
    prefix = f"{split}_"
    scan = Scan()
    try:
        lines = label_file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(label_file, f"not UTF-8 text ({e})") from None
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(label_file, f"line {lineno}: expected '<image> <label id>', found {line.strip()!r}")
        name, label_id = parts
        if not name.startswith(prefix):
            continue
        if not label_id.isdigit() or not 1 <= int(label_id) <= len(RAFDB_IDS):
            raise DataError(label_file, f"line {lineno}: unknown label id {label_id!r} (expected 1–7)")
        stem = os.path.splitext(name)[0]
        scan.add(f"/RAF-DB/aligned/{stem}_aligned.jpg", RAFDB_IDS[int(label_id) - 1], label_file, f"line {lineno}")
    if not scan.labels:
        raise DataError(label_file, f"no {prefix}* lines: the {split!r} split is empty")
    _require_on_disk(root, scan, label_file)
    return scan


def scan_affectnet(root: Path, split: str, csv_path: Path | None = None) -> Scan:
    csv_path = Path(csv_path) if csv_path else root / "AffectNet" / AFFECTNET_CSV.get(split, f"{split}.csv")
    if not csv_path.is_file():
        raise DataError(csv_path, "AffectNet label CSV not found (pass --affectnet-csv to name it)")
    image_dir = f"/AffectNet/Manually_Annotated/{split}/"
    scan = Scan()
    dropped = 0
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None:
            raise DataError(csv_path, "the CSV is empty")
        names = [h.strip() for h in header]
        if "subDirectory_filePath" in names and "expression" in names:
            path_col, expr_col = names.index("subDirectory_filePath"), names.index("expression")
            first_line, pending = 2, []
        elif len(names) > AFFECTNET_HEADERLESS_COLUMNS[1] and names[AFFECTNET_HEADERLESS_COLUMNS[1]].isdigit():
            path_col, expr_col = AFFECTNET_HEADERLESS_COLUMNS  # the official validation.csv ships without one
            first_line, pending = 1, [header]
        else:
            raise DataError(csv_path, "expected a header with 'subDirectory_filePath' and 'expression' columns")
        for lineno, row in enumerate([*pending, *rows] if pending else rows, first_line):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) <= max(path_col, expr_col):
                raise DataError(csv_path, f"line {lineno}: expected at least {max(path_col, expr_col) + 1} columns")
            sub, expr = row[path_col].strip().lstrip("/"), row[expr_col].strip()
            if not expr.lstrip("-").isdigit():
                raise DataError(csv_path, f"line {lineno}: expression {expr!r} is not a number")
            code = int(expr)
            if code in AFFECTNET_DROPPED:
                dropped += 1
                continue
            if not 0 <= code < len(AFFECTNET_EXPRESSIONS):
                raise DataError(csv_path, f"line {lineno}: unknown expression {code} (expected 0–10)")
            if not sub:
                raise DataError(csv_path, f"line {lineno}: empty subDirectory_filePath")
            scan.add(image_dir + sub, AFFECTNET_EXPRESSIONS[code], csv_path, f"line {lineno}")
    if dropped:
        scan.notes.append(f"{csv_path}: dropped {dropped} rows with expression 8–10 (none, uncertain, non-face)")
    if not scan.labels:
        raise DataError(csv_path, "no rows with expression 0–7: the split is empty")
    _require_on_disk(root, scan, csv_path)
    return scan


def scan_class_folders(root: Path, rel: Path, vocabulary: FERSet) -> Scan:
    """``root/rel/<class>/<image>``: every image of every class folder; a class folder must name one of the
    set's labels (case-insensitively, or one of its synonyms for the generic layout)."""
    base = root / rel
    if not base.is_dir():
        raise DataError(base, "dataset folder not found")
    scan = Scan()
    prefix = "/" + rel.as_posix().strip("/") + "/"
    stray = 0
    for entry in sorted(os.scandir(base), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            stray += 1
            continue
        label = to_set_label(entry.name, vocabulary)
        if label is None:
            raise DataError(entry.path, f"unknown class folder {entry.name!r}; {vocabulary.name} labels are: "
                                        f"{', '.join(vocabulary.labels)}")
        ignored = 0
        for f in os.scandir(entry.path):
            if is_image_name(f.name) and f.is_file():
                scan.labels[f"{prefix}{entry.name}/{f.name}"] = label
            elif not f.name.startswith("."):
                ignored += 1
        if ignored:
            scan.notes.append(f"{entry.path}: ignored {ignored} entries that are not image files")
    if stray:
        scan.notes.append(f"{base}: ignored {stray} files outside the class folders")
    if not scan.labels:
        raise DataError(base, "no images found in the class folders")
    return scan


def to_set_label(name: str, vocabulary: FERSet) -> str | None:
    """A label as spelt by a folder or another dataset → the set's own label (exact, case-insensitive, then
    the set's synonyms: 'Happy' → 'happiness' for RAF-DB); None when the set has no such label."""
    n = name.strip().lower()
    if n in vocabulary.labels:
        return n
    for label, alternatives in vocabulary.synonyms:
        if n in alternatives:
            return label
    return None


def _require_on_disk(root: Path, scan: Scan, label_file: Path) -> None:
    missing = [p for p in scan.labels if not (root / p.lstrip("/")).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(label_file, f"names images that are not on disk: {root / missing[0].lstrip('/')}{more}")
