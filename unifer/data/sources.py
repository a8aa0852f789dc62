"""Labelled faces from anywhere, as FERBench-shaped QA records ``{image_path, true_label, prompt, candidate_labels}``.

    unifer data records SOURCE --image-root R (--set KEY | --labels a,b,c) --out FILE
    unifer distill --records SOURCE --image-root R [--set KEY | --labels a,b,c] ...

A source is one of:

- a QA file (JSON array or JSON Lines of QA records, e.g. ``unifer ferbench build --split train``): taken as is;
- an RLVR file (``{image_path, problem, solution}``, e.g. UniFER-RLVR-360K): each record asks its problem, the
  label its solution's ``<answer>`` names, among the candidates the problem lists;
- a labelled folder inside the image root, ``DIR/<CLASS>/<IMAGE>``: the class folder names the label;
- a CSV (``image_path,label``; a header naming those two columns, or none) or a JSON / JSON Lines file of
  ``{"image_path": ..., "label": ...}`` rows: the path relative to the image root (a leading '/' as the paper's
  files write it, added when missing).

The label vocabulary comes from ``--set`` (a FERBench set: its labels, synonyms and prompt) or ``--labels`` (a
comma-separated list: the FERBench prompt written with those candidates). A label is matched exactly, then
case-insensitively, then through the set's synonyms. Every bad row (an unknown label, a missing image, a row
without two fields, a duplicate image with another label) is ONE line ``FILE: line N: reason``; a source with
bad rows is refused after all of them are listed, unless ``skip_bad`` keeps the good ones.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from unifer.data.raw import is_image_name, to_set_label
from unifer.data.records import QA_SCHEMA, RLVR_SCHEMA, prompt_candidates, solution_label, validate_records
from unifer.data.sets import PROMPT_TEMPLATE, FERSet, get_set
from unifer.errors import DataError, UniferError


@dataclass
class Loaded:
    """A source's records, and one line per bad row (kept out of ``records``)."""

    records: list[dict] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def vocabulary_for(set_key: str | None = None, labels: str | list | None = None) -> FERSet | None:
    """``--set KEY`` → that set; ``--labels a,b,c`` → an ad-hoc set with those candidates and the FERBench prompt."""
    if set_key and labels:
        raise UniferError("give --set or --labels, not both")
    if set_key:
        try:
            return get_set(set_key)
        except ValueError as e:
            raise UniferError(str(e)) from None
    if labels:
        names = [x.strip() for x in (labels.split(",") if isinstance(labels, str) else labels) if x.strip()]
        if len(names) < 2 or len(set(names)) != len(names):
            raise UniferError(f"--labels needs at least two distinct labels, got {labels!r}")
        return FERSet(key="custom", name="custom labels", labels=tuple(names), synonyms=())
    return None


def qa_record(vocab: FERSet, image_path: str, label: str) -> dict:
    return {"image_path": image_path, "true_label": label,
            "prompt": PROMPT_TEMPLATE.format(labels=", ".join(vocab.labels)), "candidate_labels": list(vocab.labels)}


def _rooted(path: str) -> str:
    return "/" + path.strip().lstrip("/")


class _Rows:
    """Collects (image path, label) rows into QA records, one line per bad row."""

    def __init__(self, source: Path, image_root: Path, vocab: FERSet):
        self.source, self.root, self.vocab = source, image_root, vocab
        self.out = Loaded()
        self.seen: dict[str, tuple[str, str]] = {}  # image path → (label, where)

    def add(self, where: str, image_path, label) -> None:
        if not isinstance(image_path, str) or not image_path.strip():
            return self.bad(where, "empty or missing image_path")
        if not isinstance(label, str) or not label.strip():
            return self.bad(where, f"empty or missing label for {image_path}")
        mapped = to_set_label(label, self.vocab) if label.strip() not in self.vocab.labels else label.strip()
        if mapped is None:
            return self.bad(where, f"unknown label {label!r} (the labels are: {', '.join(self.vocab.labels)})")
        path = _rooted(image_path)
        if not (self.root / path.lstrip("/")).is_file():
            return self.bad(where, f"image not found: {self.root / path.lstrip('/')}")
        if path in self.seen:
            old, old_where = self.seen[path]
            if old != mapped:
                return self.bad(where, f"{path} is labelled {mapped!r} here and {old!r} at {old_where}")
            self.out.notes.append(f"{self.source}: {where}: {path} is listed twice (kept once)")
            return None
        self.seen[path] = (mapped, where)
        self.out.records.append(qa_record(self.vocab, path, mapped))
        return None

    def bad(self, where: str, reason: str) -> None:
        self.out.bad.append(f"{self.source}: {where}: {reason}")


def load_source(source, image_root, vocab: FERSet | None = None) -> Loaded:
    """QA records from ``source`` (a QA file, a labelled folder, a CSV or JSON(L) of image_path,label)."""
    source, root = Path(source), Path(image_root)
    if not root.is_dir():
        raise DataError(root, "image root is not a directory")
    if not source.exists():
        raise DataError(source, "no such file or folder")
    if source.is_dir():
        return _load_folder(source, root, _need(vocab, source))
    if source.suffix.lower() == ".csv":
        return _load_csv(source, root, _need(vocab, source))
    rows = _read_json_rows(source)
    if rows and all(isinstance(r, dict) and set(QA_SCHEMA) <= set(r) for _, r in rows):
        return _load_qa(source, rows, root)
    if rows and all(isinstance(r, dict) and set(RLVR_SCHEMA) <= set(r) for _, r in rows):
        return _load_qa(source, [(w, _rlvr_as_qa(r)) for w, r in rows], root)
    rows_out = _Rows(source, root, _need(vocab, source))
    for n, r in rows:
        if not isinstance(r, dict):
            rows_out.bad(n, str(r) if isinstance(r, Broken) else "not a JSON object")
        else:
            rows_out.add(n, r.get("image_path"), r.get("label", r.get("true_label")))
    return rows_out.out


def _need(vocab: FERSet | None, source: Path) -> FERSet:
    if vocab is None:
        raise UniferError(f"{source}: name the labels with --set KEY (a FERBench set) or --labels a,b,c")
    return vocab


def _load_folder(folder: Path, root: Path, vocab: FERSet) -> Loaded:
    try:
        rel = folder.resolve().relative_to(root.resolve())
    except ValueError:
        raise DataError(folder, f"the labelled folder is not inside the image root {root}") from None
    rows = _Rows(folder, root, vocab)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        for f in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if is_image_name(f.name) and f.is_file():
                rows.add(f"{entry.name}/{f.name}", f"{rel.as_posix()}/{entry.name}/{f.name}", entry.name)
    if not rows.out.records and not rows.out.bad:
        raise DataError(folder, "no CLASS/IMAGE files found")
    return rows.out


def _load_csv(path: Path, root: Path, vocab: FERSet) -> Loaded:
    rows = _Rows(path, root, vocab)
    with open(path, newline="", encoding="utf-8-sig") as f:
        lines = list(csv.reader(f))
    start, cols = 1, (0, 1)
    if lines and "image_path" in [c.strip() for c in lines[0]]:
        head = [c.strip() for c in lines[0]]
        if "label" not in head:
            raise DataError(path, "line 1: the header names image_path but no label column")
        start, cols = 2, (head.index("image_path"), head.index("label"))
    for lineno, row in enumerate(lines[start - 1:], start):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) <= max(cols):
            rows.bad(f"line {lineno}", f"expected image_path,label, found {','.join(row)!r}")
            continue
        rows.add(f"line {lineno}", row[cols[0]].strip(), row[cols[1]].strip())
    return rows.out


def _read_json_rows(path: Path) -> list[tuple[str, object]]:
    """(where, object) per record of a JSON array or JSON Lines file; a broken line is refused with its number."""
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise DataError(path, f"not valid JSON ({e})") from None
        return [(f"record {i}", r) for i, r in enumerate(data)]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((f"line {n}", json.loads(line)))
        except ValueError as e:
            out.append((f"line {n}", Broken(f"not JSON ({e})")))
    return out


class Broken(str):
    """A JSON Lines line that does not parse (its reason)."""


def _rlvr_as_qa(r: dict) -> dict:
    """An RLVR record as the QA record it asks: its problem, its solution's label, the problem's candidates."""
    label = solution_label(r["solution"]) if isinstance(r["solution"], str) else r["solution"]
    cands = prompt_candidates(r["problem"]) if isinstance(r["problem"], str) else None
    return {"image_path": r["image_path"], "true_label": label, "prompt": r["problem"],
            "candidate_labels": list(cands) if cands else [label]}


def _load_qa(path: Path, rows: list[tuple[str, object]], root: Path) -> Loaded:
    records = [r for _, r in rows]
    out = Loaded()
    errors = {}
    for p in validate_records(records, "qa"):
        if p.severity == "error" and p.index is not None:
            errors.setdefault(p.index, p)
    for i, (where, r) in enumerate(rows):
        if i in errors:
            out.bad.append(f"{path}: {where}: {errors[i].message}")
        elif not (root / r["image_path"].lstrip("/")).is_file():
            out.bad.append(f"{path}: {where}: image not found: {root / r['image_path'].lstrip('/')}")
        else:
            out.records.append(r)
    return out


def load_or_refuse(source, image_root, vocab: FERSet | None = None, skip_bad: bool = False,
                   max_listed: int = 50, echo=print) -> list[dict]:
    """``load_source``, every bad row printed as one line; refused (UniferError) when any is bad, unless
    ``skip_bad``; refused when nothing is left."""
    loaded = load_source(source, image_root, vocab)
    for line in loaded.bad[:max_listed]:
        echo(f"bad row: {line}")
    if len(loaded.bad) > max_listed:
        echo(f"bad row: … and {len(loaded.bad) - max_listed} more")
    for note in loaded.notes[:10]:
        echo(f"note: {note}")
    if loaded.bad and not skip_bad:
        raise UniferError(f"{source}: {len(loaded.bad)} bad rows (listed above; the first: {loaded.bad[0]}); fix "
                          "them, or pass --skip-bad-rows to keep the good ones")
    if not loaded.records:
        raise UniferError(f"{source}: no usable records")
    return loaded.records
