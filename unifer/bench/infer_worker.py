"""One inference variant of the benchmark, in its own process: ``python -m unifer.bench.infer_worker --variant ...``.

Variants: ``paper`` (the paper's loop restated: float32, one item at a time, ``model.generate``), ``hf`` (our
transformers engine at ``--batch-size``) and ``vllm`` (our vLLM engine). Each times its start-up (process spawn →
model ready, from the spawn time the parent passes) and its generation phase (first item in → last response out:
image decoding, templating, generation and decoding), counts the tokens generated and writes one JSON result.
The parent (``unifer.bench.cpu``) adds the whole-process wall time and peak memory.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

VARIANTS = ("paper", "hf", "vllm")


def _run_paper(args, records):
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from unifer.bench.items import paper_loop

    # As the paper loads it: float32, device_map "auto".
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32, device_map="auto")
    processor = AutoProcessor.from_pretrained(args.model)
    ready = time.time()
    responses, lengths = paper_loop(model, processor, records, args.max_new_tokens, args.image_root)
    return ready, time.time(), responses, lengths, {"dtype": "float32", "device": str(model.device)}


def _run_engine(args, records):
    """Our engine through the user's own path, ``unifer.infer.runner.main`` (what ``eval_<set>/code/infer_unifer.py``
    runs: checks, progress file, image prefetch, batching, atomic results file). Wrapping ``make_engine`` marks
    the moment the model is ready and counts the tokens each response used."""
    from unifer.infer import runner as infer

    lengths: list[int] = []
    marks: dict = {}
    real_make_engine = infer.make_engine

    def timed_make_engine(*a, **kw):
        engine = real_make_engine(*a, **kw)
        real_generate = engine.generate

        def counting_generate(images, prompts):
            answers = real_generate(images, prompts)
            lengths.extend(a.tokens for a in answers)
            marks["last_answer"] = time.time()  # the end of the generation phase (not the engine's shutdown)
            return answers

        engine.generate = counting_generate
        marks["ready"] = time.time()
        marks["dtype"] = str(getattr(engine, "dtype", args.dtype)).replace("torch.", "")
        return engine

    workdir = Path(args.workdir or Path(args.result).parent)
    output = workdir / "results.json"
    argv = ["--model", args.model, "--input", args.items, "--output", str(output), "--image-root", args.image_root,
            "--engine", args.variant, "--batch-size", str(args.batch_size), "--max-new-tokens",
            str(args.max_new_tokens), "--dtype", args.dtype, "--overwrite"]
    infer.make_engine = timed_make_engine
    try:
        rc = infer.main(argv, set_key=args.set)
    finally:
        infer.make_engine = real_make_engine
    if rc:
        raise SystemExit(rc)
    results = json.loads(output.read_text(encoding="utf-8"))
    return (marks["ready"], marks["last_answer"], [r["model_response"] for r in results], lengths,
            {"dtype": marks["dtype"]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unifer.bench.infer_worker", description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", choices=VARIANTS, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--items", required=True, help="QA records (JSON) to answer, all of them")
    ap.add_argument("--image-root", default="/")
    ap.add_argument("--set", default="rafdb", help="the FERBench set the items belong to (names the run)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--spawn-time", type=float, default=None, help="time.time() when the parent started us")
    ap.add_argument("--result", required=True, help="where to write this variant's JSON result")
    ap.add_argument("--workdir", default=None, help="scratch space (engine outputs, progress files)")
    args = ap.parse_args(argv)
    spawn = args.spawn_time or time.time()
    records = json.loads(Path(args.items).read_text(encoding="utf-8"))

    run = _run_paper if args.variant == "paper" else _run_engine
    ready, done, responses, lengths, extra = run(args, records)

    from unifer.bench.measure import self_peak_rss_mb

    gen_s = done - ready
    tokens = sum(lengths)
    result = {
        "variant": args.variant,
        "batch_size": 1 if args.variant == "paper" else args.batch_size,
        "items": len(records),
        "max_new_tokens": args.max_new_tokens,
        "generated_tokens": tokens,
        "min_tokens_per_item": min(lengths) if lengths else 0,
        "max_tokens_per_item": max(lengths) if lengths else 0,
        "equal_lengths": bool(lengths) and min(lengths) == max(lengths) == args.max_new_tokens,
        "startup_s": round(ready - spawn, 3),
        "generate_s": round(gen_s, 3),
        "items_per_s": round(len(records) / gen_s, 4) if gen_s > 0 else None,
        "tokens_per_s": round(tokens / gen_s, 2) if gen_s > 0 else None,
        "self_peak_rss_mb": self_peak_rss_mb(),
        "torch_threads": _torch_threads(),
        "cuda_peak_gb": _cuda_peak_gb(),
        "responses": responses,
        **extra,
    }
    from unifer.data.jsonio import write_json_atomic

    result["finished_at"] = time.time()
    write_json_atomic(args.result, result)
    print(f"{args.variant} b{result['batch_size']}: {len(records)} items, {tokens} tokens, "
          f"start-up {result['startup_s']:.1f} s, generation {gen_s:.2f} s ({result['tokens_per_s']} tokens/s)")
    return 0


def _cuda_peak_gb() -> float | None:
    """Peak GPU memory this process allocated through torch (vLLM's engine process is not counted)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 1e9, 2)


def _torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    return sys.modules["torch"].get_num_threads()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
