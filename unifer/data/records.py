"""Record schemas and validating loaders for every data file the project reads.

- QA (FERBench):     {image_path, true_label, prompt, candidate_labels}
- CoT (SFT):         {image_path, question, response}
- RLVR (GRPO):       {image_path, problem, solution}   the ground truth: the first <answer> block's text, or the
                     whole solution (as the paper's reward reads it; ``solution_label``)
- results:           QA fields + model_response (+ "error": true on failed items)

Loaders validate the whole file up front — a missing or mistyped field raises DataError naming the file, the
record index and the field — and never decode images: training sets of 360K records load in seconds, and images
are opened lazily, per batch, through ``unifer.data.images.load_image`` (224×224, the paper's size).
``python -m unifer data check FILE --kind cot|rlvr --image-root ROOT`` lists every problem a file has, duplicates
included, and decodes every image (see ``unifer.data.check``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from unifer.data.jsonio import read_records
from unifer.errors import DataError

QA_SCHEMA = {"image_path": str, "true_label": str, "prompt": str, "candidate_labels": list}
COT_SCHEMA = {"image_path": str, "question": str, "response": str}
RLVR_SCHEMA = {"image_path": str, "problem": str, "solution": str}
RESULTS_SCHEMA = {**QA_SCHEMA, "model_response": str}

SCHEMAS = {"qa": QA_SCHEMA, "cot": COT_SCHEMA, "rlvr": RLVR_SCHEMA, "results": RESULTS_SCHEMA}
KIND_NAMES = {"qa": "FERBench QA file", "cot": "CoT (SFT) file", "rlvr": "RLVR (GRPO) file", "results": "results file"}

#: The paper's image root for training data (its scripts read every image from /dataset/).
PAPER_IMAGE_ROOT = "/dataset/"

#: Fields whose values repeat across a whole file (one prompt per set, a handful of labels): loaders keep one
#: copy of each value, which takes a 360K-record RLVR file from ~150 MB of identical prompt strings to a few KB.
_SHARED_VALUE_FIELDS = ("prompt", "question", "problem", "solution", "true_label")

#: The paper's training-side answer block (its accuracy reward and its data): the first ``<answer>…</answer>``,
#: ``.`` matching newlines, case-sensitive. Scoring uses the paper's eval pattern, ``unifer.scoring.extract``.
REWARD_ANSWER_PATTERN = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_CANDIDATES = re.compile(r"candidate labels:\s*(.+?)\.\s", re.DOTALL)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one record. Errors make a file unusable; warnings are reported by ``check`` only."""

    index: int | None
    field: str | None
    message: str
    severity: str = "error"  # "error" | "warning"

    def describe(self) -> str:
        where = "file" if self.index is None else f"record {self.index}"
        if self.field is not None:
            where += f", field {self.field!r}"
        return f"{where}: {self.message}"


def extract_answer(text: str) -> str:
    """The paper's answer of a text, completions and solutions alike (its accuracy reward, ``unifer.rewards``): the
    first ``<answer>…</answer>`` block's content (``.`` matching newlines), stripped, or the whole text stripped
    when no block closes. May be empty."""
    m = REWARD_ANSWER_PATTERN.search(text)
    return (m.group(1) if m else text).strip()


def solution_label(solution: str) -> str:
    """An RLVR solution's ground truth exactly as the paper's reward takes it: ``extract_answer(solution)``,
    whatever surrounds the first block. Never refused: a record whose ground truth no sensible completion can
    match (empty, not a candidate of its problem, no closed block) trains with reward 0, as in the paper, and
    ``validate_records`` warns about it."""
    return extract_answer(solution)


def response_answer(response: str) -> str | None:
    """The label a CoT response ends on (the first ``<answer>`` block, as the paper's scorer reads it), or None."""
    m = REWARD_ANSWER_PATTERN.search(response)
    return m.group(1).strip() if m else None


def prompt_candidates(prompt: str) -> tuple[str, ...] | None:
    """The candidate labels a FERBench-style prompt lists ("... candidate labels: a, b, c. ..."), or None when the
    prompt does not follow the template (a custom prompt)."""
    m = _CANDIDATES.search(prompt + " ")
    if not m:
        return None
    return tuple(c.strip() for c in m.group(1).split(","))


def validate_records(records: list[dict], kind: str) -> Iterator[Problem]:
    """Every problem of a parsed file of ``kind``, record by record, then whole-file ones (duplicates)."""
    if kind not in SCHEMAS:
        raise ValueError(f"unknown record kind {kind!r}")
    schema = SCHEMAS[kind]
    parsed: dict[str, tuple[str, ...] | None] = {}  # prompt text → its candidates (prompts repeat)
    labels: dict[str, str | None] = {}  # solution text → its label
    for i, r in enumerate(records):
        bad_field = False
        for field, typ in schema.items():
            if field not in r:
                yield Problem(i, field, "missing field")
                bad_field = True
            elif not isinstance(r[field], typ) or isinstance(r[field], bool):
                yield Problem(i, field, f"expected {typ.__name__}, found {type(r[field]).__name__}")
                bad_field = True
        if bad_field:
            continue
        if not r["image_path"].strip():
            yield Problem(i, "image_path", "empty image path")
        if kind in ("qa", "results"):
            yield from _qa_problems(i, r, parsed)
        elif kind == "rlvr":
            sol = r["solution"]
            if sol not in labels:
                labels[sol] = solution_label(sol)
            yield from _ground_truth_problems(i, labels[sol], sol, r["problem"], parsed)
        elif kind == "cot":
            for field in ("question", "response"):
                if not r[field].strip():
                    yield Problem(i, field, "empty text")
            answer = response_answer(r["response"])
            if answer is None:
                yield Problem(i, "response", "no <answer></answer> in the response", "warning")
            else:
                yield from _label_in_prompt(i, answer, r["question"], "question", "response", parsed, "warning")
    yield from _duplicate_problems(records, kind)


def _qa_problems(i: int, r: dict, parsed: dict) -> Iterator[Problem]:
    cands = r["candidate_labels"]
    if not cands or not all(isinstance(c, str) and c.strip() for c in cands):
        yield Problem(i, "candidate_labels", "expected a non-empty list of non-empty strings")
        return
    if len(set(cands)) != len(cands):
        yield Problem(i, "candidate_labels", f"a label is listed twice: {cands}")
    if r["true_label"] not in cands:
        yield Problem(i, "true_label", f"label {r['true_label']!r} is not one of the candidates {cands}")
    prompt = r["prompt"]
    if prompt not in parsed:
        parsed[prompt] = prompt_candidates(prompt)
    listed = parsed[prompt]
    if listed is not None:
        if listed != tuple(cands):
            yield Problem(i, "prompt", f"the prompt lists {list(listed)} but candidate_labels is {cands}")
    else:
        missing = [c for c in cands if not re.search(rf"\b{re.escape(c)}\b", prompt)]
        if missing:
            yield Problem(i, "prompt", f"the prompt does not mention the candidates {missing}")


def _ground_truth_problems(i, label, solution, problem, parsed) -> Iterator[Problem]:
    """Warnings, never errors: the paper's reward scores such a record 0 (or pays only an empty answer) and trains
    on, and a published file with a few of them must still train."""
    if not label:
        yield Problem(i, "solution", "empty ground truth: the reward can pay only an empty answer", "warning")
    elif label == solution.strip() and ("<answer>" in label or "</answer>" in label):  # no block closed
        yield Problem(i, "solution", f"no closed <answer></answer> block, so the ground truth is the whole solution "
                                     f"{solution[:80]!r}: no completion that answers a label can score", "warning")
    else:
        yield from _label_in_prompt(i, label, problem, "problem", "solution", parsed, "warning")


def _label_in_prompt(i, label, prompt, prompt_field, label_field, parsed, severity) -> Iterator[Problem]:
    if prompt not in parsed:
        parsed[prompt] = prompt_candidates(prompt)
    listed = parsed[prompt]
    if listed is not None and label not in listed:
        yield Problem(i, label_field, f"label {label!r} is not among the candidates the {prompt_field} lists "
                                      f"{list(listed)}", severity)


def _duplicate_problems(records: list[dict], kind: str) -> Iterator[Problem]:
    """QA/results: an image asked twice skews every metric (error). Training: identical records are reported,
    and so is one image+question with two different answers (warnings: the paper's data may hold some)."""
    seen: dict = {}
    answers: dict = {}
    fields = tuple(SCHEMAS[kind])
    for i, r in enumerate(records):
        try:
            if kind in ("qa", "results"):
                key = r["image_path"]
            else:
                key = tuple(r[f] for f in fields)
            hash(key)
        except (KeyError, TypeError):
            continue  # already reported as a schema problem
        if key in seen:
            if kind in ("qa", "results"):
                yield Problem(i, "image_path", f"duplicate image: also record {seen[key]}")
            else:
                yield Problem(i, None, f"duplicate record: same as record {seen[key]}", "warning")
            continue
        seen[key] = i
        if kind in ("cot", "rlvr"):
            ask = (key[0], key[1])  # image_path, question/problem
            if ask in answers:
                yield Problem(i, fields[2], f"record {answers[ask]} has the same image and {fields[1]} "
                                            f"but a different {fields[2]}", "warning")
            else:
                answers[ask] = i


def share_repeated_values(records: list[dict]) -> None:
    pool: dict[str, str] = {}
    for r in records:
        for f in _SHARED_VALUE_FIELDS:
            v = r.get(f)
            if type(v) is str:
                r[f] = pool.setdefault(v, v)


def load_records(path: str | os.PathLike, kind: str, hint: str | None = None,
                 image_root: str | os.PathLike | None = None) -> list[dict]:
    """Read and validate a whole file of ``kind`` (qa | cot | rlvr | results); the first error raises DataError
    naming file, record and field. With ``image_root``, every image must also exist (checked, not decoded)."""
    if kind not in SCHEMAS:
        raise ValueError(f"unknown record kind {kind!r}")
    records = read_records(path, what=KIND_NAMES[kind], hint=hint)
    share_repeated_values(records)  # first: validation's caches then compare identical objects (3× faster)
    for p in validate_records(records, kind):
        if p.severity == "error":
            raise DataError(path, p.message, index=p.index, field=p.field)
    if image_root is not None:
        require_images(path, records, image_root)
    return records


def image_file(image_root: str | os.PathLike, image_path: str) -> Path:
    """Where a record's image lives: the root joined with the record's path (a leading '/' does not reset it)."""
    from unifer.data.images import join_image_path

    return join_image_path(image_root, image_path)


def missing_images(records: list[dict], image_root: str | os.PathLike) -> list[tuple[int, Path]]:
    """(first record index, file) for every image that is not a file under ``image_root`` (a stat per image)."""
    first: dict[str, int] = {}
    for i, r in enumerate(records):
        first.setdefault(r["image_path"], i)
    out = []
    for image_path, i in first.items():
        f = image_file(image_root, image_path)
        if not f.is_file():
            out.append((i, f))
    return out


def require_images(path, records: list[dict], image_root: str | os.PathLike) -> None:
    root = Path(image_root)
    if not root.is_dir():
        raise DataError(root, "image root is not a directory")
    missing = missing_images(records, root)
    if missing:
        i, f = missing[0]
        more = f" (and {len(missing) - 1} more images are missing)" if len(missing) > 1 else ""
        raise DataError(path, f"image not found: {f}{more}", index=i, field="image_path")

