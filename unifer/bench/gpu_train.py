"""The training-side GPU check (issue 17): does each path run on one GPU, and how long does a step take, on a
random-weight model of Qwen2.5-VL-7B's shape (no download)?

    python -m unifer bench gpu-train --out bench/results            # on one GPU, at most ~10 minutes
    python -m unifer bench gpu-train --shape tiny --out /tmp/x       # the same code on a CPU (CUDA-only parts skipped)

Parts, each in its own process with its own time limit, through the code a user runs:

- ``sft``: two optimizer steps of ``unifer.train.sft`` (the recipe's bf16 mixed precision, gradient checkpointing,
  flash-attention 2 where installed), weights loaded in bf16 so that a 7B model, its gradients and AdamW's states
  fit on one GPU;
- ``grpo``: two steps of ``unifer.train.grpo`` with vLLM colocated on the same GPU (8 completions of one prompt, 32
  new tokens; ``--grpo-rollouts none``: transformers generation, e.g. on a CPU);
- ``zero3``: the ``sft`` part under DeepSpeed ZeRO-3 (``train_unifer/configs/zero3.json``) as one process;
- ``infer-fp32``: the documented exact reproduction, ``--dtype float32 --batch-size 1`` with
  ``--attn-implementation auto``, which must run whether or not flash-attn is installed (it has no float32
  kernels), and ``infer-fp32-flash``: the same with flash-attention 2 forced, recorded as whatever it does.

Writes ``gpu_train_<shape>.json`` and ``.md`` (``unifer.bench.measure.write_outputs``). A part that fails is a
row with its error, not the end of the run; parts not started within ``--budget-s`` are listed as skipped.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

from unifer.bench.measure import describe_machine, machine_info, markdown_table, run_worker, write_outputs
from unifer.data.sets import REPO_ROOT

PARTS = ("sft", "grpo", "zero3", "infer-fp32", "infer-fp32-flash")
CUDA_ONLY = {"infer-fp32-flash": "flash-attention 2 needs a CUDA GPU (flash-attn)"}
DESCRIPTIONS = {
    "sft": "SFT, 2 steps, bf16 (unifer.train.sft)",
    "grpo": "GRPO, 2 steps, vLLM colocated (unifer.train.grpo)",
    "zero3": "SFT, 2 steps, DeepSpeed ZeRO-3, one process",
    "infer-fp32": "inference, float32, batch 1, attention auto",
    "infer-fp32-flash": "inference, float32, batch 1, flash-attention 2 forced",
}
BF16_WEIGHTS = ["--dtype", "bfloat16"]
#: --quick (a CPU check): one micro-batch per optimizer step, 2 completions of 4 tokens
QUICK_SFT = ["--gradient_accumulation_steps", "1"]
QUICK_GRPO = ["--num_generations", "2", "--per_device_train_batch_size", "2", "--max_completion_length", "4"]


def describe(part: str, args) -> str:
    if part == "grpo" and args.grpo_rollouts == "none":
        return "GRPO, 2 steps, transformers rollouts (unifer.train.grpo)"
    return DESCRIPTIONS[part]


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def part_command(part: str, args, model: Path, cot: Path, rlvr: Path, qa: Path, work: Path) -> list[str]:
    result = work / f"{part}.json"
    if part in ("sft", "zero3", "grpo"):
        variant = "sft" if part != "grpo" else ("grpo-colocate" if args.grpo_rollouts == "colocate" else "grpo")
        extra = list(BF16_WEIGHTS)
        if part == "zero3":
            extra += ["--deepspeed", str(REPO_ROOT / "train_unifer" / "configs" / "zero3.json")]
        if variant == "grpo-colocate":
            extra += ["--vllm_gpu_memory_utilization", str(args.vllm_memory)]
        if args.quick:
            extra += QUICK_GRPO if part == "grpo" else QUICK_SFT
        return ["-m", "unifer.bench.train", "--variant", variant, "--model", str(model), "--data",
                str(rlvr if part == "grpo" else cot), "--steps", "1", "--workdir", str(work / part), "--result",
                str(result), "--extra", *extra]
    attn = "flash_attention_2" if part == "infer-fp32-flash" else "auto"
    return ["-m", "unifer.bench.gpu_train", "--infer-worker", "--model", str(model), "--qa", str(qa), "--attn",
            attn, "--result", str(result), "--out", str(work / part)]


def infer_worker(args) -> int:
    """One inference run through ``unifer.infer.runner`` (float32, batch 1); writes a summary for the parent."""
    from unifer.data.jsonio import write_json_atomic
    from unifer.infer.runner import main as infer_main

    out = Path(args.out)
    t0 = time.perf_counter()
    rc = infer_main(["--model", args.model, "--input", args.qa, "--output", str(out / "results.json"),
                     "--image-root", "/", "--dtype", "float32", "--batch-size", "1", "--attn-implementation",
                     args.attn, "--max-new-tokens", "16", "--limit", "4", "--overwrite"], "rafdb")
    answered = json.loads((out / "results.json").read_text(encoding="utf-8")) if rc == 0 else []
    write_json_atomic(args.result, {"rc": rc, "items": len(answered), "seconds": round(time.perf_counter() - t0, 2),
                                    "error_items": sum(1 for r in answered if r.get("error")),
                                    "finished_at": time.time()})
    return rc


def part_row(res: dict) -> list:
    name = res["description"]
    if "skipped" in res:
        return [name, "skipped: " + res["skipped"], None, None, None]
    if "error" in res:
        return [name, "failed: " + res["error"][:160], None, res.get("process_wall_s"), None]
    step = res.get("median_step_s") or res.get("first_step_s")
    detail = f"{res['items']} items, {res['error_items']} error items" if "items" in res else \
        f"first step {res.get('first_step_s')} s"
    return [name, "ran", step, res.get("process_wall_s"), detail]


def markdown(report: dict) -> str:
    rows = [part_row(res) for res in report["parts"].values()]
    return (f"### Training GPU check ({report['shape']} shape)\n\n{describe_machine(report['machine'])}\n\n"
            f"Command: `{report['command']}` — {report['total_s']:.0f} s in all.\n\n"
            + markdown_table(["part", "outcome", "step s", "whole process s", "detail"], rows) + "\n")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--shape", choices=("7b", "tiny"), default="7b", help="7b (default) or tiny (a CPU check)")
    ap.add_argument("--out", default=str(REPO_ROOT / "bench" / "results"))
    ap.add_argument("--stem", default=None, help="file names (default gpu_train_<shape>)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {','.join(PARTS)}")
    ap.add_argument("--grpo-rollouts", choices=("colocate", "none"), default="colocate",
                    help="colocate (vLLM in the training process, the default) or none (transformers)")
    ap.add_argument("--vllm-memory", type=float, default=0.3, help="colocated vLLM's share of GPU memory")
    ap.add_argument("--quick", action="store_true",
                    help="smaller steps for a CPU check: 1 accumulation step (SFT), 2 completions of 4 tokens (GRPO)")
    ap.add_argument("--part-timeout-s", type=float, default=300)
    ap.add_argument("--budget-s", type=float, default=540, help="start no part after this (default 540)")
    ap.add_argument("--workdir", default=None, help="checkpoint and scratch files (default: a temporary folder)")
    ap.add_argument("--infer-worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("--model", "--qa", "--attn", "--result"):
        ap.add_argument(name, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.infer_worker:
        return infer_worker(args)
    from unifer.bench.gpu import build_checkpoint
    from unifer.bench.items import make_items
    from unifer.bench.train import write_training_data
    from unifer.errors import UniferError

    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise UniferError(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    t0 = time.perf_counter()
    on_cuda = cuda_available()
    with tempfile.TemporaryDirectory(prefix="unifer-gpu-train-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"[gpu-train] random {args.shape} checkpoint ...", flush=True)
        checkpoint = build_checkpoint(work / "model", args.shape)
        cot, rlvr = write_training_data(work / "data", n=8)
        qa, _ = make_items(4, work / "qa")
        argv = list(getattr(args, "command_line", None) or [])
        argv = argv[2:] if argv[:2] == ["bench", "gpu-train"] else argv
        report = {"shape": args.shape, "command": "python -m unifer bench gpu-train " + " ".join(argv),
                  "machine": machine_info(), "checkpoint": checkpoint, "cuda": on_cuda, "parts": {}}
        for part in parts:
            if part in CUDA_ONLY and not on_cuda:
                report["parts"][part] = {"skipped": CUDA_ONLY[part]}
            elif part == "grpo" and args.grpo_rollouts == "colocate" and importlib.util.find_spec("vllm") is None:
                report["parts"][part] = {"skipped": "vLLM is not installed (--grpo-rollouts none runs without)"}
            elif time.perf_counter() - t0 > args.budget_s:
                report["parts"][part] = {"skipped": f"time budget ({args.budget_s:.0f} s) spent"}
            else:
                print(f"[gpu-train] {describe(part, args)} ...", flush=True)
                (work / part).mkdir(exist_ok=True)
                res = run_worker(part_command(part, args, work / "model", cot, rlvr, qa, work),
                                 work / f"{part}.json", work / f"{part}.log", timeout_s=args.part_timeout_s,
                                 env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
                print("    " + (f"FAILED: {res['error'][:300]}" if "error" in res else "ran"), flush=True)
                report["parts"][part] = res
            report["parts"][part]["description"] = describe(part, args)
        report["total_s"] = round(time.perf_counter() - t0, 1)
        j, m = write_outputs(report, markdown(report), args.out, args.stem or f"gpu_train_{args.shape}")
    print(f"wrote {j} and {m}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unifer.bench.gpu_train", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    args.command_line = list(sys.argv[1:] if argv is None else argv)
    return run(args)


if __name__ == "__main__":
    from unifer.errors import run_cli

    sys.exit(run_cli(main))
