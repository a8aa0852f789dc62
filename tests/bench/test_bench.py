"""The benchmark's plumbing: per-process measurement, ratios, outputs, and both commands end to end at toy sizes.

The speed goals themselves are measured by ``python -m unifer bench cpu`` on a quiet machine, never asserted here:
CI machines are shared and noisy.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from unifer.bench.cpu import add_ratios, inference_markdown
from unifer.bench.measure import run_worker

REPO = Path(__file__).resolve().parents[2]


def _script(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "worker.py"
    p.write_text(textwrap.dedent(body))
    return p


def test_run_worker_measures_wall_time_memory_and_the_result(tmp_path):
    result = tmp_path / "r.json"
    script = _script(tmp_path, f"""
        import json, time
        block = bytearray(300 * 2**20)            # 300 MiB, touched so it is resident
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(0.5)
        json.dump({{"answer": 42, "finished_at": time.time()}}, open({str(result)!r}, "w"))
    """)
    out = run_worker([str(script)], result, tmp_path / "log.txt", timeout_s=60)
    assert out["rc"] == 0 and "error" not in out
    assert out["answer"] == 42
    assert out["process_wall_s"] >= 0.5
    assert out["worker_maxrss_mb"] >= 300  # the kernel's own peak for the child
    assert out["peak_tree_rss_mb"] is not None  # psutil sampling (pinned in .ci/env/requirements-cpu.txt)
    assert 250 <= out["peak_tree_rss_mb"] <= out["worker_maxrss_mb"] + 50
    assert 0 <= out["teardown_s"] < out["process_wall_s"]


def test_run_worker_counts_a_child_process_tree(tmp_path):
    """vLLM runs its engine in a child process: the sampled peak covers the whole tree."""
    result = tmp_path / "r.json"
    child = "import time; b = bytearray(200 * 2**20); b[::4096] = b'\\x01' * len(b[::4096]); time.sleep(1.5)"
    script = _script(tmp_path, f"""
        import json, subprocess, sys
        subprocess.run([sys.executable, "-c", {child!r}], check=True)
        json.dump({{}}, open({str(result)!r}, "w"))
    """)
    out = run_worker([str(script)], result, tmp_path / "log.txt", timeout_s=60)
    assert out["peak_tree_rss_mb"] >= 200


def test_run_worker_reports_failures_and_stops_at_the_timeout(tmp_path):
    failing = _script(tmp_path, "import sys; print('something broke'); sys.exit(3)")
    out = run_worker([str(failing)], tmp_path / "none.json", tmp_path / "log1.txt", timeout_s=60)
    assert out["rc"] == 3 and "exit status 3" in out["error"] and "something broke" in out["error"]

    slow = tmp_path / "slow.py"
    slow.write_text("import time; time.sleep(60)")
    out = run_worker([str(slow)], tmp_path / "none.json", tmp_path / "log2.txt", timeout_s=1)
    assert out["process_wall_s"] < 20 and "timed out" in out["error"]


def _row(variant, items, tokens_per_s, wall, gen, responses, batch=1):
    return {"name": f"{variant} b{batch}", "variant": variant, "batch_size": batch, "items": items,
            "generated_tokens": items * 4, "equal_lengths": True, "startup_s": wall - gen, "generate_s": gen,
            "items_per_s": items / gen, "tokens_per_s": tokens_per_s, "process_wall_s": wall,
            "responses": responses, "worker_maxrss_mb": 100.0}


def test_ratios_compare_with_the_paper_loop_and_project_when_it_answered_fewer_items():
    paper = _row("paper", 2, 10.0, wall=12.0, gen=8.0, responses=["a", "b"])
    same = _row("hf", 2, 40.0, wall=6.0, gen=2.0, responses=["a", "x"], batch=2)
    more = _row("hf", 4, 80.0, wall=8.0, gen=1.0, responses=["a", "b", "c", "d"], batch=4)
    failed = {"name": "vllm", "variant": "vllm", "batch_size": 4, "error": "exit status 1"}
    rows = [paper, same, more, failed]
    add_ratios(rows)
    assert same["speedup_generation"] == 4.0 and same["speedup_whole_process"] == 2.0
    assert same["agreement_with_paper"] == 0.5 and not same["whole_process_projected"]
    # The paper loop's 4 items: 12 s + 2 more items × 4 s each = 20 s, against 8 s.
    assert more["speedup_whole_process"] == 2.5 and more["whole_process_projected"]
    assert more["agreement_with_paper"] == 1.0
    assert failed["speedup_generation"] is None
    md = inference_markdown({"items": 4, "batch1_items": 2, "max_new_tokens": 4, "image_source": "photos",
                             "variants": rows})
    lines = md.splitlines()
    assert any(line.startswith("| hf b4 |") and "2.5×*" in line for line in lines)
    assert any(line.startswith("| vllm |") and "failed: exit status 1" in line for line in lines)
    assert "projected" in md


def test_word_level_tokenizer_has_qwen_ids_and_template(tmp_path):
    from transformers import AutoTokenizer

    from unifer.bench.gpu import word_level_tokenizer
    from unifer.data.sets import get_set
    from unifer.demo.tiny import SPECIAL_IDS

    word_level_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    for text, want in SPECIAL_IDS.items():
        assert tok.convert_tokens_to_ids(text) == want
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": get_set("rafdb").prompt}]}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = tok(text)["input_ids"]
    assert ids[0] == SPECIAL_IDS["<|im_start|>"] and SPECIAL_IDS["<|image_pad|>"] in ids
    assert tok.unk_token_id not in ids  # every prompt word has its own id
    assert 60 <= len(ids) <= 120  # a word a token, near the real BPE's 91 for this prompt


@pytest.mark.slow
def test_bench_command_end_to_end(tiny_model, tmp_path):
    """The hf engine through unifer.infer.runner, scoring of 11,072 items, JSON + Markdown. (The paper loop beside our
    engines is exercised by the GPU script's test below: one worker fewer here.)"""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "unifer", "bench", "cpu", "--model", str(tiny_model), "--out", str(out), "--sections",
         "inference,scoring", "--engines", "hf", "--batch-sizes", "2", "--items", "3", "--max-new-tokens", "3",
         "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    (hf,) = report["inference"]["variants"]
    assert "error" not in hf, hf
    assert hf["batch_size"] == 2 and hf["items"] == 3
    assert hf["generated_tokens"] == 9 and hf["equal_lengths"]
    assert hf["process_wall_s"] > hf["startup_s"] + hf["generate_s"] > 0
    assert hf["worker_maxrss_mb"] > 100
    assert hf["speedup_generation"] is None  # no paper loop in this run, so no ratio
    # it really ran through unifer.infer.runner: the results file holds what the bench reports
    written = json.loads((tmp_path / "work" / "inference" / "hf_b2" / "results.json").read_text())
    assert [r["model_response"] for r in written] == hf["responses"]
    scoring = report["scoring"]
    assert scoring["items"] == 11072 and scoring["process_ok"] and scoring["library_s"] > 0
    md = (out / "bench.md").read_text()
    assert "hf engine, batch 2" in md and "11,072" in md and "Machine:" in md


@pytest.mark.slow
def test_gpu_script_tiny_shape_on_cpu(tmp_path):
    """The GPU script's whole path on a CPU: build a checkpoint of the shape, compare, project."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "unifer", "bench", "gpu", "--shape", "tiny", "--out", str(out), "--items", "2",
         "--batch1-items", "1", "--max-new-tokens", "2", "--batch-sizes", "2", "--engines", "paper,hf",
         "--synthetic-images", "--budget-s", "300"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_tiny.json").read_text())
    assert report["checkpoint"]["shape"] == "tiny" and report["checkpoint"]["parameters"] > 1e6
    paper, hf = report["inference"]["variants"]
    assert paper["items"] == 1 and hf["items"] == 2 and hf["whole_process_projected"]
    assert report["inference"]["image_source"] == "synthetic PNG"
    assert hf["agreement_with_paper"] == 1.0
    assert [r["name"] for r in report["projection"]["rows"]] == [paper["name"], hf["name"]]
    assert report["projection"]["bound_step_ms"] > 0
    md = (out / "gpu_tiny.md").read_text()
    assert "Projection to FERBench" in md and "bandwidth" in md


def test_bad_model_path_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "unifer", "bench", "cpu", "--model", str(tmp_path / "nope"), "--out",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
