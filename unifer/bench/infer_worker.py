"""One inference variant of the benchmark, in its own process: ``python -m unifer.bench.infer_worker --variant ...``.

Variants: ``paper`` (the paper's loop restated: float32, one item at a time, ``model.generate``), ``hf`` (our
transformers engine at ``--batch-size``), ``vllm`` (our vLLM engine), and the bare engines our paths are measured
against: ``bare-hf`` (a plain batched ``model.generate`` loop over the same images) and ``bare-vllm`` (one
``LLM.generate`` call over all of them, the engine configured as ours is). Each times its start-up (process spawn →
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

VARIANTS = ("paper", "hf", "vllm", "bare-hf", "bare-vllm")


def _run_paper(args, records):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from unifer.bench.items import paper_loop
    from unifer.models.processors import load_processor

    # As the paper loads it: float32, device_map "auto".
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32, device_map="auto")
    processor = load_processor(args.model, exact=True)  # transformers 4.49's PIL image processor, as the paper ran
    ready = time.time()
    responses, lengths = paper_loop(model, processor, records, args.max_new_tokens, args.image_root)
    return ready, time.time(), responses, lengths, {"dtype": "float32", "device": str(model.device)}


def _run_bare_hf(args, records):
    """A plain batched ``generate`` loop: the images decoded as ours are, the same request, no progress files,
    no prefetch, no streaming — what our hf path is measured against."""
    import torch
    from transformers import AutoModelForImageTextToText

    from unifer.bench.items import generated_length, paper_messages
    from unifer.data.images import join_image_path, load_image
    from unifer.models.device import pick_dtype
    from unifer.models.processors import exact_preprocessing, load_processor

    dtype = pick_dtype(args.dtype)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=dtype).eval()
    processor = load_processor(args.model, exact=exact_preprocessing(dtype))  # as the hf engine loads it
    processor.tokenizer.padding_side = "left"
    ready = time.time()
    responses, lengths = [], []
    for k in range(0, len(records), args.batch_size):
        batch = records[k:k + args.batch_size]
        images = [load_image(join_image_path(args.image_root, r["image_path"])) for r in batch]
        texts = [processor.apply_chat_template(paper_messages(r["prompt"]), tokenize=False,
                                               add_generation_prompt=True) for r in batch]
        inputs = processor(text=texts, images=images, padding=True, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=args.max_new_tokens, use_cache=True)
        new = out[:, inputs["input_ids"].shape[1]:]
        lengths += [generated_length(row.tolist()) for row in new]
        responses += processor.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return ready, time.time(), responses, lengths, {"dtype": str(dtype).replace("torch.", "")}


def _run_bare_vllm(args, records):
    """One ``LLM.generate`` over every request, the engine configured exactly as our vllm engine configures it."""
    from unifer.data.images import join_image_path, load_image
    from unifer.infer.engines import chat_prompt, generation_settings, make_engine

    settings = generation_settings(args.model, args.max_new_tokens)
    # only its LLM and sampling parameters are used
    engine = make_engine("vllm", args.model, settings, {"dtype": args.dtype})
    llm, params, processor = engine.llm, engine.sampling_params, engine.processor
    ready = time.time()
    requests = [{"prompt": chat_prompt(processor, r["prompt"]),
                 "multi_modal_data": {"image": load_image(join_image_path(args.image_root, r["image_path"]))}}
                for r in records]
    outputs = llm.generate(requests, params, use_tqdm=False)
    ids = [list(o.outputs[0].token_ids) for o in outputs]
    done = time.time()
    responses = processor.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    engine.close()
    return ready, done, responses, [len(i) for i in ids], {"dtype": str(engine.dtype).replace("torch.", "")}


def _run_engine(args, records):
    """Our engine through the user's own path, ``unifer.infer.runner.main`` (what ``eval_<set>/code/infer_unifer.py``
    runs: checks, progress file, image prefetch, batching, atomic results file). Wrapping ``make_engine`` marks
    the moment the model is ready and counts the tokens each response used."""
    from unifer.infer import runner as infer
    from unifer.infer import suite
    from unifer.infer.engines import StreamingEngine

    lengths: list[int] = []
    marks: dict = {}
    real_make_engine = suite.make_engine

    def timed_make_engine(*a, **kw):
        engine = real_make_engine(*a, **kw)
        real_generate = engine.generate

        def counting_generate(images, prompts, *rest, **kw):
            answers = real_generate(images, prompts, *rest, **kw)
            lengths.extend(a.tokens for a in answers)
            marks["last_answer"] = time.time()  # the end of the generation phase (not the engine's shutdown)
            return answers

        engine.generate = counting_generate
        if isinstance(engine, StreamingEngine):
            real_stream = engine.stream

            def counting_stream(requests, **kw):
                for tag, answer in real_stream(requests, **kw):
                    lengths.append(answer.tokens)
                    marks["last_answer"] = time.time()
                    yield tag, answer

            engine.stream = counting_stream
        marks["ready"] = time.time()
        marks["dtype"] = str(getattr(engine, "dtype", args.dtype)).replace("torch.", "")
        return engine

    workdir = Path(args.workdir or Path(args.result).parent)
    output = workdir / "results.json"
    argv = ["--model", args.model, "--input", args.items, "--output", str(output), "--image-root", args.image_root,
            "--engine", args.variant, "--batch-size", str(args.batch_size), "--max-new-tokens",
            str(args.max_new_tokens), "--dtype", args.dtype, "--overwrite"]
    suite.make_engine = timed_make_engine
    try:
        rc = infer.main(argv, set_key=args.set)
    finally:
        suite.make_engine = real_make_engine
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

    run = {"paper": _run_paper, "bare-hf": _run_bare_hf, "bare-vllm": _run_bare_vllm}.get(args.variant, _run_engine)
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
