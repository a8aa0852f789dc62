"""Record schemas and validating loaders for every data file the project reads.

- QA (FERBench):     {image_path, true_label, prompt, candidate_labels}
- CoT (SFT):         {image_path, question, response}
- RLVR (GRPO):       {image_path, problem, solution}   solution: "<answer>label</answer>" or a bare label
- results:           QA fields + model_response (+ "error": true on failed items)

Loaders validate the whole file up front — a missing or mistyped field raises DataError naming the file, the
record index and the field — and never decode images: training sets of 360K records load in seconds, and images
are opened lazily, per batch, through ``unifer.images.load_image`` (224×224, the paper's size).
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError
from .jsonio import read_records, require_fields

QA_SCHEMA = {"image_path": str, "true_label": str, "prompt": str, "candidate_labels": list}
COT_SCHEMA = {"image_path": str, "question": str, "response": str}
RLVR_SCHEMA = {"image_path": str, "problem": str, "solution": str}
RESULTS_SCHEMA = {**QA_SCHEMA, "model_response": str}

SCHEMAS = {"qa": QA_SCHEMA, "cot": COT_SCHEMA, "rlvr": RLVR_SCHEMA, "results": RESULTS_SCHEMA}
KIND_NAMES = {"qa": "FERBench QA file", "cot": "CoT (SFT) file", "rlvr": "RLVR (GRPO) file", "results": "results file"}

#: The paper's image root for training data (its scripts read every image from /dataset/).
PAPER_IMAGE_ROOT = "/dataset/"


def load_records(path: str | os.PathLike, kind: str, hint: str | None = None) -> list[dict]:
    """Read and validate a whole file of ``kind`` (qa | cot | rlvr | results)."""
    if kind not in SCHEMAS:
        raise ValueError(f"unknown record kind {kind!r}")
    records = read_records(path, what=KIND_NAMES[kind], hint=hint)
    require_fields(path, records, SCHEMAS[kind])
    for i, r in enumerate(records):
        if not r["image_path"].strip():
            raise DataError(path, "empty image path", index=i, field="image_path")
    if kind in ("qa", "results"):
        for i, r in enumerate(records):
            cands = r["candidate_labels"]
            if not cands or not all(isinstance(c, str) for c in cands):
                raise DataError(path, "expected a non-empty list of strings", index=i, field="candidate_labels")
            if r["true_label"] not in cands:
                raise DataError(
                    path, f"label {r['true_label']!r} is not one of the candidates {cands}", index=i, field="true_label"
                )
    return records


def load_cot(path: str | os.PathLike) -> list[dict]:
    return load_records(path, "cot")


def load_rlvr(path: str | os.PathLike) -> list[dict]:
    return load_records(path, "rlvr")


def load_qa(path: str | os.PathLike, hint: str | None = None) -> list[dict]:
    return load_records(path, "qa", hint=hint)


def image_file(image_root: str | os.PathLike, image_path: str) -> Path:
    """Where a record's image lives: the root joined with the record's path (a leading '/' does not reset it)."""
    from .images import join_image_path

    return join_image_path(image_root, image_path)
