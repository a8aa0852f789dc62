"""FERPlus' ten raters: how a model's answers sit against the crowd, not just against the majority label.

Microsoft's FERPlus ``label.csv`` (``data/FER2013Test/label.csv`` of the microsoft/FERPlus repository, MIT licence;
never shipped here, ``--ferplus-votes FILE``) gives each test face ten crowd votes, one row per face:
``name, "(x, y, w, h)", neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF``.
FERBench's FERPlus items are exactly those faces, matched by file name, and each FERBench label is the face's
majority vote. Over the scored (non-error) items:

- ``soft_accuracy``: the share of raters who chose the model's answer, averaged over faces (an ``unknown``
  answer scores 0);
- ``agreed``: faces whose top label got at least 8 of the 10 votes, and the model's accuracy on them;
  ``ambiguous``: at most 5 votes for the top label, and the accuracy there;
- ``errors_raters_chose``: of the model's errors (answer ≠ the FERBench label), how many answers at least two
  raters also chose.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from unifer.data.sets import get_set
from unifer.errors import DataError, UniferError
from unifer.scoring.extract import extractor_for

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown",
                "NF")
#: FERBench's FERPlus label → the vote column.
FERPLUS_TO_VOTE = {"angry": "anger", "happy": "happiness", "sad": "sadness"}
AGREED_MIN, AMBIGUOUS_MAX, ALSO_CHOSEN_MIN = 8, 5, 2


def read_votes(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """File name → its ten vote counts (in ``VOTE_COLUMNS`` order). A bad row raises one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise UniferError(f"{path}: no such FERPlus votes file (FERPlus' data/FER2013Test/label.csv)")
    votes: dict[str, np.ndarray] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or (i == 0 and row[0].strip().lower() in ("image name", "name", "image")):
                continue
            if len(row) != 2 + len(VOTE_COLUMNS):
                raise DataError(path, f"expected name, box and {len(VOTE_COLUMNS)} vote counts, found {len(row)} "
                                      "columns (is this FERPlus' label.csv?)", index=i)
            try:
                counts = np.array([int(x) for x in row[2:]], dtype=np.int64)
            except ValueError:
                raise DataError(path, f"vote counts must be integers, found {row[2:]}", index=i) from None
            votes[row[0].strip()] = counts
    if not votes:
        raise UniferError(f"{path}: no votes in the file (FERPlus' data/FER2013Test/label.csv)")
    return votes


def vote_index(label: str) -> int:
    return VOTE_COLUMNS.index(FERPLUS_TO_VOTE.get(label, label))


def votes_metrics(records: list[dict], votes: dict[str, np.ndarray], path: Path, protocol: str = "paper") -> dict:
    """The raters' metrics of FERPlus results ``records`` (module docstring)."""
    extract = extractor_for("ferplus", protocol)
    labels = get_set("ferplus").labels
    soft, agreed, ambiguous = [], [], []
    errors = errors_chosen = 0
    for i, r in enumerate(records):
        if r.get("error"):
            continue
        image = r.get("image_path")
        name = os.path.basename(image) if isinstance(image, str) else None
        v = votes.get(name) if name else None
        if v is None:
            raise DataError(path, f"no votes for FERPlus image {image!r} (results record {i}); is this FERPlus' "
                                  "test label.csv?")
        pred = extract(r["model_response"])
        total = v.sum()
        chosen = int(v[vote_index(pred)]) if pred in labels else 0
        hit = pred == r["true_label"]
        soft.append(chosen / total if total else 0.0)
        top = int(v[:8].max())
        if top >= AGREED_MIN:
            agreed.append(hit)
        elif top <= AMBIGUOUS_MAX:
            ambiguous.append(hit)
        if not hit:
            errors += 1
            errors_chosen += chosen >= ALSO_CHOSEN_MIN

    def share(xs):
        return {"items": len(xs), "accuracy": (sum(xs) / len(xs)) if xs else None}

    return {"soft_accuracy": float(np.mean(soft)) if soft else None, "items": len(soft),
            "agreed": {**share(agreed), "min_votes": AGREED_MIN},
            "ambiguous": {**share(ambiguous), "max_votes": AMBIGUOUS_MAX},
            "errors": errors, "errors_raters_chose": errors_chosen,
            "errors_raters_chose_share": errors_chosen / errors if errors else None,
            "votes_file": str(path), "protocol": protocol}


def add_votes(report: dict, records_by_set: dict[str, list[dict]], path: str | os.PathLike,
              protocol: str = "paper") -> dict:
    """``report["ferplus_votes"]`` from the FERPlus records among ``records_by_set`` (set key → records)."""
    if "ferplus" not in records_by_set:
        raise UniferError("--ferplus-votes needs FERPlus results (score FERPlus or the total)")
    path = Path(path)
    report["ferplus_votes"] = votes_metrics(records_by_set["ferplus"], read_votes(path), path, protocol)
    return report


def format_votes(v: dict) -> str:
    """Three console lines of the raters' metrics."""
    def pct(x):
        return "–" if x is None else f"{100 * x:.2f}%"

    return "\n".join([
        f"FERPlus raters ({v['items']} faces): soft accuracy {pct(v['soft_accuracy'])}",
        f"  agreed faces (≥ {v['agreed']['min_votes']}/10 votes for the top label): {v['agreed']['items']}, "
        f"accuracy {pct(v['agreed']['accuracy'])}; ambiguous (≤ {v['ambiguous']['max_votes']}/10): "
        f"{v['ambiguous']['items']}, accuracy {pct(v['ambiguous']['accuracy'])}",
        f"  errors at least {ALSO_CHOSEN_MIN} raters also chose: {v['errors_raters_chose']} of {v['errors']} "
        f"({pct(v['errors_raters_chose_share'])})",
    ])
