"""Side-by-side speed of this repository and the paper's code: ``python -m unifer bench cpu --out bench/results``.

Six sections, each optional (``--sections``):

- inference: the same items, the same model, the same number of new tokens, answered by the paper's loop
  restated (float32, one item at a time, ``generate``), our ``hf`` engine at several batch sizes and our ``vllm``
  engine; each in its own process. Items/s, generated tokens/s, peak memory, start-up, whole-process wall time,
  and each one's ratio to the paper's loop.
- onecommand: the four sets answered in one process against four per-set processes (``unifer.bench.onecommand``).
- training: SFT and GRPO step times on the tiny model (``unifer.bench.train``).
- scoring: the 11,072-item FERBench scored end to end (``unifer.bench.scoring``).
- openai (not in the default run: it starts a vLLM server): the openai engine against a local vLLM
  OpenAI-compatible server at ``--openai-concurrency`` 1 and 8, side by side (``unifer.bench.openai_api``).
- families (opt-in): hf and vllm on each model family's tiny checkpoint, side by side (``unifer.bench.families``).

Writes ``bench.json`` (everything, responses included) and ``bench.md`` (the tables) into ``--out``. CPU
machines are noisy: compare the ratios measured in one run, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from unifer.bench.measure import describe_machine, fmt, machine_info, markdown_table, run_worker, write_outputs
from unifer.data.sets import REPO_ROOT
from unifer.errors import UniferError

DEFAULT_MODEL = REPO_ROOT / "model" / "tiny-qwen2.5-vl"
DEFAULT_OUT = REPO_ROOT / "bench" / "results"
SECTIONS = ("inference", "onecommand", "training", "scoring", "openai", "families")
DEFAULT_SECTIONS = ("inference", "onecommand", "training", "scoring")
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
              "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}


def ensure_model(path: Path, is_default: bool) -> Path:
    """The benchmark's model: the tiny checkpoint is built on first use; any other path must exist."""
    from unifer.models.checkpoints import check_model_dir

    if is_default and not (path / "config.json").is_file():
        from unifer.demo.tiny import build_tiny_model

        print(f"building the tiny model into {path} ...", flush=True)
        build_tiny_model(path)
    return check_model_dir(path)


def inference_variants(batch_sizes: list[int], engines: list[str]) -> list[dict]:
    out = []
    if "paper" in engines:
        out.append({"name": "paper loop (fp32, 1 at a time)", "variant": "paper", "batch_size": 1,
                    "dtype": "float32"})
    if "hf" in engines:
        out += [{"name": f"hf engine, batch {b}", "variant": "hf", "batch_size": b, "dtype": "auto"}
                for b in batch_sizes]
    if "vllm" in engines:
        b = max(batch_sizes)
        out.append({"name": "vllm engine (streamed)", "variant": "vllm", "batch_size": b, "dtype": "auto"})
    if "bare" in engines:  # the bare engines our paths are measured against
        b = max(batch_sizes)
        if "hf" in engines:
            out.append({"name": f"bare generate loop, batch {b}", "variant": "bare-hf", "batch_size": b,
                        "dtype": "auto"})
        if "vllm" in engines:
            out.append({"name": "bare LLM.generate (one call)", "variant": "bare-vllm", "batch_size": b,
                        "dtype": "auto"})
    return out


def add_overheads(rows: list[dict]) -> list[dict]:
    """Our hf (at the bare loop's batch size) and vllm paths against the bare engines, generation phase and whole
    process: ratios of seconds (1.00× = no overhead)."""
    ok = {(r["variant"], r["batch_size"]): r for r in rows if "error" not in r}
    out = []
    for ours, bare in (("hf", "bare-hf"), ("vllm", "bare-vllm")):
        b = next((r for (v, _), r in ok.items() if v == bare), None)
        o = ok.get((ours, b["batch_size"])) if b else None
        if o is None:
            continue
        out.append({"ours": o["name"], "bare": b["name"], "generation": round(o["generate_s"] / b["generate_s"], 3),
                    "whole_process": round(o["process_wall_s"] / b["process_wall_s"], 3),
                    "same_answers": o.get("responses") == b.get("responses")})
    return out


def run_inference(args, model: Path, workdir: Path, deadline: float | None = None) -> dict:
    """Every variant over the same items (the one-at-a-time variants over the first ``args.batch1_items`` of
    them where that is set: the GPU script's paper loop would otherwise take most of its budget). A variant
    that would start after ``deadline`` (time.time()) is skipped; a running one is stopped there."""
    from unifer.bench.items import make_items
    from unifer.data.jsonio import write_json_atomic

    items_path, source = make_items(args.items, workdir, use_photos=not args.synthetic_images)
    few = getattr(args, "batch1_items", None)
    few_path = items_path
    if few and few < args.items:
        records = json.loads(items_path.read_text(encoding="utf-8"))
        few_path = write_json_atomic(workdir / f"items_first{few}.json", records[:few])
    rows = []
    for v in inference_variants(args.batch_sizes, args.engines):
        tag = f"{v['variant']}_b{v['batch_size']}"
        timeout = args.timeout if deadline is None else min(args.timeout, deadline - time.time())
        if timeout < 10:
            rows.append({**v, "error": "skipped: the time budget is spent"})
            continue
        print(f"[inference] {v['name']} ...", flush=True)
        items = few_path if v["batch_size"] == 1 else items_path
        res = run_worker(
            ["-m", "unifer.bench.infer_worker", "--variant", v["variant"], "--model", str(model), "--items",
             str(items), "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(v["batch_size"]),
             "--dtype", v["dtype"], "--spawn-time", repr(time.time()), "--result", str(workdir / f"{tag}.json"),
             "--workdir", str(workdir / tag)],
            workdir / f"{tag}.json", workdir / f"{tag}.log", timeout_s=timeout, env=WORKER_ENV)
        res.update(name=v["name"], variant=v["variant"], batch_size=v["batch_size"])
        print("    " + (f"FAILED: {res['error']}" if "error" in res else
                        f"generation {res['generate_s']:.2f} s, whole process {res['process_wall_s']:.1f} s"),
              flush=True)
        rows.append(res)
    add_ratios(rows)
    return {"overheads": add_overheads(rows), "items": args.items, "batch1_items": few or args.items, "max_new_tokens": args.max_new_tokens,
            "image_source": source, "model": str(model), "variants": rows}


def add_ratios(rows: list[dict]) -> None:
    """Each variant's speed-up over the paper's loop — generation phase (tokens/s) and whole process — and the
    share of its responses equal to the paper loop's (over the items both answered). Where the paper's loop
    answered fewer items, its whole-process time for the variant's items is projected from its per-item rate
    (``whole_process_projected``)."""
    base = next((r for r in rows if r.get("variant") == "paper" and "error" not in r), None)
    for r in rows:
        if base is None or "error" in r:
            r["speedup_generation"] = r["speedup_whole_process"] = r["agreement_with_paper"] = None
            continue
        r["speedup_generation"] = round(r["tokens_per_s"] / base["tokens_per_s"], 2)
        paper_wall = base["process_wall_s"] + base["generate_s"] * (r["items"] / base["items"] - 1)
        r["speedup_whole_process"] = round(paper_wall / r["process_wall_s"], 2)
        r["whole_process_projected"] = r["items"] != base["items"]
        a, b = r.get("responses") or [], base.get("responses") or []
        n = min(len(a), len(b))
        r["agreement_with_paper"] = round(sum(x == y for x, y in zip(a, b)) / n, 3) if n else None


def inference_markdown(sec: dict) -> str:
    """The inference table; ratios marked * compare with the paper loop's time projected to the same items."""
    headers = ["variant", "items", "tokens", "start-up s", "generation s", "items/s", "tokens/s",
               "× paper (generation)", "whole process s", "× paper (whole)", "peak RSS MiB", "same answers"]
    rows = []
    for r in sec["variants"]:
        if "error" in r:
            rows.append([r["name"], "failed: " + r["error"][:120]] + [None] * (len(headers) - 2))
            continue
        rss = round(r.get("peak_tree_rss_mb") or r.get("worker_maxrss_mb") or 0) or None
        agree = r.get("agreement_with_paper")
        rows.append([r["name"], r["items"], r["generated_tokens"], r["startup_s"], r["generate_s"],
                     r["items_per_s"], r["tokens_per_s"], _x(r.get("speedup_generation")), r["process_wall_s"],
                     _x(r.get("speedup_whole_process")) + ("*" if r.get("whole_process_projected") else ""), rss,
                     None if agree is None else f"{100 * agree:.0f}%"])
    unequal = [r["name"] for r in sec["variants"] if "error" not in r and not r.get("equal_lengths")]
    note = (f"\n\nEvery item generated exactly {sec['max_new_tokens']} tokens in every variant."
            if not unequal else f"\n\nNot every item reached {sec['max_new_tokens']} tokens in: "
            + ", ".join(unequal) + " (tokens/s still counts the tokens really generated).")
    if any(r.get("whole_process_projected") for r in sec["variants"]):
        note += (f"\n\n\\* The one-at-a-time variants answered the first {sec['batch1_items']} items; the paper "
                 "loop's whole-process time for all items is projected from its measured per-item time.")
    if sec.get("overheads"):
        note += "\n\nOur paths over the bare engines on the same requests and images (goal ≤ 1.15×):\n\n" + markdown_table(
            ["ours", "bare engine", "× bare (generation)", "× bare (whole process)", "same answers"],
            [[o["ours"], o["bare"], f"{o['generation']:.2f}×", f"{o['whole_process']:.2f}×",
              "yes" if o["same_answers"] else "no"] for o in sec["overheads"]])
    return (f"### Inference: {sec['items']} items × {sec['max_new_tokens']} new tokens, {sec['image_source']}\n\n"
            + markdown_table(headers, rows) + note)


def _x(v):
    return "–" if v is None else f"{v:.1f}×"


def build_markdown(report: dict) -> str:
    parts = [f"## Benchmark ({report['title']})", f"Machine: {describe_machine(report['machine'])}",
             f"Command: `{report['command']}` — {fmt(report['wall_s'], 0)} s in all."]
    if "inference" in report:
        parts.append(inference_markdown(report["inference"]))
    if "onecommand" in report:
        from unifer.bench.onecommand import onecommand_markdown

        parts.append(onecommand_markdown(report["onecommand"]))
    if "training" in report:
        from unifer.bench.train import training_markdown

        parts.append(training_markdown(report["training"]))
    if "scoring" in report:
        from unifer.bench.scoring import scoring_markdown

        parts.append(scoring_markdown(report["scoring"]))
    if "openai" in report:
        from unifer.bench.openai_api import openai_markdown

        parts.append(openai_markdown(report["openai"]))
    if "families" in report:
        from unifer.bench.families import families_markdown

        parts.append(families_markdown(report["families"]))
    return "\n\n".join(parts) + "\n"


def positive_int_list(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return out


def name_list(choices):
    def parse(text: str) -> list[str]:
        out = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in out if x not in choices]
        if bad or not out:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} (got {text!r})")
        return out
    return parse


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (default bench/results)")
    ap.add_argument("--stem", default="bench", help="file names: <stem>.json and <stem>.md (default bench)")
    ap.add_argument("--model", default=None, help="Qwen2.5-VL checkpoint (default: the tiny model, built if absent)")
    ap.add_argument("--sections", type=name_list(SECTIONS), default=list(DEFAULT_SECTIONS),
                    help="comma-separated: inference,onecommand,training,scoring,openai,families (default: the "
                         "first four)")
    ap.add_argument("--families", type=name_list(("qwen2.5-vl", "qwen3-vl", "llava-onevision")),
                    default=["qwen2.5-vl", "qwen3-vl", "llava-onevision"],
                    help="families section: tiny checkpoints to compare (default all three)")
    ap.add_argument("--items", type=int, default=64, help="inference items (default 64)")
    ap.add_argument("--batch1-items", type=int, default=None,
                    help="answer only the first N items in the one-at-a-time variants (default: all); the paper "
                         "loop's whole-process time for all items is then projected from its per-item time")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per item (default 64)")
    ap.add_argument("--batch-sizes", type=positive_int_list, default=[1, 16, 64], help="hf engine batch sizes (1,16,64)")
    ap.add_argument("--engines", type=name_list(("paper", "hf", "vllm", "bare")), default=["paper", "hf", "vllm"],
                    help="inference variants to run (default paper,hf,vllm; 'bare' adds the bare engines our hf "
                         "and vllm paths are measured against)")
    ap.add_argument("--synthetic-images", action="store_true", help="synthetic pictures even where photos exist")
    ap.add_argument("--train-steps", type=int, default=4, help="timed optimizer steps per training variant")
    ap.add_argument("--train-variants", type=name_list(("sft", "grpo", "grpo-colocate", "trl-grpo")),
                    default=["sft", "grpo", "grpo-colocate", "trl-grpo"],
                    help="training variants (default sft,grpo,grpo-colocate,trl-grpo)")
    ap.add_argument("--openai-concurrency", type=positive_int_list, default=[1, 8],
                    help="openai section: request concurrencies, side by side on one server (default 1,8)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds one variant may take before it is stopped")
    ap.add_argument("--workdir", default=None, help="keep the scratch files here (default: a temporary folder)")


def run(args: argparse.Namespace) -> int:
    if args.items < 1 or args.max_new_tokens < 1:
        raise UniferError("--items and --max-new-tokens must be at least 1")
    t0 = time.perf_counter()
    model = ensure_model(Path(args.model).expanduser().resolve() if args.model else DEFAULT_MODEL, not args.model)
    report = {"title": "CPU, tiny Qwen2.5-VL" if not args.model else f"model {model.name}",
              "command": "unifer " + " ".join(getattr(args, "command_line", None) or ["bench", "cpu"]),
              "machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="unifer-bench-") as tmp:
        workdir = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if "inference" in args.sections:
            report["inference"] = run_inference(args, model, workdir / "inference")
        if "onecommand" in args.sections:
            from unifer.bench.items import make_items
            from unifer.bench.onecommand import run_onecommand

            items, _ = make_items(args.items, workdir / "onecommand", use_photos=not args.synthetic_images)
            report["onecommand"] = run_onecommand(args, model, workdir / "onecommand", items, WORKER_ENV,
                                                  [e for e in args.engines if e in ("hf", "vllm")])
        if "training" in args.sections:
            from unifer.bench.train import run_training

            report["training"] = run_training(args, model, workdir / "training", args.train_variants)
        if "scoring" in args.sections:
            from unifer.bench.scoring import run_scoring

            report["scoring"] = run_scoring(workdir / "scoring")
        if "openai" in args.sections:
            from unifer.bench.openai_api import run_openai

            report["openai"] = run_openai(args, model, workdir / "openai")
        if "families" in args.sections:
            from unifer.bench.families import run_families

            report["families"] = run_families(args, workdir / "families", WORKER_ENV)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    md = build_markdown(report)
    j, m = write_outputs(report, md, args.out, args.stem)
    print("\n" + md)
    print(f"wrote {j} and {m}")
    return 0
