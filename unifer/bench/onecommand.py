"""FERBench in one command against the four per-set processes: the same items, the same engine, wall time.

The bench's items are split into the four sets (each item asked with its set's prompt); then
``eval_total/code/infer_unifer.py`` answers them in one process, and the four ``eval_<set>/code/infer_unifer.py``
answer them one after another, as the paper's layout runs them. Both are timed as a user waits for them (process
start to exit); the results must be byte-identical.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from unifer.bench.measure import markdown_table
from unifer.data.jsonio import write_json_atomic
from unifer.data.sets import REPO_ROOT, SETS

log = logging.getLogger(__name__)


def _split_into_sets(items_path: Path, qa_dir: Path) -> dict[str, int]:
    records = json.loads(items_path.read_text(encoding="utf-8"))
    counts = {}
    for n, (key, s) in enumerate(SETS.items()):
        part = [{**r, "prompt": s.prompt, "candidate_labels": list(s.labels), "true_label": s.labels[0]}
                for r in records[n::len(SETS)]]
        write_json_atomic(qa_dir / s.qa_filename, part)
        counts[key] = len(part)
    return counts


def _timed(cmd: list[str], log: Path, env: dict, timeout: float) -> tuple[float, int]:
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
    return time.perf_counter() - t0, rc


def run_onecommand(args, model: Path, workdir: Path, items_path: Path, env: dict, engines: list[str]) -> dict:
    import os

    workdir.mkdir(parents=True, exist_ok=True)
    qa_dir = workdir / "qa"
    counts = _split_into_sets(items_path, qa_dir)
    full_env = dict(os.environ, **env)
    rows = []
    for engine in engines:
        flags = ["--model", str(model), "--run", "bench", "--image-root", "/", "--engine", engine, "--max-new-tokens",
                 str(args.max_new_tokens), "--batch-size", str(max(args.batch_sizes)), "--overwrite"]
        one_dir, four_dir = workdir / f"{engine}_one", workdir / f"{engine}_four"
        log.info(f"[one command] {engine}: four sets in one process ...")
        one_s, rc = _timed([sys.executable, str(REPO_ROOT / "eval_total/code/infer_unifer.py"), *flags,
                            "--qa-dir", str(qa_dir), "--results-dir", str(one_dir)],
                           workdir / f"{engine}_one.log", full_env, args.timeout)
        if rc:
            rows.append({"engine": engine, "error": f"one-process run failed (exit {rc}), see {engine}_one.log"})
            continue
        log.info(f"[one command] {engine}: four per-set processes ...")
        four_s = 0.0
        for key, s in SETS.items():
            sec, rc = _timed([sys.executable, str(REPO_ROOT / f"eval_{key}/code/infer_unifer.py"), *flags,
                              "--input", str(qa_dir / s.qa_filename), "--output",
                              str(four_dir / s.default_results_path("bench").name)],
                             workdir / f"{engine}_four.log", full_env, args.timeout)
            four_s += sec
            if rc:
                break
        if rc:
            rows.append({"engine": engine, "error": f"per-set run failed (exit {rc}), see {engine}_four.log"})
            continue
        same = all((one_dir / s.default_results_path("bench").name).read_bytes()
                   == (four_dir / s.default_results_path("bench").name).read_bytes() for s in SETS.values())
        rows.append({"engine": engine, "one_process_s": round(one_s, 2), "four_processes_s": round(four_s, 2),
                     "speedup": round(four_s / one_s, 2), "byte_identical": same})
    return {"items": sum(counts.values()), "per_set": counts, "rows": rows}


def onecommand_markdown(sec: dict) -> str:
    rows = [[r["engine"], r.get("one_process_s"), r.get("four_processes_s"),
             f"{r['speedup']:.2f}×" if "speedup" in r else r.get("error"),
             {True: "yes", False: "NO"}.get(r.get("byte_identical"))] for r in sec["rows"]]
    return (f"### FERBench in one command: {sec['items']} items over the four sets "
            f"({', '.join(f'{SETS[k].name} {n}' for k, n in sec['per_set'].items())})\n\n"
            + markdown_table(["engine", "one process s", "four per-set processes s", "× (one command)",
                              "results byte-identical"], rows))
