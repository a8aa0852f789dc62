"""Reading and writing the project's JSON files: a JSON array or JSONL, strict, with errors that name the place.

Every data file (QA, results, CoT, RLVR) is read through ``read_records`` and every output is written through
``write_json_atomic`` (temp file in the same directory, fsync, rename): a crash or a full disk never leaves a
half-written file where a good one stood.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from unifer.errors import DataError, UniferError


class WriteError(UniferError, OSError):
    """A file that could not be written (disk full, no permission): still an ``OSError`` for callers that catch
    those, and one line from ``run_cli``. The temporary file is gone and what stood at the path is untouched."""

    def __init__(self, path, error: OSError, note: str = "the file was left as it was"):
        super().__init__(error.errno, error.strerror or str(error))
        self.filename, self.note = str(path), note

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}; {self.note}"


def read_records(path: str | os.PathLike, what: str = "data file", hint: str | None = None) -> list[dict]:
    """A list of JSON objects from ``path``: a JSON array, or JSON Lines (one object a line, blank lines
    allowed). A UTF-8 byte-order mark is accepted. Anything else raises DataError naming file and record."""
    p = Path(path)
    if not p.exists():
        msg = f"{what} not found"
        raise DataError(p, msg + (f" ({hint})" if hint else ""))
    if p.is_dir():
        raise DataError(p, f"{what} is a directory, expected a JSON file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(p, f"not UTF-8 text ({e})") from None
    if not text.strip():
        raise DataError(p, f"{what} is empty")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(p, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        records = data
    elif stripped.startswith("{"):
        records = _read_jsonl(p, text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(p, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        raise DataError(p, f"expected a JSON list of records, found {type(data).__name__}")
    if not isinstance(records, list):
        raise DataError(p, f"expected a JSON list of records, found {type(records).__name__}")
    if not records:
        raise DataError(p, f"{what} holds no records (empty list)")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise DataError(p, f"expected a JSON object, found {type(r).__name__}", index=i)
    return records


def _read_jsonl(p: Path, text: str) -> list:
    """JSON Lines, told apart from a lone (or broken) JSON object: JSONL's first line is a whole object."""
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    try:
        json.loads(lines[0][1])
        first_line_whole = True
    except json.JSONDecodeError:
        first_line_whole = False
    if not first_line_whole or (len(lines) == 1 and p.suffix.lower() != ".jsonl"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(p, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        raise DataError(p, f"expected a JSON list of records (or JSON Lines), found a single JSON {type(obj).__name__}"
                        .replace("JSON dict", "JSON object"))
    records = []
    for lineno, line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(p, f"JSON Lines: line {lineno} is not valid JSON ({e.msg})", index=len(records)) from None
    return records


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (temp file beside it, fsync, rename)."""
    def dump(f):
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")

    return _write_atomic(path, dump)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return _write_atomic(path, lambda f: f.write(text))


def _write_atomic(path: str | os.PathLike, write) -> Path:
    """``write(f)`` into a temp file beside ``path``, fsync, rename; an OSError (a full disk) becomes WriteError."""
    p = Path(path)
    tmp = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(p, e) from None
        raise
    return p
