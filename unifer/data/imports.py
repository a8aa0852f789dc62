"""Other tools' FERBench runs as this repository's results: lmms-eval ``--log_samples`` files, VLMEvalKit predictions.

A sample is matched to its FERBench item by image path (the QA files' ``image_path``, which both exports carry
into every document). The result is what inference writes: ``<set>_<run>_results.json`` — the matched items in the
QA file's order, each the QA record plus ``model_response`` (``"error": true`` where the tool reports a failed
request) — and its ``.meta.json`` (``unifer.data.runmeta``), so scoring, the leaderboard and the report read it like
any run. A sample that matches no item, a second sample of one item, and an item with no sample are all listed
(and counted in the sidecar); none is dropped silently.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from unifer import __version__
from unifer.data.exports import LMMS_TASKS, VLMEVALKIT_IMAGE_PATH, VLMEVALKIT_NAMES
from unifer.data.images import IMAGE_SIZE
from unifer.data.jsonio import write_json_atomic
from unifer.data.records import load_records, prompt_candidates
from unifer.data.runmeta import write_meta
from unifer.data.sets import FERSet, get_set, resolve_path, set_for_labels
from unifer.errors import DataError, UniferError

TOOLS = ("lmms-eval", "vlmevalkit")
#: How each tool marks a request that got no answer: imported as an error item, as inference writes a failed one.
FAILED_MARKERS = ("[LMMS_EVAL_REQUEST_FAILED", "Failed to obtain answer via API")
MAX_LISTED = 10


@dataclass
class Sample:
    """One answered item of another tool: where it is (file, row), its image path, its response."""

    where: str
    image_paths: tuple[str, ...]  # the first that names a FERBench item is its image
    response: str
    fer_set: FERSet | None  # the set its own fields name (candidate labels, prompt), if any


@dataclass
class Imported:
    """One set's import: the results records, and everything that did not pair up."""

    fer_set: FERSet
    results: list[dict]
    unmatched_samples: list[str] = field(default_factory=list)  # "where: image (why)"
    items_without_sample: list[str] = field(default_factory=list)  # image paths
    settings: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------- readers


def read_lmms_eval(path) -> list[Sample]:
    """An lmms-eval ``*_samples_<task>.jsonl`` (``--log_samples``). Its image is the document's ``image_path`` where
    the sample keeps the document, else the paths lmms-eval lists in ``input_media``; its response the raw one
    (``resps``, before any filter) or, where lmms-eval left that out as equal, ``filtered_resps``."""
    path = resolve_path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UniferError(f"cannot read {path}: {e.strerror or e}") from None
    name_set = _set_from_name(path.name)
    samples = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DataError(path, f"line {n} is not JSON ({e.msg}); expected lmms-eval's --log_samples JSON "
                                  "Lines") from None
        if not isinstance(row, dict):
            raise DataError(path, f"line {n}: expected a JSON object, found {type(row).__name__}")
        doc = row.get("doc") if isinstance(row.get("doc"), dict) else {}
        if isinstance(doc.get("image_path"), str):
            images = (doc["image_path"],)
        else:
            media = _field(row, "input_media", list, path, n)
            images = tuple(m for m in media if isinstance(m, str))
        response = _first_text(row.get("resps", _field(row, "filtered_resps", (list, str), path, n)), path, n)
        fer_set = _set_named(doc.get("candidate_labels"), row.get("input")) or name_set
        samples.append(Sample(f"{path.name}:{n}", images, response, fer_set))
    return samples


def read_vlmevalkit(path) -> list[Sample]:
    """A VLMEvalKit predictions file (``<model>_<dataset>.xlsx`` or ``.tsv``/``.csv``) of an exported TSV."""
    import pandas as pd

    path = resolve_path(path)
    try:
        if path.suffix == ".xlsx":
            frame = pd.read_excel(path)  # needs openpyxl, as VLMEvalKit itself does
        else:
            frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", keep_default_na=False)
    except ImportError as e:
        raise UniferError(f"{path}: reading .xlsx needs openpyxl ({e}); or pass VLMEvalKit's .tsv/.csv") from None
    except (OSError, ValueError) as e:
        raise UniferError(f"cannot read {path}: {e}") from None
    for column in (VLMEVALKIT_IMAGE_PATH, "prediction"):
        if column not in frame.columns:
            raise DataError(path, f"no column {column!r} (columns: {', '.join(map(str, frame.columns))}); expected "
                                  "VLMEvalKit's predictions of a TSV from unifer ferbench export --format vlmevalkit",
                            index=0, field=column)
    name_set = _set_from_name(path.name)
    samples = []
    for i, row in enumerate(frame.to_dict("records")):
        where = f"{path.name} row {i + 2}"  # the header is row 1
        image, response = row[VLMEVALKIT_IMAGE_PATH], row["prediction"]
        if not isinstance(image, str) or not image.strip():
            raise DataError(path, f"row {i + 2}: expected an image path, found {image!r}", field=VLMEVALKIT_IMAGE_PATH)
        response = "" if _missing(response) else str(response)
        labels = row.get("candidate_labels")
        labels = [c.strip() for c in labels.split(",")] if isinstance(labels, str) else None
        samples.append(Sample(where, (image,), response, _set_named(labels, row.get("question")) or name_set))
    return samples


def _set_named(labels, prompt) -> FERSet | None:
    """The set a sample's candidate labels, or else its prompt, name."""
    fer_set = set_for_labels(labels) if isinstance(labels, list) else None
    if fer_set is None and isinstance(prompt, str):
        cands = prompt_candidates(prompt)
        fer_set = set_for_labels(cands) if cands else None
    return fer_set


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _field(row: dict, name: str, typ, path: Path, line: int):
    if name not in row:
        raise DataError(path, f"line {line}: missing field; expected lmms-eval's --log_samples records", field=name)
    if not isinstance(row[name], typ):
        wanted = " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
        raise DataError(path, f"line {line}: expected {wanted}, found {type(row[name]).__name__}", field=name)
    return row[name]


def _first_text(resps, path: Path, line: int) -> str:
    first = resps
    while isinstance(first, list):  # text, [text] or [[text]]
        first = first[0] if first else None
    if not isinstance(first, str):
        raise DataError(path, f"line {line}: expected the response text, found {type(first).__name__}", field="resps")
    return first


def _set_from_name(name: str) -> FERSet | None:
    """The set a file name names: lmms-eval's ``…_samples_ferbench_rafdb.jsonl``, VLMEvalKit's
    ``…_FERBench_RAFDB.xlsx``."""
    for key, task in LMMS_TASKS.items():
        if re.search(rf"{task}\b", name):
            return get_set(key)
    for key, dataset in VLMEVALKIT_NAMES.items():
        if dataset.lower() in name.lower():
            return get_set(key)
    return None


# ------------------------------------------------------------------------------------------------------ matching


def sets_of(samples: list[Sample], path, chosen: str | None = None) -> FERSet:
    """The one set the samples belong to (``--set`` wins); samples of two sets, or of none, are refused."""
    if chosen:
        try:
            return get_set(chosen)
        except ValueError as e:
            raise UniferError(f"--set: {e}") from None
    found = {s.fer_set.key for s in samples if s.fer_set is not None}
    if len(found) == 1:
        return get_set(found.pop())
    if not found:
        raise UniferError(f"{path}: no FERBench set named by its samples' candidate labels, prompt or file name; "
                          "pass --set rafdb|ferplus|affectnet|sfew_2.0")
    raise UniferError(f"{path}: samples of several sets ({', '.join(sorted(found))}); import one set per file")


def match(samples: list[Sample], qa_records: list[dict], fer_set: FERSet) -> Imported:
    """Pair samples with items by image path; results in the QA file's order."""
    index = {r["image_path"]: i for i, r in enumerate(qa_records)}
    answers: dict[int, Sample] = {}
    out = Imported(fer_set, [])
    for s in samples:
        i = next((index[p] for p in s.image_paths if p in index), None)
        if i is None:
            shown = ", ".join(s.image_paths) or "no image path"
            out.unmatched_samples.append(f"{s.where}: {shown} (no {fer_set.name} item has this image)")
        elif i in answers:
            out.unmatched_samples.append(f"{s.where}: {qa_records[i]['image_path']} (a second sample of the item "
                                         f"of {answers[i].where}; the first is kept)")
        else:
            answers[i] = s
    for i, r in enumerate(qa_records):
        if i not in answers:
            out.items_without_sample.append(r["image_path"])
            continue
        response = answers[i].response
        record = {**r, "model_response": response}
        if response.startswith(FAILED_MARKERS):
            record["error"] = True
        out.results.append(record)
    return out


# ------------------------------------------------------------------------------------------------------- writing


def write_import(imported: Imported, qa_path: Path, output: Path, meta: dict, overwrite: bool = False) -> Path:
    """The results file and its sidecar, as inference writes them."""
    if not imported.results:
        raise UniferError(f"no sample matched any {imported.fer_set.name} item of {qa_path}; nothing written "
                          f"(first unmatched: {'; '.join(imported.unmatched_samples[:3])})")
    if output.exists() and not overwrite:
        raise UniferError(f"{output} already exists; pass --overwrite to replace it, or choose another --run")
    write_json_atomic(output, imported.results)
    errors = sum(1 for r in imported.results if r.get("error") is True)
    write_meta(output, {
        **meta, "set": imported.fer_set.key, "items": len(imported.results), "errors": errors, "shard": None,
        "input": str(qa_path), "input_sha256": hashlib.sha256(qa_path.read_bytes()).hexdigest(),
        "unmatched_samples": imported.unmatched_samples,
        "items_without_sample": imported.items_without_sample,
        "unifer_version": __version__})
    return output


def run_meta(tool: str, run: str, source: Path, model: str | None, decoding: dict) -> dict:
    """The sidecar fields that describe an imported run."""
    return {"run": run, "display_name": model or run, "preset": None, "engine": tool, "model": model or run,
            "model_id": model or run, "model_type": None, "model_fingerprint": None,
            "image_size": IMAGE_SIZE if tool == "lmms-eval" else "the tool's own", "dtype": None,
            "decoding": {"greedy": not decoding.get("do_sample") and not decoding.get("temperature"),
                         **{k: v for k, v in decoding.items() if isinstance(v, (int, float, str, bool))}},
            "imported_from": str(source)}


def load_qa(fer_set: FERSet, qa_dir=None) -> tuple[Path, list[dict]]:
    path = resolve_path(qa_dir) / fer_set.qa_filename if qa_dir else fer_set.default_qa_path()
    return path, load_records(path, "qa", hint="the QA files the export was built from (--qa-dir)")


def lmms_eval_run(samples_path: Path) -> tuple[str | None, dict]:
    """(model, decoding) from the lmms-eval ``*_results.json`` beside the samples: ``model_args``' model=…, the
    task's ``generation_kwargs``. (None, {}) when there is none."""
    task = re.search(r"_samples_(.+)\.jsonl$", samples_path.name)
    for results in sorted(samples_path.parent.glob("*_results.json"), reverse=True):
        try:
            run = json.loads(results.read_text(encoding="utf-8"))
            config = run.get("config") or {}
        except (OSError, ValueError, AttributeError):
            continue
        decoding = ((run.get("configs") or {}).get(task.group(1) if task else "", {}) or {}).get("generation_kwargs")
        found = re.search(r"(?:^|,)\s*(?:model|model_version|pretrained)=([^,]+)", str(config.get("model_args") or ""))
        model = found.group(1).strip() if found else run.get("model_name")
        if model or decoding:
            return model, decoding if isinstance(decoding, dict) else {}
    return None, {}


def run_name_for(model: str | None, fallback: str) -> str:
    """A run name (it names files): the model's last path part, other characters replaced by '_'."""
    base = (model or fallback).rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._-")
    return name or "imported"
