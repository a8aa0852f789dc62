"""What produced a results file: the sidecar ``<results stem>.meta.json`` beside it.

A results file stays exactly what the paper's scorer reads — a JSON list of the QA records plus
``model_response`` (and ``"error": true`` on failed items) — so nothing that reads it today changes, and eleven
thousand records do not each repeat the same settings. The run's description lives once, beside it:

    eval_rafdb/results/rafdb_qwen3_vl_8b_results.json        the records
    eval_rafdb/results/rafdb_qwen3_vl_8b_results.meta.json   {"run", "display_name", "engine", "model", "model_id",
                                                              "image_size", "decoding", "dtype", "items", ...}

Inference writes it (atomically, right after the results file); the leaderboard and the report read it. A results
file without one (an older run, or another tool's) is still scored; its run is named by its file name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

META_VERSION = 1


def meta_path(results: str | os.PathLike) -> Path:
    results = Path(results)
    return results.with_name(f"{results.stem}.meta.json")


def read_meta(results: str | os.PathLike) -> dict:
    """The sidecar of ``results`` ({} when absent or unreadable: the results still score)."""
    try:
        meta = json.loads(meta_path(results).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) and meta.get("unifer_results_meta") == META_VERSION else {}


def write_meta(results: str | os.PathLike, meta: dict) -> Path:
    from unifer.data.jsonio import write_json_atomic

    path = meta_path(results)
    write_json_atomic(path, {"unifer_results_meta": META_VERSION, **meta})
    return path
