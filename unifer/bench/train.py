"""Training speed: SFT and GRPO optimizer-step times on the tiny model, and GRPO against plain TRL.

Each variant runs in its own process (``python -m unifer.bench.train --variant ...``):

- ``sft``: ``unifer.train.sft`` with the paper's batch (1 per device × 4 accumulation steps per optimizer step);
- ``grpo``, ``grpo-colocate``: ``unifer.train.grpo`` generating with transformers, or with vLLM colocated;
- ``trl-grpo``: TRL's own ``GRPOTrainer``, as its documentation has a user write it (a ``datasets.Dataset`` with an
  ``image`` column, the same reward functions), over the very ``GRPOConfig`` our script parsed — what our wrapper
  (lazy images, the image-pad guard, the trace hooks, input checks) costs on top of TRL itself.

A step's time is the interval between two ends of optimizer steps (the first from the start of training), so
data loading, generation and reward scoring are all inside it. The first step pays one-off costs and is reported
apart; the others give the median. Random tiny weights never emit an end token, so every GRPO completion runs
to ``max_completion_length`` in every variant: the comparison is like with like.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

from unifer.bench.measure import markdown_table, run_worker

log = logging.getLogger(__name__)

VARIANTS = ("sft", "grpo", "grpo-colocate", "trl-grpo")
NAMES = {"sft": "SFT (unifer.train.sft)", "grpo": "GRPO, transformers rollouts (unifer.train.grpo)",
         "grpo-colocate": "GRPO, vLLM colocated (unifer.train.grpo)", "trl-grpo": "GRPO, plain TRL GRPOTrainer"}
#: Shared by every GRPO variant: one prompt × 8 completions per step (the paper's group), short completions.
GRPO_FLAGS = ["--num_generations", "8", "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1",
              "--max_completion_length", "32", "--logging_steps", "1", "--save_strategy", "no", "--report_to",
              "none", "--seed", "0", "--gradient_checkpointing", "false"]
SFT_FLAGS = ["--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "4", "--learning_rate", "2e-5",
             "--lr_scheduler_type", "cosine", "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
             "--gradient_checkpointing", "true", "--max_grad_norm", "5", "--seed", "0"]
OVERHEAD_TARGET = 0.05


def make_step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall-clock seconds between consecutive optimizer-step ends (the first from the start of training)."""

        def __init__(self):
            self.last = None
            self.steps: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.steps.append(now - self.last)
            self.last = now

    return StepTimer()


def attach_to_every_trainer(callback) -> None:
    """Give every Trainer built in this process ``callback``: the scripts build theirs inside ``main``."""
    from transformers import Trainer

    original = Trainer.__init__

    def init_with_callback(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(callback)

    Trainer.__init__ = init_with_callback


def write_training_data(workdir: Path, n: int = 16) -> tuple[Path, Path]:
    """A CoT file and an RLVR file over the benchmark's items (absolute image paths; image root ``/``)."""
    from unifer.bench.items import make_items
    from unifer.data.jsonio import write_json_atomic
    from unifer.demo.data import cot_response

    items_path, _ = make_items(n, workdir)
    items = json.loads(items_path.read_text(encoding="utf-8"))
    cot = [{"image_path": r["image_path"], "question": r["prompt"], "response": cot_response(r["true_label"])}
           for r in items]
    rlvr = [{"image_path": r["image_path"], "problem": r["prompt"], "solution": f"<answer>{r['true_label']}</answer>"}
            for r in items]
    return write_json_atomic(workdir / "cot.json", cot), write_json_atomic(workdir / "rlvr.json", rlvr)


def _plain_trl_grpo(argv: list[str]) -> None:
    """TRL's GRPOTrainer on the configuration our parser produced, minus our own additions."""
    from datasets import Dataset
    from trl import GRPOTrainer, ModelConfig

    from unifer.data.images import join_image_path, load_image
    from unifer.rewards import resolve_reward_funcs
    from unifer.train.common import parse_trainer_args
    from unifer.train.grpo import GRPOPaperConfig, GRPOScriptArguments

    script_args, training_args, model_args = parse_trainer_args(
        (GRPOScriptArguments, GRPOPaperConfig, ModelConfig), argv)
    training_args.model_init_kwargs = {"dtype": model_args.dtype}
    records = json.loads(Path(script_args.dataset_name).read_text(encoding="utf-8"))
    dataset = Dataset.from_list([
        {"prompt": [{"role": "user", "content": r["problem"]}], "solution": r["solution"],
         "image": load_image(join_image_path(script_args.image_root, r["image_path"]))} for r in records])
    trainer = GRPOTrainer(model=model_args.model_name_or_path,
                          reward_funcs=resolve_reward_funcs(script_args.reward_funcs),
                          args=training_args, train_dataset=dataset)
    trainer.train()


def worker(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unifer.bench.train")
    ap.add_argument("--variant", choices=VARIANTS, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="CoT file for sft, RLVR file for the GRPO variants")
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps after the first")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--spawn-time", type=float, default=None)
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more trainer flags (last: they win)")
    args = ap.parse_args(argv)
    spawn = args.spawn_time or time.time()
    common = ["--model_name_or_path", args.model, "--dataset_name", args.data, "--image_root", "/",
              "--output_dir", str(Path(args.workdir) / "out"), "--max_steps", str(args.steps + 1)]
    timer = make_step_timer()
    attach_to_every_trainer(timer)
    if args.variant == "sft":
        from unifer.train import sft

        rc = sft.main(common + SFT_FLAGS + args.extra)
    elif args.variant == "trl-grpo":
        _plain_trl_grpo(common + GRPO_FLAGS + args.extra)
        rc = 0
    else:
        from unifer.train import grpo

        vllm = ["--use_vllm", "true", "--vllm_mode", "colocate", "--vllm_max_model_length", "512"] \
            if args.variant == "grpo-colocate" else []
        rc = grpo.main(common + GRPO_FLAGS + vllm + args.extra)
    if rc:
        return rc
    from unifer.bench.measure import self_peak_rss_mb
    from unifer.data.jsonio import write_json_atomic

    steps = timer.steps
    later = steps[1:]
    write_json_atomic(args.result, {
        "variant": args.variant, "steps": len(steps), "step_times_s": [round(s, 4) for s in steps],
        "first_step_s": round(steps[0], 3) if steps else None,
        "median_step_s": round(statistics.median(later), 4) if later else None,
        "run_s": round(time.time() - spawn, 2), "self_peak_rss_mb": self_peak_rss_mb(), "finished_at": time.time()})
    return 0


# ---------------------------------------------------------------------------------------------------- section
def run_training(args, model: Path, workdir: Path, variants=VARIANTS) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    cot, rlvr = write_training_data(workdir / "data")
    rows = []
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    for v in variants:
        log.info(f"[training] {NAMES[v]} ...")
        res = run_worker(["-m", "unifer.bench.train", "--variant", v, "--model", str(model), "--data",
                          str(cot if v == "sft" else rlvr), "--steps", str(args.train_steps), "--workdir",
                          str(workdir / v), "--result", str(workdir / f"{v}.json"), "--spawn-time", repr(time.time())],
                         workdir / f"{v}.json", workdir / f"{v}.log", timeout_s=args.timeout, env=env)
        res.update(variant=v, name=NAMES[v])
        log.info("    " + (f"FAILED: {res['error']}" if "error" in res else
                        f"median step {res['median_step_s']} s, whole process {res['process_wall_s']:.1f} s"))
        rows.append(res)
    out = {"steps_timed": args.train_steps, "grpo_setting": "1 prompt × 8 completions per step, 32 new tokens",
           "sft_setting": "batch 1 × 4 accumulation steps per optimizer step", "variants": rows}
    ours = next((r for r in rows if r["variant"] == "grpo" and r.get("median_step_s")), None)
    trl = next((r for r in rows if r["variant"] == "trl-grpo" and r.get("median_step_s")), None)
    if ours and trl:
        out["wrapper_overhead"] = round(ours["median_step_s"] / trl["median_step_s"] - 1, 4)
        out["wrapper_overhead_target"] = OVERHEAD_TARGET
    return out


def training_markdown(sec: dict) -> str:
    headers = ["variant", "first step s", "median step s", "steps timed", "whole process s", "peak RSS MiB"]
    rows = []
    for r in sec["variants"]:
        if "error" in r:
            rows.append([r["name"], "failed: " + r["error"][:120], None, None, None, None])
            continue
        rows.append([r["name"], r["first_step_s"], r["median_step_s"], r["steps"] - 1, r["process_wall_s"],
                     round(r.get("peak_tree_rss_mb") or r.get("worker_maxrss_mb") or 0) or None])
    text = (f"### Training: optimizer-step times (GRPO: {sec['grpo_setting']}; SFT: {sec['sft_setting']})\n\n"
            + markdown_table(headers, rows))
    if "wrapper_overhead" in sec:
        ov = sec["wrapper_overhead"]
        verdict = "within" if ov < sec["wrapper_overhead_target"] else "over"
        text += (f"\n\nOur GRPO wrapper vs plain TRL, median step: {100 * ov:+.1f}% ({verdict} the "
                 f"{100 * sec['wrapper_overhead_target']:.0f}% budget).")
    return text


if __name__ == "__main__":
    from unifer.errors import run_cli

    sys.exit(run_cli(worker))
