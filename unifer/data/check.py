"""``check`` for any data file: every problem listed with its record index, duplicates, every image decoded.

Shared by ``python -m unifer data check FILE --kind cot|rlvr --image-root ROOT`` (training files) and
``python -m unifer ferbench check FILE --image-root ROOT`` (QA files). Images are decoded in a thread pool (Pillow
releases the GIL while it decodes), each distinct image once, with a progress bar on stderr.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from unifer.data.images import verify_image
from unifer.data.jsonio import read_records
from unifer.data.records import (
    KIND_NAMES,
    SCHEMAS,
    Problem,
    image_file,
    response_answer,
    share_repeated_values,
    solution_label,
    validate_records,
)
from unifer.data.sets import resolve_path, set_for_labels
from unifer.errors import DataError, UniferError

DEFAULT_MAX_LISTED = 20
_CHUNK = 64  # images per pool task: few enough futures for 360K images, small enough for a smooth bar


@dataclass
class CheckReport:
    path: Path
    kind: str
    n_records: int
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    n_images: int = 0  # distinct image paths
    images_checked: str = "no"  # "no" | "exist" | "decode"
    images_per_s: float | None = None
    image_failures: int = 0
    label_counts: Counter = field(default_factory=Counter)
    set_name: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def default_workers() -> int:
    return max(1, min(16, os.cpu_count() or 1))


def decode_images(files: list[Path], workers: int | None = None, progress: bool = True,
                  desc: str = "decoding images") -> dict[int, str]:
    """Decode every file (in parallel); {position in ``files``: reason} for those that do not decode."""
    from tqdm import tqdm

    def job(start: int) -> tuple[int, list[tuple[int, str]]]:
        bad = []
        for k in range(start, min(start + _CHUNK, len(files))):
            reason = verify_image(files[k])
            if reason is not None:
                bad.append((k, reason))
        return min(_CHUNK, len(files) - start), bad

    failures: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool, \
            tqdm(total=len(files), unit="img", desc=desc, disable=not progress, file=sys.stderr,
                 mininterval=0.5) as bar:
        futures = [pool.submit(job, start) for start in range(0, len(files), _CHUNK)]
        for fut in as_completed(futures):
            n, bad = fut.result()
            failures.update(bad)
            bar.update(n)
    return failures


def check_file(path: str | os.PathLike, kind: str, image_root: str | os.PathLike | None = None,
               decode: bool = True, workers: int | None = None, progress: bool = True,
               hint: str | None = None) -> CheckReport:
    """Validate ``path`` as ``kind`` completely. An unreadable file (not JSON, not a list) raises DataError;
    everything else is collected into the report."""
    if kind not in SCHEMAS:
        raise UniferError(f"unknown record kind {kind!r}; choose one of: {', '.join(SCHEMAS)}")
    path = Path(path)
    records = read_records(path, what=KIND_NAMES[kind], hint=hint)
    share_repeated_values(records)
    report = CheckReport(path=path, kind=kind, n_records=len(records))
    for p in validate_records(records, kind):
        (report.errors if p.severity == "error" else report.warnings).append(p)
    _summarise_labels(records, kind, report)
    if image_root is not None:
        _check_images(records, Path(image_root), report, decode, workers, progress)
    report.errors.sort(key=lambda p: (p.index is not None, p.index or 0))
    report.warnings.sort(key=lambda p: (p.index is not None, p.index or 0))
    return report


def _summarise_labels(records: list[dict], kind: str, report: CheckReport) -> None:
    for r in records:
        if kind in ("qa", "results"):
            label = r.get("true_label")
        elif kind == "rlvr":
            label = solution_label(r["solution"]) if isinstance(r.get("solution"), str) else None
        else:
            label = response_answer(r["response"]) if isinstance(r.get("response"), str) else None
        if isinstance(label, str):
            report.label_counts[label] += 1
    if kind in ("qa", "results"):
        lists = {tuple(c) for c in (r.get("candidate_labels") for r in records)
                 if isinstance(c, list) and all(isinstance(x, str) for x in c)}
        if len(lists) == 1:
            s = set_for_labels(next(iter(lists)))
            report.set_name = s.name if s else "custom candidate labels"
        elif len(lists) > 1:
            report.set_name = f"mixed: {len(lists)} different candidate label lists"


def _check_images(records, root: Path, report: CheckReport, decode: bool, workers, progress) -> None:
    if not root.is_dir():
        raise DataError(root, "image root is not a directory")
    first: dict[str, int] = {}
    uses: Counter = Counter()
    for i, r in enumerate(records):
        p = r.get("image_path")
        if isinstance(p, str) and p.strip():
            first.setdefault(p, i)
            uses[p] += 1
    paths = list(first)
    files = [image_file(root, p) for p in paths]
    report.n_images = len(files)
    start = time.perf_counter()
    if decode:
        failures = decode_images(files, workers=workers, progress=progress)
        report.images_checked = "decode"
    else:
        failures = {k: f"image not found: {f}" for k, f in enumerate(files) if not f.is_file()}
        report.images_checked = "exist"
    elapsed = time.perf_counter() - start
    report.images_per_s = len(files) / elapsed if elapsed > 0 else None
    report.image_failures = len(failures)
    for k in sorted(failures):
        n = uses[paths[k]]
        also = f" (used by {n} records)" if n > 1 else ""
        report.errors.append(Problem(first[paths[k]], "image_path", failures[k] + also))


def print_report(report: CheckReport, max_listed: int = DEFAULT_MAX_LISTED, out=None) -> None:
    out = out or sys.stdout
    w = lambda s="": print(s, file=out)  # noqa: E731
    w(f"{report.path}: {report.n_records} records ({KIND_NAMES[report.kind]})")
    if report.set_name:
        w(f"  set: {report.set_name}")
    if report.label_counts:
        top = ", ".join(f"{k} {v}" for k, v in report.label_counts.most_common(12))
        more = f", … {len(report.label_counts) - 12} more" if len(report.label_counts) > 12 else ""
        w(f"  labels: {top}{more}")
    if report.images_checked == "no":
        w("  images: not checked (pass --image-root to check them)")
    else:
        bad = report.image_failures
        verb = "decode" if report.images_checked == "decode" else "exist"
        rate = f", {report.images_per_s:.0f} img/s" if report.images_per_s else ""
        status = f"all {verb}" if not bad else f"{bad} do not {verb}"
        w(f"  images: {report.n_images} distinct, {status}{rate}")
    for title, items in (("warnings", report.warnings), ("problems", report.errors)):
        if items:
            shown = f" (the first {max_listed})" if len(items) > max_listed else ""
            w(f"  {title}: {len(items)}{shown}")
            for p in items[:max_listed]:
                w(f"    {p.describe()}")
    w("  OK" if report.ok else f"  FAILED: {len(report.errors)} problems")


def run_check(path, kind: str, image_root, decode: bool = True, workers: int | None = None,
              max_listed: int = DEFAULT_MAX_LISTED, progress: bool = True, hint: str | None = None) -> CheckReport:
    """Check, print the summary, raise UniferError (non-zero exit) when the file has problems."""
    report = check_file(resolve_path(path), kind, resolve_path(image_root) if image_root else None,
                        decode=decode, workers=workers, progress=progress, hint=hint)
    print_report(report, max_listed)
    if not report.ok:
        first = report.errors[0].describe()
        raise UniferError(f"{report.path}: {len(report.errors)} problems; the first: {first}")
    return report


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the data file (JSON array or JSON Lines)")
    p.add_argument("--image-root", default=None,
                   help="directory the records' image paths are relative to; without it images are not checked")
    p.add_argument("--no-decode", action="store_true", help="only check that every image exists (fast)")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: CPU count, at most 16)")
    p.add_argument("--max-listed", type=int, default=DEFAULT_MAX_LISTED, help="problems listed (default 20)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``unifer data check FILE --kind cot|rlvr|qa|results``."""
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("check", help="validate a CoT / RLVR / QA / results file and decode its images")
    add_check_arguments(p)
    p.add_argument("--kind", required=True, choices=sorted(SCHEMAS),
                   help="cot (UniFER-CoT-230K), rlvr (UniFER-RLVR-360K), qa (FERBench), results")
    from unifer.data import sources_cli

    sources_cli.add_arguments(sub.add_parser("records", help="QA records from a labelled folder (CLASS/IMAGE) or "
                                                             "a CSV / JSON(L) of image_path,label"))


def run(args: argparse.Namespace) -> int:
    if args.action == "records":
        from unifer.data import sources_cli

        return sources_cli.run(args)
    run_check(args.file, args.kind, args.image_root, decode=not args.no_decode, workers=args.workers,
              max_listed=args.max_listed, progress=not args.no_progress)
    return 0
