"""``unifer bench distill``: distillation throughput of the local executor and of Ray with 1, 2, … replicas, side by
side in one run, on the same faces, teacher and seeds (``docs/distill.md``).

Each executor is one ``unifer distill`` process from a fresh output folder, timed from start to exit (model loads
and Ray's start included, as a user meets them); the rows say whether it wrote the local executor's ``cot.json`` and
``rlvr.json`` byte for byte. Without ``--model`` the teacher is the tiny random Qwen2.5-VL (``unifer tiny``).
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from unifer.data.jsonio import write_json_atomic, write_text_atomic
from unifer.data.sets import REPO_ROOT
from unifer.errors import UniferError

log = logging.getLogger(__name__)
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "distill.json"
LABELS = ("happiness", "sadness")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default=None, help="the teacher checkpoint (default: the tiny model, built once)")
    ap.add_argument("--engine", default="hf", help="the teacher's engine (default: %(default)s)")
    ap.add_argument("--faces", type=int, default=16, help="synthetic faces, two classes (default: %(default)s)")
    ap.add_argument("--samples", type=int, default=4, help="samples per face (default: %(default)s)")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="(default: %(default)s)")
    ap.add_argument("--replicas", default="1,2", help="Ray replica counts, comma-separated (default: %(default)s)")
    ap.add_argument("--work-dir", default=None, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--output", default=str(DEFAULT_OUT),
                    help="the JSON written; the Markdown table beside it (default: bench/results/distill.json)")


def replica_counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UniferError(f"--replicas takes whole numbers separated by commas, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise UniferError(f"--replicas takes counts of at least 1, got {text!r}")
    return counts


def write_faces(root: Path, n: int) -> Path:
    """``n`` small images, alternately labelled, as a labelled folder (CLASS/IMAGE) under ``root``."""
    from PIL import Image

    folder = root / "faces"
    for i in range(n):
        d = folder / LABELS[i % 2]
        d.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (i * 15 % 256, 80, (200 - i * 10) % 256)).save(d / f"{i}.png")
    return folder


def time_executor(argv: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "unifer", "distill", *argv, "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"exit status {result.returncode}: {tail[0]}", "wall_s": round(wall, 2)}
    return {"wall_s": round(wall, 2)}


def run_bench(args: argparse.Namespace, work: Path) -> dict:
    replicas = replica_counts(args.replicas)
    load_before = round(os.getloadavg()[0], 2)
    model = args.model
    if model is None and args.engine in ("hf", "vllm"):
        from unifer.demo.tiny import build_tiny_model

        model = str(build_tiny_model(work / "tiny", seed=0))
    folder = write_faces(work / "root", args.faces)
    common = ["--records", str(folder), "--image-root", str(work / "root"), "--set", "rafdb", "--model",
              str(model or "teacher"), "--engine", args.engine, "--samples", str(args.samples), "--temperature",
              "1.0", "--max-new-tokens", str(args.max_new_tokens)]
    if args.engine == "hf":
        common += ["--dtype", "float32"]
    rows = []
    for name, extra in [("local", [])] + [(f"ray, {r} replica{'s' * (r > 1)}",
                                           ["--executor", "ray", "--replicas", str(r)]) for r in replicas]:
        out = work / f"out-{len(rows)}"
        log.info("bench distill: %s …", name)
        row = {"executor": name, **time_executor(common + extra, out)}
        if "error" not in row:
            row["faces_per_s"] = round(args.faces / row["wall_s"], 3)
            row["samples_per_s"] = round(args.faces * args.samples / row["wall_s"], 3)
            first = work / "out-0"
            row["same_outputs"] = all((out / f).read_bytes() == (first / f).read_bytes()
                                      for f in ("cot.json", "rlvr.json"))
        rows.append(row)
    local = rows[0].get("wall_s") if "error" not in rows[0] else None
    for row in rows:
        if local and "error" not in row:
            row["speedup"] = round(local / row["wall_s"], 2)
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_before": load_before,
            "command": " ".join(["unifer bench distill", *sys.argv[3:]]) if sys.argv[1:3] == ["bench", "distill"]
            else "unifer bench distill", "engine": args.engine,
            "model": args.model or ("the tiny Qwen2.5-VL" if args.engine in ("hf", "vllm") else args.engine),
            "faces": args.faces, "samples": args.samples, "max_new_tokens": args.max_new_tokens, "rows": rows}


def markdown(sec: dict) -> str:
    lines = [f"# Distillation throughput, local vs Ray ({sec['date']})", "",
             f"Machine: {sec['machine']}; load before: {sec['load_before']}; command: `{sec['command']}`.",
             f"Teacher: {sec['model']} ({sec['engine']} engine), {sec['faces']} faces × {sec['samples']} samples, "
             f"{sec['max_new_tokens']} new tokens; each executor one process, start to exit.", "",
             "| executor | wall s | faces/s | samples/s | × local | same cot/rlvr as local |", "|---|---|---|---|---|---|"]
    for r in sec["rows"]:
        if "error" in r:
            lines.append(f"| {r['executor']} | failed: {r['error']} | | | | |")
        else:
            lines.append(f"| {r['executor']} | {r['wall_s']:.1f} | {r['faces_per_s']:.2f} | {r['samples_per_s']:.2f} "
                         f"| {r.get('speedup', 1.0):.2f} | {'yes' if r['same_outputs'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="unifer-bench-distill-") as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        sec = run_bench(args, work)
    out = Path(args.output)
    write_json_atomic(out, sec)
    write_text_atomic(out.with_suffix(".md"), markdown(sec))
    print(markdown(sec))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 1 if any("error" in r for r in sec["rows"]) else 0
