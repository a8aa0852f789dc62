"""Bench section ``openai``: items/s of the openai engine against a local vLLM OpenAI-compatible server, at
several request concurrencies side by side, on one server start.

    python -m unifer bench cpu --sections openai [--openai-concurrency 1,8] [--items 64] [--max-new-tokens 64]

The server (``unifer.bench.local_server``: loopback, float32 on CPU, eager, at most 8 sequences batched) serves
the bench's model; each concurrency answers the same items through the user's own path
(``unifer.infer.runner.main`` with ``--engine openai``: checks, progress file, PNG data URLs, the runner's batches),
in this process (the client side is light: the model lives in the server). A warm-up run of 2 items goes first so
that no variant pays the server's first-request costs. Timed: the whole ``infer`` call (what a user waits for,
server start excluded).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from pathlib import Path

from unifer.bench.measure import markdown_table

log = logging.getLogger(__name__)


def answer_through_server(base_url: str, name: str, items_path: Path, out: Path, max_new_tokens: int,
                          concurrency: int, limit: int | None = None) -> tuple[float, str]:
    """``unifer infer --engine openai`` over the items, in this process: (seconds, its summary line)."""
    from unifer.infer.runner import main as infer_main

    argv = ["--engine", "openai", "--base-url", base_url, "--model", name, "--input", str(items_path),
            "--output", str(out), "--image-root", "/", "--max-new-tokens", str(max_new_tokens),
            "--concurrency", str(concurrency), "--overwrite"]
    if limit:
        argv += ["--limit", str(limit)]
    said = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(io.StringIO()):
        rc = infer_main(argv, "rafdb")
    if rc != 0:
        raise RuntimeError(f"unifer infer --engine openai exited with {rc}: {said.getvalue()[-300:]}")
    return time.perf_counter() - start, said.getvalue().strip()


def variant_row(concurrency: int, out: Path, seconds: float, summary: str) -> dict:
    """One concurrency's row from its results file: items, errors, throughput, tokens, the responses."""
    results = json.loads(out.read_text(encoding="utf-8"))
    completion = sum(r.get("usage", {}).get("completion_tokens", 0) for r in results)
    prompt = sum(r.get("usage", {}).get("prompt_tokens", 0) for r in results)
    return {"concurrency": concurrency, "items": len(results), "errors": sum(1 for r in results if r.get("error")),
            "wall_s": round(seconds, 2), "items_per_s": round(len(results) / seconds, 3),
            "completion_tokens": completion, "prompt_tokens": prompt,
            "tokens_per_s": round(completion / seconds, 1), "summary": summary,
            "responses": [r["model_response"] for r in results]}


def compare_to_first(rows: list[dict]) -> None:
    """Each answered row's speed-up over, and share of answers equal to, the first answered row's."""
    base = next((r for r in rows if "error" not in r), None)
    for r in rows:
        if base is not None and "error" not in r:
            r["speedup"] = round(r["items_per_s"] / base["items_per_s"], 2)
            r["same_answers"] = round(sum(a == b for a, b in zip(r["responses"], base["responses"]))
                                      / max(len(base["responses"]), 1), 3)


def run_openai(args, model: Path, workdir: Path, server: tuple[str, str] | None = None) -> dict:
    """``server``: (base URL, model name) of a server already up (the tests'); else one is started here."""
    from unifer.bench.items import make_items
    from unifer.bench.local_server import vllm_openai_server

    workdir.mkdir(parents=True, exist_ok=True)
    items_path, source = make_items(args.items, workdir, use_photos=not args.synthetic_images)
    rows = []
    t0 = time.perf_counter()
    started = (contextlib.nullcontext(server[0]) if server else
               vllm_openai_server(model, log_path=workdir / "vllm-server.log", served_name="bench"))
    name = server[1] if server else "bench"
    with started as base_url:
        startup_s = None if server else round(time.perf_counter() - t0, 1)
        answer_through_server(base_url, name, items_path, workdir / "warmup.json", args.max_new_tokens, 1, limit=2)
        for c in args.openai_concurrency:
            log.info(f"[openai] concurrency {c} ...")
            out = workdir / f"openai_c{c}.json"
            try:
                seconds, summary = answer_through_server(base_url, name, items_path, out, args.max_new_tokens, c)
            except Exception as e:  # a failed variant is a row, not the end of the bench
                rows.append({"concurrency": c, "error": str(e)[:300]})
                continue
            rows.append(variant_row(c, out, seconds, summary))
            log.info(f"    {rows[-1]['items_per_s']} items/s")
    compare_to_first(rows)
    return {"items": args.items, "max_new_tokens": args.max_new_tokens, "image_source": source,
            "model": str(model), "server_startup_s": startup_s, "variants": rows}


def openai_markdown(sec: dict) -> str:
    headers = ["concurrency", "items", "errors", "wall s", "items/s", "completion tokens/s", f"× concurrency "
               f"{sec['variants'][0]['concurrency'] if sec['variants'] else 1}", "same answers"]
    rows = []
    for r in sec["variants"]:
        if "error" in r:
            rows.append([r["concurrency"], "failed: " + r["error"][:120]] + [None] * (len(headers) - 2))
            continue
        rows.append([r["concurrency"], r["items"], r["errors"], r["wall_s"], r["items_per_s"], r["tokens_per_s"],
                     f"{r.get('speedup', 1.0):.2f}×", f"{100 * r.get('same_answers', 1.0):.0f}%"])
    startup = ("" if sec["server_startup_s"] is None else
               f"Server start-up (not in the times): {sec['server_startup_s']} s.\n\n")
    return (f"### OpenAI-compatible engine against a local vLLM server: {sec['items']} items × at most "
            f"{sec['max_new_tokens']} new tokens, {sec['image_source']}\n\n{startup}" + markdown_table(headers, rows))
