"""FERBench where researchers already evaluate: a Hugging Face dataset, an lmms-eval task folder, VLMEvalKit TSVs.

Every export is built from the user's own image root: the faces belong to their datasets' owners, so nothing
with images is shipped with this repository or uploaded by it. The records are the QA files' (``<set>_qa.json``);
images are the files' original bytes (never re-encoded).

- ``hf``: one Parquet file per set (``<config>/test-00000-of-00001.parquet``; configurations ``rafdb``,
  ``ferplus``, ``affectnet``, ``sfew_2.0``, split ``test``) and a dataset card (``README.md`` with ``configs:``),
  so ``datasets.load_dataset(DIR, "rafdb", split="test")`` loads it.
- ``lmms-eval``: the ``hf`` export under ``data/`` and a task package ``unifer_ferbench/`` beside it: one task per
  set and the group ``ferbench``; ``process_results`` is ``unifer.scoring.lmms_eval_task`` (this repository's
  scorer, both protocols).
- ``vlmevalkit``: ``FERBench_<SET>.tsv`` per set, VLMEvalKit's custom VQA layout (``index``, base64 ``image``,
  ``question``, ``answer``) plus ``ferbench_image_path`` and ``candidate_labels``, which its predictions files keep and
  ``unifer import vlmevalkit`` matches on.
"""
from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from unifer.data.images import join_image_path
from unifer.data.jsonio import write_text_atomic
from unifer.data.records import load_records
from unifer.data.sets import SET_KEYS, get_set, resolve_path
from unifer.errors import UniferError

FORMATS = ("hf", "lmms-eval", "vlmevalkit")
#: lmms-eval task name and VLMEvalKit dataset name of each set.
LMMS_TASKS = {"rafdb": "ferbench_rafdb", "ferplus": "ferbench_ferplus", "affectnet": "ferbench_affectnet",
              "sfew_2.0": "ferbench_sfew"}
VLMEVALKIT_NAMES = {"rafdb": "FERBench_RAFDB", "ferplus": "FERBench_FERPlus", "affectnet": "FERBench_AffectNet",
                    "sfew_2.0": "FERBench_SFEW"}
#: The TSVs' column of FERBench's image path: VLMEvalKit reads a column named ``image_path`` as where to find
#: (or write) the image, and the QA files' paths begin with '/'.
VLMEVALKIT_IMAGE_PATH = "ferbench_image_path"
LMMS_GROUP = "ferbench"
LMMS_PACKAGE = "unifer_ferbench"
#: The paper's decoding: greedy, 1024 new tokens.
MAX_NEW_TOKENS = 1024
PARQUET_NAME = "test-00000-of-00001.parquet"
MAX_LISTED = 10
CITATION = """@misc{unifer,
  title         = {Rethinking Facial Expression Recognition in the Era of Multimodal Large Language Models},
  year          = {2025},
  eprint        = {2511.00389},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2511.00389}
}"""
LICENCE_NOTE = ("The images belong to the owners of RAF-DB, FERPlus, AffectNet and SFEW 2.0 and are used under "
                "their licences (research use; no redistribution). This copy was built from its owner's own image "
                "root; keep it private (a private hub repository at most) and share only the QA files.")


@dataclass
class ExportSet:
    """One set to export: its key, where its QA records came from, the records."""

    key: str
    qa_path: Path
    records: list[dict]


def load_sets(qa_dir=None, sets: str | None = None) -> list[ExportSet]:
    """The chosen sets' QA records (``--qa-dir DIR``: ``DIR/<set>_qa.json``; default each ``eval_<set>/data/``)."""
    try:
        keys = list(dict.fromkeys(get_set(k).key for k in (sets or ",".join(SET_KEYS)).split(",") if k.strip()))
    except ValueError as e:
        raise UniferError(f"--sets: {e}") from None
    if not keys:
        raise UniferError("--sets names no set")
    out = []
    for key in keys:
        s = get_set(key)
        path = resolve_path(qa_dir) / s.qa_filename if qa_dir else s.default_qa_path()
        out.append(ExportSet(key, path, load_records(path, "qa", hint="build it with: unifer ferbench build "
                                                                        "--image-root ROOT")))
    return out


def read_images(export_set: ExportSet, image_root) -> list[bytes]:
    """Every image of a set, its file's bytes; a missing or unreadable image stops the export, all of them listed."""
    data, missing = [], []
    for i, r in enumerate(export_set.records):
        path = join_image_path(image_root, r["image_path"])
        try:
            data.append(path.read_bytes())
        except OSError as e:
            missing.append(f"record {i} {r['image_path']} ({e.strerror or e})")
    if missing:
        shown = "; ".join(missing[:MAX_LISTED]) + (f"; and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED
                                                   else "")
        raise UniferError(f"{export_set.qa_path}: {len(missing)} of {len(export_set.records)} images are not under "
                          f"the image root {image_root}: {shown}; nothing exported for {get_set(export_set.key).name}")
    return data


def _image_root(image_root) -> Path:
    root = resolve_path(image_root)
    if not root.is_dir():
        raise UniferError(f"--image-root {root} is not a directory")
    return root


# ------------------------------------------------------------------------------------------------- Hugging Face


def export_hf(sets: list[ExportSet], image_root, out) -> dict[str, Path]:
    """A Hugging Face dataset on disk (Parquet per set + the card); returns set → Parquet file."""
    import datasets

    root, out = _image_root(image_root), resolve_path(out)
    images = {s.key: read_images(s, root) for s in sets}  # every set checked before anything is written
    features = datasets.Features({
        "image": datasets.Image(), "image_path": datasets.Value("string"), "true_label": datasets.Value("string"),
        "prompt": datasets.Value("string"), "candidate_labels": datasets.List(datasets.Value("string"))})
    written = {}
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar per small file says nothing
    try:
        for s in sets:
            written[s.key] = _write_parquet(s, images[s.key], features, out / s.key / PARQUET_NAME)
    finally:
        if shown:
            datasets.enable_progress_bars()
    write_text_atomic(out / "README.md", dataset_card(sets, {s.key: sum(map(len, images[s.key])) for s in sets}))
    return written


def _write_parquet(s: ExportSet, images: list[bytes], features, path: Path) -> Path:
    import datasets

    columns = {"image": [{"bytes": b, "path": Path(r["image_path"]).name} for b, r in zip(images, s.records)],
               **{f: [r[f] for r in s.records] for f in ("image_path", "true_label", "prompt", "candidate_labels")}}
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return path


def dataset_card(sets: list[ExportSet], image_bytes: dict[str, int]) -> str:
    configs = "".join(f"- config_name: {s.key}\n  data_files:\n  - split: test\n    path: {s.key}/{PARQUET_NAME}\n"
                      for s in sets)
    rows = "".join(f"| `{s.key}` | {get_set(s.key).name} | {len(s.records)} | {image_bytes[s.key] / 2**20:.1f} MiB | "
                   f"{', '.join(get_set(s.key).labels)} |\n" for s in sets)
    return (f"---\nconfigs:\n{configs}license: other\npretty_name: FERBench\ntask_categories:\n"
            "- visual-question-answering\n- image-classification\n---\n\n# FERBench\n\n"
            "The four facial expression test sets of UniFER's FERBench as visual questions: the image, the paper's "
            "prompt, the candidate labels and the true label.\n\n"
            "| configuration | set | items | images | candidate labels |\n|---|---|---|---|---|\n" + rows +
            "\n```python\nimport datasets\nrafdb = datasets.load_dataset(\"PATH/TO/THIS/FOLDER\", \"rafdb\", "
            "split=\"test\")\n```\n\nColumns: `image` (the original image file), `image_path` (its path in FERBench's "
            "QA files), `true_label`, `prompt`, `candidate_labels`. Score responses with UniFER's scorer "
            "(`unifer eval`); see its docs/exports.md.\n\n## Licence\n\n" + LICENCE_NOTE +
            f"\n\n## Citation\n\n```bibtex\n{CITATION}\n```\n")


# ------------------------------------------------------------------------------------------------------ lmms-eval


def export_lmms_eval(sets: list[ExportSet], image_root, out, max_new_tokens: int = MAX_NEW_TOKENS) -> Path:
    """The hf export under ``OUT/data`` and the task package ``OUT/unifer_ferbench``; returns its tasks folder."""
    out = resolve_path(out)
    data_dir = out / "data"
    export_hf(sets, image_root, data_dir)
    package = out / LMMS_PACKAGE
    tasks = package / "tasks" / LMMS_GROUP
    tasks.mkdir(parents=True, exist_ok=True)
    write_text_atomic(package / "__init__.py", '"""FERBench for lmms-eval (written by `unifer ferbench export`)."""\n')
    # lmms-eval's plugin hook (LMMS_EVAL_PLUGINS) imports PACKAGE.models and reads its AVAILABLE_MODELS.
    write_text_atomic(package / "models" / "__init__.py", "AVAILABLE_MODELS: dict[str, str] = {}\n")
    write_text_atomic(package / "tasks" / "__init__.py", "")
    write_text_atomic(tasks / "utils.py", '"""The FERBench task functions: this repository\'s scorer."""\n'
                      "from unifer.scoring.lmms_eval_task import (  # noqa: F401\n"
                      "    doc_to_messages, doc_to_target, doc_to_text, doc_to_visual, process_results)\n")
    # datasets caches a local folder under its name and configuration, not its content: each export gets its own
    # cache, so lmms-eval never serves an earlier export's items.
    cache = out / "cache" / uuid.uuid4().hex[:12]
    for s in sets:
        write_text_atomic(tasks / f"{LMMS_TASKS[s.key]}.yaml", task_yaml(s.key, data_dir, cache, max_new_tokens))
    write_text_atomic(tasks / f"{LMMS_GROUP}.yaml", group_yaml([s.key for s in sets]))
    return package / "tasks"


def task_yaml(key: str, data_dir: Path, cache: Path, max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """One set's lmms-eval task: the exported Parquet, the image then the prompt, greedy, both protocols' accuracy."""
    metrics = "".join(f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n"
                      for m in ("accuracy", "accuracy_strict"))
    return (f"task: {LMMS_TASKS[key]}\ndataset_path: {json.dumps(str(data_dir))}\ndataset_name: {json.dumps(key)}\n"
            f"dataset_kwargs:\n  cache_dir: {json.dumps(str(cache))}\n"
            "test_split: test\noutput_type: generate_until\n"
            "doc_to_messages: !function utils.doc_to_messages\ndoc_to_target: !function utils.doc_to_target\n"
            "doc_to_visual: !function utils.doc_to_visual\ndoc_to_text: !function utils.doc_to_text\n"
            f"generation_kwargs:\n  max_new_tokens: {max_new_tokens}\n  temperature: 0\n  do_sample: false\n"
            "  until: []\n"
            "reasoning_tags: none\n"  # lmms-eval strips <think> blocks by default; the paper's scorer reads them
            f"process_results: !function utils.process_results\nmetric_list:\n{metrics}"
            "metadata:\n  version: 1.0\n")


def group_yaml(keys: list[str]) -> str:
    tasks = "".join(f"- {LMMS_TASKS[k]}\n" for k in keys)
    pooled = "".join(f"- metric: {m}\n  aggregation: mean\n  weight_by_size: true\n"
                     for m in ("accuracy", "accuracy_strict"))
    return f"group: {LMMS_GROUP}\ntask:\n{tasks}aggregate_metric_list:\n{pooled}metadata:\n  version: 1.0\n"


# ----------------------------------------------------------------------------------------------------- VLMEvalKit


def export_vlmevalkit(sets: list[ExportSet], image_root, out) -> dict[str, Path]:
    """``FERBench_<SET>.tsv`` per set (VLMEvalKit's custom VQA layout); returns set → TSV file."""
    import pandas as pd

    root, out = _image_root(image_root), resolve_path(out)
    images = {s.key: read_images(s, root) for s in sets}
    written = {}
    for s in sets:
        frame = pd.DataFrame({
            "index": range(len(s.records)),
            "image": [base64.b64encode(b).decode("ascii") for b in images[s.key]],
            "question": [r["prompt"] for r in s.records],
            "answer": [r["true_label"] for r in s.records],
            VLMEVALKIT_IMAGE_PATH: [r["image_path"] for r in s.records],
            "candidate_labels": [",".join(r["candidate_labels"]) for r in s.records]})
        path = out / f"{VLMEVALKIT_NAMES[s.key]}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, frame.to_csv(sep="\t", index=False))
        written[s.key] = path
    return written

